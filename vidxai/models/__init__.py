"""Video classification networks (plain ``nn.Module``) and the LightningModule that trains them."""

from vidxai.models.classifier import VideoClassifier
from vidxai.models.contract import ExplainableVideoNet, Stage, explain_stages, run_stages
from vidxai.models.convlstm import ConvLSTM, ConvLSTMCell
from vidxai.models.hf_video import VJEPA2, TimeSformer, VideoMAE, VideoPrism, ViViT
from vidxai.models.r2plus1d import R2Plus1D, r2plus1d_weights_file
from vidxai.models.registry import NETWORKS, build_network, check_network
from vidxai.models.vgg16_lstm import VGG16LSTM, vgg16_weights_file

__all__ = [
    "ExplainableVideoNet",
    "Stage",
    "explain_stages",
    "run_stages",
    "NETWORKS",
    "ConvLSTM",
    "ConvLSTMCell",
    "R2Plus1D",
    "TimeSformer",
    "VGG16LSTM",
    "VideoClassifier",
    "VideoMAE",
    "VideoPrism",
    "ViViT",
    "VJEPA2",
    "build_network",
    "check_network",
    "r2plus1d_weights_file",
    "vgg16_weights_file",
]
