"""Shared pytest configuration (CPU only, deterministic, offline) and the fixtures shared by test modules.

Plain helper functions and constants (tiny videos, tiny Hydra configs) live in ``helpers.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist (`make test` runs `-n auto`): one worker per core, so each worker computes on one thread (two
# workers with a thread pool of two each would fight over the two cores); the runs a test starts inherit it
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import shutil  # noqa: E402 (after the environment is set)
import subprocess  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import TINY, TINY_DATA, TINY_TRAIN, compose_cfg, run_cli  # noqa: E402

from vidxai.data.synthetic import make_synthetic_ucf11  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- order
#: the pytest cache key of the call durations of the last run (`.pytest_cache`), by test id
DURATIONS_KEY = "vidxai/durations"
_durations: dict[str, float] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The runs marked ``slow`` (other processes, tens of seconds each) first, the longest of the last run
    first: pytest-xdist hands the tests out in this order, round robin, so the long ones start at once on every
    worker instead of ending the session on one of them. Without a cache (a fresh clone): collection order."""
    cache = getattr(config, "cache", None)  # none with -p no:cacheprovider
    last = cache.get(DURATIONS_KEY, {}) if cache is not None else {}
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, -last.get(item.nodeid, 0.0)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _durations[report.nodeid] = report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remember the durations (in the controller only: with xdist it sees every worker's reports)."""
    cache = getattr(session.config, "cache", None)
    if cache is not None and _durations and not os.environ.get("PYTEST_XDIST_WORKER"):
        cache.set(DURATIONS_KEY, {**cache.get(DURATIONS_KEY, {}), **_durations})


# ----------------------------------------------------------------------------- once per session
@pytest.fixture(scope="session")
def build_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``build_once(name, build) -> folder``: ``build(folder)`` runs once per test session, also when
    pytest-xdist splits the session over several worker processes: the first worker to ask builds under a file
    lock, the others wait for it and reuse the folder (read-only). A build that fails is tried again by the next
    worker (and fails there too, where the failure is real)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # <basetemp>/popen-gw0: the parent is the session's, shared
        shared = shared.parent

    def build_it(name: str, build: Callable[[Path], object]) -> Path:
        folder = shared / name
        with FileLock(str(shared / f"{name}.lock")):
            done = shared / f"{name}.built"
            if not done.is_file():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                build(folder)
                done.touch()
        return folder

    return build_it


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def tiny_synthetic(build_once: Callable) -> Path:
    """A tiny synthetic UCF11-layout dataset, generated once per session (read-only for tests)."""
    return build_once("synthetic", lambda folder: make_synthetic_ucf11(folder / "ucf11", **TINY)) / "ucf11"


@pytest.fixture
def tiny_copy(tiny_synthetic: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny synthetic set (for tests that corrupt files)."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, dst)
    return dst


# ----------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="session")
def data_dir(build_once: Callable) -> Path:
    """A session-wide ``paths.data_dir`` where the pipelines generate their embedded synthetic data once (every
    user asks for the same TINY_DATA set; xdist workers share it as parallel runs do: the generator locks it and
    the manifest is written atomically)."""
    return build_once("data", lambda folder: None)


def _train_tiny_vgg(folder: Path, data_dir: Path) -> None:
    from vidxai.pipelines.train import train

    cfg = compose_cfg(
        "train", folder,
        TINY_DATA + TINY_TRAIN + ["model.net.hidden_size=16", "trainer.max_epochs=2", "seed=1"],
        data_dir=data_dir,
    )
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0


@pytest.fixture(scope="session")
def trained_run(build_once: Callable, data_dir: Path) -> Path:
    """One tiny VGG16+LSTM training run with the default loggers (W&B offline + CSV), trained once per session
    (read-only for tests); its run folder."""
    return build_once("train_vgg", lambda folder: _train_tiny_vgg(folder, data_dir)) / "run"


# ----------------------------------------------------------------------------- command lines
@pytest.fixture
def cli(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., subprocess.CompletedProcess]:
    """``cli("explain.py", *args, cwd=folder)``: the command line run in this process from ``folder`` (see
    ``helpers.run_cli``), its exit status and output as a ``CompletedProcess``; ``hydra.run.dir`` is
    ``folder/out``."""

    def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        code = run_cli(script, f"hydra.run.dir={cwd}/out", *args)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([script, *args], code, out, err)

    return run
