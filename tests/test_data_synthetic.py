"""Synthetic UCF11-style data: deterministic, idempotent, honest (order, not a frame, is the class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY

from vidxai.data.decoders import open_video
from vidxai.data.layouts import discover
from vidxai.data.synthetic import COLOURS, MARKER, make_synthetic_ucf11

SMALL = {**TINY, "groups_per_class": 2, "clips_per_group": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_ground_truth(tiny_synthetic: Path) -> None:  # noqa: F811
    records, classes = discover("ucf11", tiny_synthetic)
    assert len(classes) == 4 and len(records) == 4 * 4 * 2
    assert all(len(c.split("_")) == 3 for c in classes)  # colour orders, e.g. red_green_blue
    assert len({r.group for r in records}) == 16
    rec = records[0]
    truth = json.loads(Path(rec.path).with_suffix(".json").read_text())
    assert truth["class"] == rec.class_name and truth["group"] == rec.group
    assert len(truth["boxes"]) == 8 and truth["evidence_frames"]
    assert truth["params"]["seed"] == 0
    with open_video(rec.path, backend="pyav") as dec:
        frames = dec.get_frames(range(8)).astype(int)
    for t, (x0, y0, x1, y1) in enumerate(truth["boxes"]):  # the actor is where and what the json says
        centre = frames[t, (y0 + y1) // 2, (x0 + x1) // 2]
        expected = np.array(COLOURS[truth["actor_colour_per_frame"][t]])
        assert np.abs(centre - expected).max() < 60, (t, centre, expected)


def test_deterministic_by_seed_and_idempotent(tmp_path: Path) -> None:
    a = make_synthetic_ucf11(tmp_path / "a", **SMALL)
    b = make_synthetic_ucf11(tmp_path / "b", **SMALL)
    assert _files(a) == _files(b)
    c = make_synthetic_ucf11(tmp_path / "c", **{**SMALL, "seed": 1})
    assert _files(c) != _files(a)
    video = next(a.rglob("*.avi"))
    mtime = video.stat().st_mtime_ns
    make_synthetic_ucf11(a, **SMALL)  # same parameters: nothing rewritten
    assert video.stat().st_mtime_ns == mtime
    make_synthetic_ucf11(a, **{**SMALL, "num_classes": 3, "num_frames": 6})  # new parameters: regenerated
    records, classes = discover("ucf11", a)
    assert len(classes) == 3 and len(records) == 3 * 2
    assert json.loads((a / MARKER).read_text())["params"]["num_frames"] == 6


def test_refuses_to_touch_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ValueError, match="not empty and holds no synthetic dataset"):
        make_synthetic_ucf11(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    with pytest.raises(ValueError, match="must be even"):
        make_synthetic_ucf11(tmp_path / "odd", **{**SMALL, "size": (33, 32)})


def _decoded(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (N,T,H,W,3), labels (N,), group index (N,)) of a synthetic set, through the codec."""
    records, _ = discover("ucf11", root)
    frames, labels, groups = [], [], []
    for r in records:
        with open_video(r.path, size=(32, 32)) as dec:
            frames.append(dec.get_frames(range(dec.num_frames)))
        labels.append(r.label)
        groups.append(int(r.group.rsplit("_", 1)[1]))
    return np.stack(frames).astype(np.float64), np.array(labels), np.array(groups)


def test_one_frame_does_not_tell_the_class_but_colour_order_does(tiny_synthetic: Path) -> None:  # noqa: F811
    frames, labels, groups = _decoded(tiny_synthetic)
    train, test = groups <= 2, groups > 2  # group-disjoint, like the real splits
    n, t = frames.shape[:2]
    # 1) nearest centroid on per-frame mean colour (a single frame's colour histogram summary)
    feats = frames.mean(axis=(2, 3))  # (N, T, 3)
    x_tr, y_tr = feats[train].reshape(-1, 3), np.repeat(labels[train], t)
    x_te, y_te = feats[test].reshape(-1, 3), np.repeat(labels[test], t)
    centroids = np.stack([x_tr[y_tr == c].mean(0) for c in range(4)])
    pred = np.argmin(((x_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    frame_acc = float((pred == y_te).mean())
    assert frame_acc < 0.45, frame_acc  # chance is 0.25
    # 2) a trivial order feature: the dominant saturated channel of the first and last frame
    sat = frames.max(-1) - frames.min(-1) > 100  # (N, T, H, W): actor pixels

    def dominant(k: int) -> np.ndarray:
        return np.array([np.argmax(frames[i, k][sat[i, k]].mean(0)) for i in range(n)])

    key = dominant(0) * 3 + dominant(t - 1)
    lookup = {int(k): int(np.bincount(labels[train][key[train] == k]).argmax())
              for k in np.unique(key[train])}
    order_acc = float(np.mean([lookup.get(int(k), -1) == y for k, y in zip(key[test], labels[test])]))
    assert order_acc >= 0.95, order_acc
