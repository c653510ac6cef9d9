"""VideoDataModule end to end on a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY, make_video

from vidxai.data import VideoDataModule


def _dm(root: Path, tmp_path: Path, **kw) -> VideoDataModule:  # noqa: ANN003
    args = {"root": str(root), "num_frames": 4, "size": (36, 36), "crop_size": 32, "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.25, "test_fraction": 0.25,
            "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), **kw}
    dm = VideoDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_uint8_batches_then_normalised_floats(tiny_synthetic: Path, tmp_path: Path) -> None:  # noqa: F811
    dm = _dm(tiny_synthetic, tmp_path)
    assert dm.num_classes == 4 and dm.class_names == sorted(dm.class_names)
    assert dm.preprocess == {"num_frames": 4, "size": [36, 36], "crop_size": [32, 32], "mean": [0.5] * 3,
                             "std": [0.25] * 3, "backend": dm.backend}
    groups = {s: {e.record.group for e in dm.records_for(s)} for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 4, 3, 36, 36)
    assert batch["label"].dtype == torch.int64 and batch["frame_indices"].shape == (4, 4)
    out = dm.on_after_batch_transfer(batch, 0)  # no trainer: eval transform (centre crop)
    assert out["video"].dtype == torch.float32 and out["video"].shape == (4, 4, 3, 32, 32)
    expected = (batch["video"][..., 2:34, 2:34].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out["video"], expected)
    dm.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    assert dm.on_after_batch_transfer(batch, 0)["video"].shape == (4, 4, 3, 32, 32)
    val = next(iter(dm.val_dataloader()))
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(val["video"], again["video"]) and torch.equal(val["frame_indices"][0],
                                                                       torch.tensor([1, 3, 5, 7]))


def test_test_clips_and_logo_fold(tiny_synthetic: Path, tmp_path: Path) -> None:  # noqa: F811
    dm = _dm(tiny_synthetic, tmp_path, fold=2, test_clips=3)
    test_groups = {e.record.group.rsplit("_", 1)[1] for e in dm.records_for("test")}
    assert test_groups == {"03"}  # the third group (index 2) of every class
    assert len(dm.records_for("test")) == 4 * TINY["clips_per_group"]
    batch = next(iter(dm.test_dataloader()))
    assert batch["video"].shape == (4, 3, 4, 3, 36, 36) and batch["frame_indices"].shape == (4, 3, 4)
    assert dm.on_after_batch_transfer(batch, 0)["video"].shape == (4, 3, 4, 3, 32, 32)
    with pytest.raises(ValueError, match=r"data.fold=4 is out of range: valid folds are 0..3"):
        _dm(tiny_synthetic, tmp_path, fold=4)


def test_state_dict_carries_the_split(tiny_synthetic: Path, tmp_path: Path) -> None:  # noqa: F811
    dm = _dm(tiny_synthetic, tmp_path, seed=0)
    state = dm.state_dict()
    assert state["class_names"] == dm.class_names
    assert all(not Path(p).is_absolute() for p in state["split"]["test"])
    other = _dm(tiny_synthetic, tmp_path, seed=5)
    expected = [e.record.path for e in dm.records_for("test")]
    assert [e.record.path for e in other.records_for("test")] != expected
    other.load_state_dict(state)
    assert [e.record.path for e in other.records_for("test")] == expected
    with pytest.raises(ValueError, match="trained on classes"):
        other.load_state_dict({**state, "class_names": ["a", "b"]})


def test_ucf101_official_split_via_datamodule(tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    names = [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in ("Archery", "Bowling") for g in range(1, 6)]
    for i, n in enumerate(names):
        make_video(root / n, num_frames=4, size=(16, 16), seed=i)
    (root / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (root / "trainlist01.txt").write_text("".join(f"{n} 1\n" for n in names if "_g05_" not in n))
    (root / "testlist01.txt").write_text("".join(f"{n}\n" for n in names if "_g05_" in n))
    dm = _dm(root, tmp_path, layout="ucf101", size=(16, 16), crop_size=None)
    assert {e.record.group for e in dm.records_for("test")} == {"g05"}
    val = {e.record.group for e in dm.records_for("val")}
    assert len(val) == 1 and not val & {e.record.group for e in dm.records_for("train")}


def test_constructor_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.on_bad_video='ignore'"):
        VideoDataModule(root=str(tmp_path), on_bad_video="ignore")
    with pytest.raises(ValueError, match="data.synthetic generates a UCF11 layout"):
        VideoDataModule(layout="folder", root=str(tmp_path), synthetic={})
    with pytest.raises(RuntimeError, match="call prepare_data\\(\\) and setup\\(\\) first"):
        _ = VideoDataModule(root=str(tmp_path)).class_names
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        VideoDataModule(root=str(tmp_path / "missing")).setup()


def test_synthetic_is_generated_by_prepare_data(tmp_path: Path) -> None:
    small = {**TINY, "groups_per_class": 3, "clips_per_group": 1}
    dm = _dm(tmp_path / "syn", tmp_path, synthetic=small, val_fraction=0.34, test_fraction=0.34)
    assert (tmp_path / "syn" / "_COMPLETE.json").is_file()
    assert sum(len(dm.records_for(s)) for s in ("train", "val", "test")) == 12


def test_default_synthetic_set_with_pyav_backend(tmp_path: Path) -> None:
    """The default synthetic set (4 classes x 10 groups x 3 clips) through the PyAV fallback."""
    dm = _dm(tmp_path / "syn", tmp_path, synthetic={}, backend="pyav", num_frames=8, size=(40, 40),
             val_fraction=0.1, test_fraction=0.2)
    sizes = {s: len(dm.records_for(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 84, "val": 12, "test": 24}
    assert {e.num_frames for e in dm.records_for("train")} == {16}
    batch = next(iter(dm.val_dataloader()))
    assert batch["video"].shape == (4, 8, 3, 40, 40) and batch["video"].dtype == torch.uint8


def test_inside_a_lightning_trainer(tiny_synthetic: Path, tmp_path: Path) -> None:  # noqa: F811
    """The Trainer calls on_after_batch_transfer: train batches are augmented floats, val batches eval."""
    import pytorch_lightning as pl

    seen: list[tuple[bool, torch.dtype, tuple[int, ...]]] = []

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: dict, _: int) -> torch.Tensor:
            seen.append((True, batch["video"].dtype, tuple(batch["video"].shape)))
            return (self.w * batch["video"].mean()).sum()

        def validation_step(self, batch: dict, _: int) -> None:
            seen.append((False, batch["video"].dtype, tuple(batch["video"].shape)))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = VideoDataModule(root=str(tiny_synthetic), num_frames=4, size=(36, 36), crop_size=32, batch_size=4,
                         cache_dir=str(tmp_path / "cache"), val_fraction=0.25, test_fraction=0.25)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(Probe(), datamodule=dm)
    shape = (4, 4, 3, 32, 32)
    assert (True, torch.float32, shape) in seen and (False, torch.float32, shape) in seen
    assert dm.state_dict()["class_names"] == dm.class_names



def test_loaders_seed_their_own_workers_which_start_without_lightning(tiny_synthetic: Path, tmp_path: Path) -> None:
    """Every loader of the DataModule carries vidxai's worker seeding, so Lightning adds none of its own: Lightning's
    function would make each spawned worker import Lightning (seconds of CPU per worker). What a spawned worker
    unpickles (the dataset, the seeding) imports no Lightning in a fresh interpreter. The seeding differs by rank
    and worker and repeats for the same ones."""
    import functools
    import pickle
    import subprocess
    import sys

    import numpy as np

    from vidxai.data.dataset import seed_worker

    dm = _dm(tiny_synthetic, tmp_path, num_workers=1)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert isinstance(loader.worker_init_fn, functools.partial) and loader.worker_init_fn.func is seed_worker
    shipped = tmp_path / "worker.pkl"
    shipped.write_bytes(pickle.dumps((loader.dataset, loader.worker_init_fn)))
    code = ("import pickle, sys; dataset, init = pickle.loads(open(sys.argv[1], 'rb').read()); init(0); "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning_fabric', 'torchmetrics') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(shipped)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-2000:])

    def draws(worker: int, rank: int) -> tuple[float, int]:
        torch.manual_seed(123)  # the worker's torch seed, which the seeding starts from
        seed_worker(worker, rank)
        return float(np.random.rand()), int(torch.randint(2**31, (1,)))

    assert draws(0, 0) == draws(0, 0)
    assert len({draws(0, 0), draws(1, 0), draws(0, 1)}) == 3
