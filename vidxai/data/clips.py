"""One clip for explanation: read from a video file or taken from a dataset sample, made ready for the model.

Shared by ``explain.py`` and the explanation callback, so both show exactly what the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidxai.data.decoders import VideoDecodeError, open_video
from vidxai.data.sampling import uniform_indices

__all__ = ["denormalize", "prepare_clip", "read_clip"]


def read_clip(
    path: str | Path, num_frames: int, size: Sequence[int] | None = None, backend: str = "auto"
) -> tuple[torch.Tensor, np.ndarray, float]:
    """``num_frames`` frames spread uniformly over the video file ``path`` (short videos repeat frames).

    Returns the uint8 clip ``(T,3,H,W)`` (resized to ``size=(H, W)`` while decoding, if given), the frame
    indices ``(T,)`` in the video and its frame rate (0.0 when unknown). Raises ``FileNotFoundError`` for a
    missing file and :class:`~vidxai.data.VideoDecodeError` for one that cannot be decoded.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {p}")
    with open_video(str(p), backend=backend, size=None if size is None else tuple(size)) as dec:
        if dec.num_frames < 1:
            raise VideoDecodeError(f"{p}: no decodable frames")
        idx = uniform_indices(dec.num_frames, int(num_frames))
        frames = dec.get_frames(idx)
        fps = float(dec.fps or 0.0)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return video, idx, fps


def denormalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Model input ``(T,3,H,W)`` float, normalised -> display frames ``(T,H,W,3)`` uint8."""
    v = video.detach().to("cpu", torch.float32)
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    frames = ((v * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


def prepare_clip(
    video: torch.Tensor, frame_indices: Any, transform: Any, device: torch.device | str
) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """uint8 ``(T,3,H,W)`` (or ``(K,T,3,H,W)``: the first clip) -> model input on ``device``, display frames, indices.

    The model input goes through ``transform`` (a :class:`~vidxai.data.VideoTransform`) in eval mode (centre
    crop, normalisation); the display frames are that input de-normalised, i.e. exactly what the model saw.
    """
    idx = torch.as_tensor(frame_indices)
    if video.ndim == 5:  # several test clips of one video: explain the first
        video, idx = video[0], idx[0]
    x = transform(video.unsqueeze(0).to(device), train=False)[0]
    return x, denormalize(x, transform.mean, transform.std), [int(i) for i in idx.reshape(-1).tolist()]
