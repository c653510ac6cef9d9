"""Video data pipeline: decoders, dataset layouts, splits, clip sampling, transforms, DataModule.

Everything here but :class:`VideoDataModule` imports only torch and the decoders: a spawned DataLoader worker
unpickles the dataset through this package and so starts without Lightning (seconds less per worker).
:class:`VideoDataModule` is imported on first use."""

from typing import TYPE_CHECKING

from vidxai.data.clips import denormalize, prepare_clip, read_clip
from vidxai.data.dataset import VideoClipDataset
from vidxai.data.decoders import (
    DecordDecoder,
    NvdecDecoder,
    PyAVDecoder,
    VideoDecodeError,
    VideoDecoder,
    open_video,
    resolve_backend,
)
from vidxai.data.layouts import VIDEO_EXTENSIONS, VideoRecord, discover, split_lists
from vidxai.data.manifest import VideoEntry, scan
from vidxai.data.sampling import jittered_segment_indices, multi_clip_indices, uniform_indices
from vidxai.data.splits import group_split, leave_one_group_out, num_folds
from vidxai.data.synthetic import make_synthetic_ucf11
from vidxai.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VIDEO_EXTENSIONS",
    "DecordDecoder",
    "NvdecDecoder",
    "PyAVDecoder",
    "VideoClipDataset",
    "VideoDataModule",
    "VideoDecodeError",
    "VideoDecoder",
    "VideoEntry",
    "VideoRecord",
    "VideoTransform",
    "denormalize",
    "discover",
    "group_split",
    "jittered_segment_indices",
    "leave_one_group_out",
    "make_synthetic_ucf11",
    "multi_clip_indices",
    "num_folds",
    "open_video",
    "prepare_clip",
    "read_clip",
    "resolve_backend",
    "scan",
    "split_lists",
    "uniform_indices",
]

if TYPE_CHECKING:
    from vidxai.data.datamodule import VideoDataModule


def __getattr__(name: str):  # noqa: ANN202
    if name == "VideoDataModule":  # Lightning: imported only when the DataModule is asked for
        from vidxai.data.datamodule import VideoDataModule

        return VideoDataModule
    raise AttributeError(f"module 'vidxai.data' has no attribute {name!r}")
