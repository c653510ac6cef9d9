"""Lightning callbacks: they draw and log (models only compute)."""

from vidxai.callbacks.explanation import ExplanationCallback, stratified_indices
from vidxai.callbacks.resume import AtomicCheckpointIO, ModelCheckpoint, SeedEveryBatch
from vidxai.callbacks.test_figures import TestFiguresCallback

__all__ = [
    "AtomicCheckpointIO",
    "ExplanationCallback",
    "ModelCheckpoint",
    "SeedEveryBatch",
    "TestFiguresCallback",
    "stratified_indices",
]
