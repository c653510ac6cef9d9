"""Lightning callbacks."""

from vidxai.callbacks.explanation import ExplanationCallback, stratified_indices

__all__ = ["ExplanationCallback", "stratified_indices"]
