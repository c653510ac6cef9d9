"""Lightning callbacks."""

from vidxai.callbacks.explanation import ExplanationCallback, stratified_indices
from vidxai.callbacks.resume import AtomicCheckpointIO, ModelCheckpoint, SeedEveryBatch

__all__ = ["AtomicCheckpointIO", "ExplanationCallback", "ModelCheckpoint", "SeedEveryBatch", "stratified_indices"]
