"""Unlike the training data: train.py records the training clips' input statistics, explain.py video=... says
when a clip lies outside them (and still explains it), and says so when an old checkpoint cannot tell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_cfg

from vidxai.data.input_stats import FEATURES, InputStats, clip_features, compare_with_training
from vidxai.data.synthetic import write_video


def test_running_statistics_equal_numpy_over_all_clips() -> None:
    rng = np.random.default_rng(0)
    feats = [torch.from_numpy(rng.normal(size=(k, len(FEATURES)))) for k in (3, 1, 5)]
    stats = InputStats()
    for f in feats:
        stats.update(f)
    every = torch.cat(feats).numpy()
    d = stats.to_dict()
    assert d["clips"] == 9
    np.testing.assert_allclose(d["mean"], every.mean(0), atol=1e-12)
    np.testing.assert_allclose(d["std"], every.std(0, ddof=1), atol=1e-12)
    np.testing.assert_allclose(d["min"], every.min(0)) and np.testing.assert_allclose(d["max"], every.max(0))
    again = InputStats.from_dict(d).to_dict()
    assert again["clips"] == 9 and all(again[k] == pytest.approx(d[k]) for k in ("mean", "std", "min", "max"))


def test_clip_features_by_hand() -> None:
    video = torch.zeros(2, 3, 4, 5)  # T=2, C=3, H=4, W=5
    video[1, 0] = 1.0  # channel 0 of frame 1 is one: it changes in time, never in space
    f = clip_features(video)[0]
    assert f[0] == pytest.approx(0.5) and f[1] == 0 and f[3] == pytest.approx(np.std([0] * 20 + [1] * 20, ddof=1))
    assert f[6] == 0 and f[7] == pytest.approx(1 / 3)  # |frame 1 - frame 0| is 1 on one channel of three


def _explain_file(trained_run: Path, data_dir: Path, tmp: Path, video: Path, ckpt: Path | None = None) -> dict:
    from vidxai.pipelines.explain import explain

    ckpt = ckpt or trained_run / "checkpoints" / "best.ckpt"
    explain(compose_cfg("explain", tmp, [f"ckpt={ckpt}", "logger=none", f"video={video}"], data_dir=data_dir))
    return json.loads((tmp / "run" / "summary.json").read_text())


def test_explain_says_when_a_clip_is_unlike_the_training_data(trained_run: Path, data_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    stats = torch.load(ckpt, map_location="cpu", weights_only=True)["input_stats"]
    assert stats["features"] == list(FEATURES) and stats["clips"] > 0
    own = sorted(data_dir.rglob("*.avi"))[0]  # a clip of the training data set
    like = _explain_file(trained_run, data_dir, tmp_path / "own", own)
    assert like["training_data"]["status"] == "like", like["training_data"]
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.avi"  # every pixel random: far more detail and change than any training clip
    write_video(noise, rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8), fps=8)
    capsys.readouterr()
    unlike = _explain_file(trained_run, data_dir, tmp_path / "noise", noise)
    check = unlike["training_data"]
    assert check["status"] == "unlike" and "spatial_detail" in {o["statistic"] for o in check["outside"]}
    assert "warning: the clip is unlike the training data" in capsys.readouterr().out
    assert (tmp_path / "noise" / "run" / "heatmaps.png").is_file()  # and still explained
    old = tmp_path / "old.ckpt"  # a checkpoint written before the statistics were recorded
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved.pop("input_stats")
    torch.save(saved, old)
    unknown = _explain_file(trained_run, data_dir, tmp_path / "old", noise, ckpt=old)
    assert unknown["training_data"]["status"] == "unknown"
    assert "cannot be checked" in unknown["training_data"]["message"]


def test_smooth_gradients_are_judged_by_the_same_rule() -> None:
    """A clip is unlike only when a statistic is outside the widened range and 4 standard deviations away."""
    stats = InputStats()
    base = torch.zeros(10, len(FEATURES), dtype=torch.float64)
    base[:, :] = torch.linspace(0, 1, 10)[:, None]  # every statistic spans 0..1 over 10 training clips
    stats.update(base)
    d = stats.to_dict()
    grey = torch.zeros(4, 3, 8, 8)  # all statistics 0: inside the range
    assert compare_with_training(d, grey)["status"] == "like"
    bright = torch.full((4, 3, 8, 8), 3.0)  # channel means 3: beyond 1 + 0.25 and > 4 std (std ~0.34)
    out = compare_with_training(d, bright)
    assert out["status"] == "unlike" and {o["statistic"] for o in out["outside"]} == {"mean_c0", "mean_c1", "mean_c2"}
    assert compare_with_training({}, grey)["status"] == "unknown"
