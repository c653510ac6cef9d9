"""Manifest scan, bad videos (skip / raise), and bad files met mid-epoch in DataLoader workers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from helpers import corrupt, make_video
from torch.utils.data import DataLoader

from vidxai.data import VideoDataModule
from vidxai.data.dataset import VideoClipDataset
from vidxai.data.decoders import VideoDecodeError
from vidxai.data.layouts import discover
from vidxai.data.manifest import manifest_paths, scan

BACKENDS = ["decord", "pyav"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_records_real_counts_and_reports_bad_files(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "data"
    make_video(root / "a" / "x.avi", num_frames=5, size=(16, 32))
    make_video(root / "a" / "y.mp4", num_frames=3)
    corrupt(root / "b" / "broken.avi")
    (root / "b" / "empty.avi").write_bytes(b"")
    records, _ = discover("folder", root)
    entries, bad = scan(records, tmp_path / "cache", backend)
    frames = {Path(e.record.path).name: (e.num_frames, e.height, e.width, e.fps) for e in entries}
    assert frames == {"x.avi": (5, 16, 32, 8.0), "y.mp4": (3, 32, 32, 8.0)}
    assert sorted(Path(p).name for p, _ in bad) == ["broken.avi", "empty.avi"]
    manifest, report = manifest_paths(records, tmp_path / "cache", backend)
    assert len(json.loads(manifest.read_text())["entries"]) == 2
    assert "broken.avi" in report.read_text() and "empty.avi" in report.read_text()


def test_manifest_is_cached_and_recomputed_when_files_change(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_video(root / "a" / "x.avi", num_frames=5)
    records, _ = discover("folder", root)
    scan(records, tmp_path / "cache")
    manifest, _ = manifest_paths(records, tmp_path / "cache")
    payload = json.loads(manifest.read_text())
    payload["entries"][0]["num_frames"] = 99  # a cache hit returns what is stored
    manifest.write_text(json.dumps(payload))
    assert scan(records, tmp_path / "cache")[0][0].num_frames == 99
    make_video(root / "a" / "x.avi", num_frames=4)
    st = os.stat(root / "a" / "x.avi")
    os.utime(root / "a" / "x.avi", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert manifest_paths(records, tmp_path / "cache")[0] != manifest
    assert scan(records, tmp_path / "cache")[0][0].num_frames == 4


def test_datamodule_skips_bad_videos_with_one_warning(tiny_copy: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    bad = tiny_copy / "red_green_blue" / "v_red_green_blue_01" / "v_red_green_blue_01_01.avi"
    corrupt(bad)
    dm = VideoDataModule(root=str(tiny_copy), size=(32, 32), cache_dir=str(tmp_path / "cache"),
                         val_fraction=0.25, test_fraction=0.25)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if "skipping 1 unreadable" in r.getMessage()]
    assert warnings and "bad_videos-" in warnings[0]
    all_paths = {e.record.path for s in ("train", "val", "test") for e in dm.records_for(s)}
    assert str(bad.resolve()) not in all_paths and len(all_paths) == 31


def test_datamodule_raise_names_the_first_bad_file(tiny_copy: Path, tmp_path: Path) -> None:
    corrupt(tiny_copy / "red_green_blue" / "v_red_green_blue_02" / "v_red_green_blue_02_02.avi")
    dm = VideoDataModule(root=str(tiny_copy), size=(32, 32), cache_dir=str(tmp_path / "cache"),
                         on_bad_video="raise")
    with pytest.raises(VideoDecodeError, match=r"v_red_green_blue_02_02.avi.*on_bad_video=skip"):
        dm.prepare_data()


def test_file_corrupted_after_scan_does_not_crash_workers(tiny_copy: Path, tmp_path: Path) -> None:
    dm = VideoDataModule(root=str(tiny_copy), size=(32, 32), cache_dir=str(tmp_path / "cache"), batch_size=4,
                         num_workers=2, num_frames=4, val_fraction=0.25, test_fraction=0.25)
    dm.prepare_data()
    dm.setup("fit")
    entries = dm.records_for("train")
    victim = 0
    corrupt(Path(entries[victim].record.path))
    indices, labels = [], []
    for batch in dm.train_dataloader():
        assert batch["video"].dtype == torch.uint8
        indices += batch["index"].tolist()
        labels += batch["label"].tolist()
    assert len(indices) == len(entries) and victim not in indices
    assert indices.count(victim + 1) == 2  # replaced by the next video, deterministically
    assert labels == [entries[i].record.label for i in indices]
    strict = VideoClipDataset(entries, 4, (32, 32), train=False, on_bad_video="raise")
    loader = DataLoader(strict, batch_size=2, num_workers=2)
    with pytest.raises(VideoDecodeError, match=Path(entries[victim].record.path).name):
        list(loader)
