"""Small layers that vidxai adds around networks it did not build (so the explainer's layer registry,
:mod:`vidxai.xai.cnn`, can know them without importing the adapters in :mod:`vidxai.models.foreign`)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ClipMean"]


class ClipMean(nn.Module):
    """The mean over time and space of a ``(B, C, T, H, W)`` map, as S3D's forward ends: ``x.mean((2, 3, 4))``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.ndim)))
