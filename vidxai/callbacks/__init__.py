"""Lightning callbacks: they draw and log (models only compute)."""

from vidxai.callbacks.explanation import ExplanationCallback, stratified_indices
from vidxai.callbacks.test_figures import TestFiguresCallback

__all__ = ["ExplanationCallback", "TestFiguresCallback", "stratified_indices"]
