"""Every registered attribution method and score, checked by property: a method or score registered later (and
every new LRP rule, which is a method too) is checked here without a test edit, and a broken one fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models_contract import tiny_config

from vidxai.data.ground_truth import ClipTruth
from vidxai.evaluation import METHODS, METRICS, EvalClip, EvalSettings, NotApplicable, build_method, evaluate
from vidxai.evaluation.registry import DIRECTIONS, FAMILIES
from vidxai.models import build_network
from vidxai.xai import RULES

T, H = 4, 16


def _nets() -> dict[str, torch.nn.Module]:
    """A recurrent CNN and a video transformer (attention methods apply to the second only)."""
    torch.manual_seed(0)
    cnn = build_network("convlstm", 3, hidden_channels=[4], stem_channels=4, dropout=0.0).eval()
    kwargs = {**tiny_config("videomae"), "num_frames": T, "image_size": H}
    return {"convlstm": cnn, "videomae": build_network("videomae", 3, **kwargs).eval()}


NETS = _nets()


@pytest.mark.parametrize("net_name", sorted(NETS))
@pytest.mark.parametrize("name", sorted(set(METHODS) | set(RULES)))
def test_every_registered_method_maps_a_clip_or_says_why_not(name: str, net_name: str) -> None:
    net = NETS[net_name]
    ctx = EvalSettings(ig_steps=4, batch_size=8).context()
    try:
        method = build_method(name, net, ctx)
    except NotApplicable as reason:  # skipped by the evaluation with this reason: one readable line
        assert str(reason).strip() and "\n" not in str(reason), (name, net_name, str(reason))
        return
    clip = torch.randn(T, 3, H, H, generator=torch.Generator().manual_seed(4))
    got = method(clip, 1, 7)
    assert got.shape == (T, H, H), (name, tuple(got.shape))
    assert torch.isfinite(got).all() and got.abs().max() > 0, name
    torch.testing.assert_close(method(clip, 1, 7), got)  # the same clip, class and key: the same map


def _truth(i: int) -> ClipTruth:
    boxes = np.tile(np.array([2.0, 2.0, 10.0, 10.0]), (T, 1))
    evidence = np.zeros(T, dtype=bool)
    evidence[i % T] = True
    return ClipTruth(boxes, evidence)


def test_every_registered_metric_is_well_formed_and_scored() -> None:
    """On clips with boxes and evidence frames and a randomisation pass, every score applies: each one is a
    finite number for every method (or ``None`` for every one with a reason the runner can state)."""
    for metric in METRICS.values():
        assert metric.direction in DIRECTIONS and metric.family in FAMILIES and metric.label.strip(), metric
        assert metric.needs in (None, "boxes", "evidence"), (metric.name, metric.needs)
    g = torch.Generator().manual_seed(1)
    clips = [EvalClip(torch.randn(T, 3, H, H, generator=g), f"v{i}", i % 3, _truth(i)) for i in range(3)]
    settings = EvalSettings(mprt_videos=1, randomisation_videos=2, mprt_steps=2, region_size=4, n_boot=50,
                            smprt_samples=2)
    result = evaluate(NETS["convlstm"], clips, ["epsilon", "saliency", "random"], settings)
    for name, scores in result["methods"].items():
        assert "error" not in scores, (name, scores.get("error"))
        for metric in METRICS:
            value = scores[metric]
            assert isinstance(value, float) and np.isfinite(value), (name, metric, value)
