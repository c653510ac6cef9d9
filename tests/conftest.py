"""Shared pytest configuration (CPU only, deterministic, offline) and the fixtures shared by test modules.

Plain helper functions and constants (tiny videos, tiny Hydra configs) live in ``helpers.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil  # noqa: E402 (after the environment is set)
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import TINY, TINY_DATA, TINY_TRAIN, compose_cfg  # noqa: E402

from vidxai.data.synthetic import make_synthetic_ucf11  # noqa: E402


# ----------------------------------------------------------------------------- data
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


# ----------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide ``paths.data_dir`` where the pipelines generate their embedded synthetic data once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One tiny VGG16+LSTM training run with the default loggers (W&B offline + CSV); its run folder."""
    from vidxai.pipelines.train import train

    tmp = tmp_path_factory.mktemp("train_vgg")
    cfg = compose_cfg(
        "train", tmp,
        TINY_DATA + TINY_TRAIN + ["model.net.hidden_size=16", "trainer.max_epochs=2", "seed=1"],
        data_dir=data_dir,
    )
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0
    return tmp / "run"
