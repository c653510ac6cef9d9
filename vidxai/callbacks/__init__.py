"""Lightning callbacks: they draw and log (models only compute)."""

from vidxai.callbacks.classification_figures import ClassificationFiguresCallback
from vidxai.callbacks.explanation import ExplanationCallback, stratified_indices
from vidxai.callbacks.resume import AtomicCheckpointIO, ModelCheckpoint, SeedEveryBatch

__all__ = [
    "AtomicCheckpointIO",
    "ClassificationFiguresCallback",
    "ExplanationCallback",
    "ModelCheckpoint",
    "SeedEveryBatch",
    "stratified_indices",
]
