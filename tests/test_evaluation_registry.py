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


# ---------------------------------------------------------------------------- curves and method families
def test_every_registered_curve_is_well_formed() -> None:
    """Each curve has a unit, an axis and a label; a per-method curve's score is a registered perturbation
    metric whose reference is a method-independent curve of the same unit; the AOPC keys are unique."""
    from vidxai.evaluation.curves import CURVES, UNITS, order_scores

    scores = [c.score for c in CURVES.values()]
    assert len(set(scores)) == len(scores) and not set(order_scores().values()) & set(METRICS)
    for c in CURVES.values():
        assert c.unit in UNITS and c.axis and c.label.strip(), c
        if c.per_method:
            ref = CURVES[c.reference]
            assert not ref.per_method and ref.unit == c.unit, c
            assert METRICS[c.score].family == "perturbation", c
        else:
            assert c.reference is None and c.score not in METRICS, c


def test_a_new_curve_is_one_registration() -> None:
    """A curve registered by a user is computed by the runner, averaged per method, in the per-video rows and
    ``orders`` (a reference) or scored as a metric (a per-method curve), and drawn, with no other edit."""
    from vidxai.evaluation import curves
    from vidxai.viz.evaluation import evaluation_figure

    try:
        curves.register_curve("frame_middle_first", unit="frame", score="frame_aopc_middle_first",
                              label="middle frame first", order=lambda o: np.argsort(
                                  np.abs(np.arange(o.shape[0]) - o.shape[0] // 2), kind="stable"))
        curves.register_curve("frame_least_first_sq", unit="frame", per_method=True, score="frame_aopc_sq",
                              reference="frame_middle_first", label="squared map, least first", better="higher",
                              order=lambda o: np.argsort((o.pixel ** 2).reshape(o.shape[0], -1).sum(1), kind="stable"),
                              metric={"label": "squared AOPC", "direction": "lower"})
        clips = [EvalClip(torch.randn(T, 3, H, H, generator=torch.Generator().manual_seed(i)), f"v{i}")
                 for i in range(2)]
        res = evaluate(NETS["convlstm"], clips, ["saliency", "random"],
                       EvalSettings(mprt_videos=0, randomisation_videos=0, n_boot=50))
        for name in ("saliency", "random"):
            assert len(res["curves"][name]["frame_middle_first"]) == T + 1
            assert len(res["curves"][name]["frame_least_first_sq"]) == T + 1
            assert np.isfinite(res["methods"][name]["frame_aopc_sq"])
        assert np.isfinite(res["orders"]["frame_aopc_middle_first"])
        assert {"frame_aopc_middle_first", "frame_aopc_sq"} <= set(res["rows"][0])
        assert res["metrics"]["frame_aopc_sq"]["direction"] == "lower"
        fig = evaluation_figure(res)
        assert any(ax.get_title().startswith("squared map, least first") for ax in fig.axes)
    finally:
        METRICS.pop("frame_aopc_sq", None)
        curves.CURVES.pop("frame_least_first_sq", None)
        curves.CURVES.pop("frame_middle_first", None)


def test_method_families_give_every_method_a_colour_and_line() -> None:
    """Every registered method (and every LRP rule) has a family with a colour map or colour; a method of a family
    nobody registered gets its own colour map, not another family's; the random map is a reference."""
    from matplotlib import colormaps
    from matplotlib.colors import is_color_like

    from vidxai.evaluation.methods import family_of
    from vidxai.evaluation.registry import METHOD_FAMILIES, MethodSpec, register_method

    for name in set(METHODS) | set(RULES):
        fam = family_of(name)
        assert fam.colours in colormaps or is_color_like(fam.colours), (name, fam)
        assert fam.line in ("-", "--", ":", "-."), (name, fam)
    assert family_of("random").reference and not family_of("epsilon").reference
    used = {f.colours for f in METHOD_FAMILIES.values()}
    try:
        register_method("toy_family_method", family="toy_new_family", plain=True)(lambda net: None)
        fam = family_of("toy_family_method")
        assert fam.name == "toy_new_family" and fam.colours in colormaps and fam.colours not in used
        assert isinstance(METHODS["toy_family_method"], MethodSpec) and METHODS["toy_family_method"].label is None
        register_method("toy_no_family", plain=True)(lambda net: None)  # no family given: "other", own colours
        assert family_of("toy_no_family").name == "other" and family_of("toy_no_family").colours in colormaps
    finally:
        METHODS.pop("toy_no_family", None)
        METHODS.pop("toy_family_method", None)
        METHOD_FAMILIES.pop("toy_new_family", None)


def test_readme_names_every_registered_method_and_the_recommended_sets() -> None:
    """The README's method list is the user's view of the registry: every registered method and every method of
    the recommended sets is named there (in backticks), so the list cannot fall behind the code."""
    from pathlib import Path

    from vidxai.evaluation.methods import RECOMMENDED, RECOMMENDED_ATTENTION

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [n for n in (*METHODS, *RECOMMENDED, *RECOMMENDED_ATTENTION) if f"`{n}`" not in readme]
    assert not missing, f"README.md does not name the registered method(s) {missing}"
