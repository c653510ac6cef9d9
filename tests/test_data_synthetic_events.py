"""Synthetic "events" variant: one colour flash at a recorded time decides the class, nothing else does."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vidxai.data.decoders import open_video
from vidxai.data.layouts import discover
from vidxai.data.sampling import jittered_segment_indices, multi_clip_indices, uniform_indices
from vidxai.data.synthetic import COLOURS, EVENT_BASE_COLOUR, make_synthetic_ucf11

#: 4 classes x 3 groups x 3 clips of 12 frames (6 segments of 2 frames) at 32x32.
EVENTS = {"num_classes": 4, "groups_per_class": 3, "clips_per_group": 3, "num_frames": 12, "size": (32, 32),
          "fps": 8, "seed": 0, "variant": "events", "event_segments": 6}


@pytest.fixture(scope="module")
def events_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(frames (N, T, H, W, 3) through the codec, labels, group index, ground truth) of a tiny events set."""
    root = make_synthetic_ucf11(tmp_path_factory.mktemp("events") / "set", **EVENTS)
    records, classes = discover("ucf11", root)
    assert classes == sorted(f"event_{c}" for c in list(COLOURS)[:4])
    frames, labels, groups, truths = [], [], [], []
    for r in records:
        with open_video(r.path, backend="pyav") as dec:
            frames.append(dec.get_frames(range(dec.num_frames)))
        labels.append(r.label)
        groups.append(int(r.group.rsplit("_", 1)[1]))
        truths.append(json.loads(Path(r.path).with_suffix(".json").read_text()))
    return np.stack(frames).astype(np.float64), np.array(labels), np.array(groups), truths


def test_ground_truth_matches_the_pixels(events_set) -> None:
    frames, labels, _, truths = events_set
    for video, truth in zip(frames, truths):
        assert truth["class"] == f"event_{truth['event_colour']}"
        assert len(truth["evidence_frames"]) == 2 and len(truth["boxes"]) == 12
        centres = np.array([video[t, (y0 + y1) // 2, (x0 + x1) // 2] for t, (x0, y0, x1, y1)
                            in enumerate(truth["boxes"])])
        for t, centre in enumerate(centres):  # the actor is where the json says, flashing when it says
            flash = t in truth["evidence_frames"]
            expected = np.array(COLOURS[truth["event_colour"]] if flash else EVENT_BASE_COLOUR, dtype=float)
            assert np.abs(centre - expected).max() < 60, (truth["class"], t, centre, expected)
            assert (truth["actor_colour_per_frame"][t] == truth["event_colour"]) == flash
        on = centres[truth["evidence_frames"]].mean(0)
        off = np.delete(centres, truth["evidence_frames"], axis=0).mean(0)
        assert np.abs(on - off).max() > 100  # the flash is a big colour change inside the box


def test_positions_cover_early_middle_late_and_classes_are_balanced(events_set) -> None:
    _, labels, _, truths = events_set
    assert Counter(labels.tolist()) == {c: 9 for c in range(4)}
    per_class = Counter((t["class"], t["event_position"]) for t in truths)
    assert set(per_class.values()) == {3} and len(per_class) == 4 * 3  # every class x position, 3 each
    thirds = {"early": (0, 4), "middle": (4, 8), "late": (8, 12)}  # 6 segments of 2 frames
    for t in truths:
        lo, hi = thirds[t["event_position"]]
        assert all(lo <= f < hi for f in t["evidence_frames"]), t
        seg = t["event_segment"]
        assert t["evidence_frames"] == [2 * seg, 2 * seg + 1]


def test_every_clip_sampler_keeps_exactly_one_flash_frame(events_set) -> None:
    """With data.num_frames == event_segments, train and test samplers see the flash once."""
    _, _, _, truths = events_set
    rng = np.random.default_rng(0)
    for t in truths:
        evidence = set(t["evidence_frames"])
        clips = [uniform_indices(12, 6), *multi_clip_indices(12, 6, 3)]
        clips += [jittered_segment_indices(12, 6, rng) for _ in range(10)]
        for clip in clips:
            assert sum(int(i) in evidence for i in clip) == 1


def test_mean_colour_without_the_flash_is_at_chance_and_with_it_is_not(events_set) -> None:
    frames, labels, groups, truths = events_set
    train, test = groups <= 2, groups > 2  # group-disjoint, like the real splits
    feats = frames.mean(axis=(2, 3))  # (N, T, 3): mean colour per frame
    flash = np.zeros(feats.shape[:2], dtype=bool)
    for n, t in enumerate(truths):
        flash[n, t["evidence_frames"]] = True

    def nearest_centroid(mask: np.ndarray) -> float:
        y = np.repeat(labels[:, None], feats.shape[1], axis=1)
        x_tr, y_tr = feats[mask & train[:, None]], y[mask & train[:, None]]
        x_te, y_te = feats[mask & test[:, None]], y[mask & test[:, None]]
        centroids = np.stack([x_tr[y_tr == c].mean(0) for c in range(4)])
        pred = np.argmin(((x_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        return float((pred == y_te).mean())

    without = nearest_centroid(~flash)
    assert without < 0.4, without  # chance is 0.25
    assert nearest_centroid(flash) > 0.6  # the same classifier on the flash frames finds the class (mostly)


def test_bad_event_settings_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event_segments=5 must be >= 3 and divide num_frames=12"):
        make_synthetic_ucf11(tmp_path / "a", **{**EVENTS, "event_segments": 5})
    with pytest.raises(ValueError, match="num_classes=5 is invalid for variant=events"):
        make_synthetic_ucf11(tmp_path / "b", **{**EVENTS, "num_classes": 5})
    with pytest.raises(ValueError, match="variant='flash' is unknown"):
        make_synthetic_ucf11(tmp_path / "c", **{**EVENTS, "variant": "flash"})
