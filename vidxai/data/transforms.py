"""Device-side clip transform: uint8 -> float, crop, flip, normalise.

Batches travel as ``uint8`` and are converted here, on whatever device they are on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vidxai.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ConfigError(f"data.crop_size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


class VideoTransform:
    """Float conversion, crop (random in training, centre in eval), flip and normalisation.

    Accepts ``(B, T, 3, H, W)`` or ``(B, K, T, 3, H, W)`` (K clips per video); one crop and
    one flip are drawn per clip and applied to all its frames. Pass a ``torch.Generator``
    for reproducible training augmentation.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 crop_size: int | Sequence[int] | None = None, flip: bool = True) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"data.mean and data.std need 3 values (RGB), got {list(mean)} and {list(std)}")
        if any(s <= 0 for s in std):
            raise ConfigError(f"data.std must be positive, got {list(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_size = _pair(crop_size)
        self.flip = bool(flip)

    @property
    def preprocess(self) -> dict[str, Any]:
        """Parameters to store in checkpoints (see :meth:`from_preprocess`)."""
        return {"mean": list(self.mean), "std": list(self.std),
                "crop_size": list(self.crop_size) if self.crop_size else None, "flip": self.flip}

    @classmethod
    def from_preprocess(cls, d: dict[str, Any]) -> VideoTransform:
        """Rebuild from a ``preprocess`` dict; extra keys (num_frames, size, backend) are ignored."""
        return cls(mean=d.get("mean", IMAGENET_MEAN), std=d.get("std", IMAGENET_STD),
                   crop_size=d.get("crop_size"), flip=d.get("flip", True))

    def __repr__(self) -> str:
        return (f"VideoTransform(mean={self.mean}, std={self.std}, crop_size={self.crop_size}, "
                f"flip={self.flip})")

    def __call__(self, video: torch.Tensor, train: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform a uint8 (or float in 0..255) batch of clips into normalised floats."""
        if video.ndim not in (5, 6) or video.shape[-3] != 3:
            raise ValueError(f"VideoTransform expects (B,T,3,H,W) or (B,K,T,3,H,W), got {tuple(video.shape)}")
        lead = video.shape[:-4]  # (B,) or (B, K)
        clips = video.reshape(-1, *video.shape[-4:])  # (N, T, 3, H, W)
        clips = self._crop(clips, train, generator)
        if train and self.flip:
            flip = torch.rand(clips.shape[0], generator=generator, device="cpu") < 0.5
            flip = flip.to(clips.device)
            clips = torch.where(flip.view(-1, 1, 1, 1, 1), clips.flip(-1), clips)
        out = clips.float().div_(255.0)
        mean = torch.tensor(self.mean, device=out.device, dtype=out.dtype).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.std, device=out.device, dtype=out.dtype).view(1, 1, 3, 1, 1)
        out = (out - mean) / std
        return out.reshape(*lead, *out.shape[1:])

    def _crop(self, clips: torch.Tensor, train: bool, generator: torch.Generator | None) -> torch.Tensor:
        if self.crop_size is None:
            return clips
        ch, cw = self.crop_size
        h, w = clips.shape[-2:]
        if ch > h or cw > w:
            raise ConfigError(f"data.crop_size={self.crop_size} is larger than the decoded frames ({h}x{w}): "
                             "increase data.size or decrease data.crop_size")
        if not train:
            top, left = (h - ch) // 2, (w - cw) // 2
            return clips[..., top:top + ch, left:left + cw]
        n = clips.shape[0]
        tops = torch.randint(0, h - ch + 1, (n,), generator=generator).tolist()
        lefts = torch.randint(0, w - cw + 1, (n,), generator=generator).tolist()
        return torch.stack([c[..., t:t + ch, x:x + cw] for c, t, x in zip(clips, tops, lefts)])
