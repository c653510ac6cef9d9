"""Shared helpers and fixtures for the data pipeline tests (tiny real videos, CPU only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vidxai.data.synthetic import make_synthetic_ucf11, write_video

#: A tiny synthetic set: 4 classes x 4 groups x 2 clips of 8 frames at 32x32.
TINY = {"num_classes": 4, "groups_per_class": 4, "clips_per_group": 2, "num_frames": 8, "size": (32, 32),
        "fps": 8, "seed": 0}


def make_video(path: Path, num_frames: int = 6, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Write a small real video whose frame t has mean grey level ~ 20 * t (frames are tellable apart)."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t] = np.clip(20 * t + 20 + rng.integers(0, 8, size=(h, w, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=8)
    return path


def corrupt(path: Path, n_bytes: int = 500, seed: int = 1) -> None:
    """Overwrite ``path`` with random bytes (keeps the extension, breaks the container)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic UCF11-layout dataset, generated once per session (read-only for tests)."""
    return make_synthetic_ucf11(tmp_path_factory.mktemp("synthetic") / "ucf11", **TINY)


@pytest.fixture
def tiny_copy(tiny_synthetic: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny synthetic set (for tests that corrupt files)."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, dst)
    return dst
