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
        """Transform a uint8 (or float in 0..255) batch of clips into normalised floats.

        One pass converts the cropped (and flipped) views straight into the float output; normalisation is
        one fused multiply-add in place: no intermediate uint8 or float copies of the batch.
        """
        if video.ndim not in (5, 6) or video.shape[-3] != 3:
            raise ValueError(f"VideoTransform expects (B,T,3,H,W) or (B,K,T,3,H,W), got {tuple(video.shape)}")
        lead = video.shape[:-4]  # (B,) or (B, K)
        clips = video.reshape(-1, *video.shape[-4:])  # (N, T, 3, H, W)
        n = clips.shape[0]
        tops, lefts, (ch, cw) = self._crop_boxes(clips, train, generator)
        flips = [False] * n
        if train and self.flip:  # drawn after the crops, as before: same clips for the same generator
            flips = (torch.rand(n, generator=generator, device="cpu") < 0.5).tolist()
        out = torch.empty((n, clips.shape[1], 3, ch, cw), dtype=torch.float32, device=clips.device)
        if len(set(tops)) == 1 and len(set(lefts)) == 1 and not any(flips):
            out.copy_(clips[..., tops[0]:tops[0] + ch, lefts[0]:lefts[0] + cw])
        else:
            for i, (top, left, flip) in enumerate(zip(tops, lefts, flips)):
                view = clips[i, ..., top:top + ch, left:left + cw]
                out[i].copy_(view.flip(-1) if flip else view)
        # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=out.device).view(1, 1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=out.device).view(1, 1, 3, 1, 1)
        out.mul_(scale).add_(shift)
        return out.reshape(*lead, *out.shape[1:])

    def eval_boxes(self, boxes: Any, source_size: Sequence[int], decoded_size: Sequence[int] | None) -> Any:
        """Boxes ``(N, 4)`` ``(x0, y0, x1, y1)`` in source-video pixels -> pixels of the eval-mode clip.

        The same geometry as the clip: the decoder's resize from ``source_size`` to ``decoded_size``
        (``(H, W)``; ``None`` = no resize), then this transform's centre crop. Coordinates are clipped to the
        clip; a box that falls entirely outside it gets ``x1 <= x0`` (no box). Returns float64 NumPy.
        """
        import numpy as np

        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        sh, sw = (float(s) for s in source_size)
        dh, dw = (float(s) for s in decoded_size) if decoded_size is not None else (sh, sw)
        b[:, [0, 2]] *= dw / sw
        b[:, [1, 3]] *= dh / sh
        h, w = int(dh), int(dw)
        if self.crop_size is not None:
            ch, cw = self.crop_size
            top, left = self.centre_offset(h, ch), self.centre_offset(w, cw)  # as in _crop_boxes(train=False)
            b[:, [0, 2]] -= left
            b[:, [1, 3]] -= top
            h, w = ch, cw
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return b

    def centre_offset(self, size: int, crop: int) -> int:
        """Where the centre crop of ``crop`` pixels starts in ``size`` pixels (the lower middle when odd)."""
        return (size - crop) // 2

    def _crop_boxes(self, clips: torch.Tensor, train: bool,
                    generator: torch.Generator | None) -> tuple[list[int], list[int], tuple[int, int]]:
        """Top/left corner of each clip's crop (random in training, centred otherwise) and the crop size."""
        n = clips.shape[0]
        h, w = clips.shape[-2:]
        if self.crop_size is None:
            return [0] * n, [0] * n, (h, w)
        ch, cw = self.crop_size
        if ch > h or cw > w:
            raise ConfigError(f"data.crop_size={self.crop_size} is larger than the decoded frames ({h}x{w}): "
                             "increase data.size or decrease data.crop_size")
        if not train:
            return [self.centre_offset(h, ch)] * n, [self.centre_offset(w, cw)] * n, (ch, cw)
        tops = torch.randint(0, h - ch + 1, (n,), generator=generator).tolist()
        lefts = torch.randint(0, w - cw + 1, (n,), generator=generator).tolist()
        return tops, lefts, (ch, cw)
