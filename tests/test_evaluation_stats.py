"""Paired statistics, video selection and the metric/method registries of the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidxai.evaluation import METRICS, EvalClip, EvalSettings, evaluate, register_method, register_metric
from vidxai.evaluation.registry import METHODS
from vidxai.evaluation.selection import named_videos, stratified
from vidxai.evaluation.stats import compare_with_best, holm
from vidxai.evaluation.summary import markdown_table, summary_table


def test_holm_matches_statsmodels_style_step_down() -> None:
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert adj["d"] is None


def test_compare_with_best_ties_and_significance_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    n = 30
    best = rng.normal(1.0, 0.1, n)
    noise = rng.normal(0, 0.01, n)
    noise -= noise.mean() + 1e-4  # a mean just below the best, no systematic difference
    values = {"best": best, "same": best + noise, "worse": best - 0.5 + rng.normal(0, 0.05, n),
              "short": np.r_[best[:3] - 1, [np.nan] * (n - 3)]}
    top, comp = compare_with_best(values, True, n_boot=500, seed=1)
    assert top == "best" and comp["best"]["tied_with_best"] and comp["best"]["diff"] == 0.0
    assert comp["same"]["tied_with_best"]
    w = comp["worse"]
    assert not w["tied_with_best"] and w["ci_low"] < w["diff"] < w["ci_high"] < 0
    raw = stats.wilcoxon(values["worse"] - best).pvalue
    assert w["p_raw"] == pytest.approx(raw) and w["p"] == pytest.approx(min(1.0, 3 * raw))  # Holm: smallest p x 3
    # three paired videos can never be significant (exact Wilcoxon p >= 0.25): tied, honestly
    assert comp["short"]["videos"] == 3 and comp["short"]["tied_with_best"]
    again = compare_with_best(values, True, n_boot=500, seed=1)[1]
    assert again["worse"]["ci_low"] == w["ci_low"]  # deterministic by seed
    lower = compare_with_best(values, False, n_boot=200, seed=1)[0]
    assert lower in ("worse", "short")


def test_stratified_limit_is_round_robin_over_classes_and_seeded() -> None:
    labels = [0] * 10 + [1] * 10 + [2] * 2 + [3] * 10
    picked = stratified(labels, 8, seed=0)
    assert [labels[i] for i in picked] == [0, 1, 2, 3, 0, 1, 2, 3]
    nine = stratified(labels, 9, seed=0)
    assert [labels[i] for i in nine[8:]] == [0]  # class 2 ran out after 2: the others go on
    assert stratified(labels, 8, seed=0) == picked and stratified(labels, 8, seed=1) != picked
    assert sorted(stratified(labels, None)) == list(range(len(labels)))
    with pytest.raises(ValueError):
        stratified(labels, 0)


def test_named_videos_by_file_name_stem_or_path() -> None:
    paths = ["/d/a/v_one_g01.avi", "/d/b/v_two_g01.avi", "/d/b/v_two_g01.mp4"]
    assert named_videos(paths, ["v_one_g01", "/d/b/v_two_g01.mp4"]) == [0, 2]
    assert named_videos(paths, ["b/v_two_g01.avi"], root="/d") == [1]
    with pytest.raises(ValueError, match="no video of the split matches"):
        named_videos(paths, ["nope.avi"])
    with pytest.raises(ValueError, match="match several"):
        named_videos(paths, ["v_two_g01"])


# ------------------------------------------------------------------------------ registries
def _model() -> torch.nn.Module:
    from tests.test_evaluation import _last_frame_model

    return _last_frame_model()


def _clips(n: int) -> list[EvalClip]:
    from tests.test_evaluation import _clips as clips

    return clips(n)


def test_a_registered_metric_and_method_reach_json_table_and_csv_rows() -> None:
    @register_metric("last_frame_share", label="relevance on the last frame", direction="higher",
                     family="perturbation", chance=lambda s: 1 / len(s.pixel))
    def last_frame_share(s) -> float:  # noqa: ANN001
        pos = np.clip(s.frame_scores, 0, None)
        return float(pos[-1] / pos.sum()) if pos.sum() > 0 else None

    def build_last_only(net):  # noqa: ANN001, ANN202 (a plain builder as other helpers write them)
        def fn(clip: torch.Tensor, target: int) -> torch.Tensor:
            out = torch.zeros(clip.shape[0], *clip.shape[2:])
            out[-1] = 1.0
            return out

        return fn

    def build_refusing(net):  # noqa: ANN001, ANN202
        raise TypeError("needs attention layers")

    register_method("last_only", family="toy", plain=True)(build_last_only)
    register_method("refuses", family="attention", plain=True, default=False)(build_refusing)
    try:
        res = evaluate(_model(), _clips(8), ["last_only", "refuses", "input_x_gradient", "random"],
                       EvalSettings(baseline="zero", mprt_videos=0, n_boot=200))
        assert res["methods"]["last_only"]["last_frame_share"] == 1.0
        assert res["metrics"]["last_frame_share"]["chance"] == pytest.approx(1 / 6)
        assert res["methods"]["refuses"] == {"skipped": True, "reason": "needs attention layers"}
        assert "last_frame_share" in summary_table(res)[0]
        assert "last_frame_share ↑" in markdown_table(res)
        assert {"last_frame_share", "frame_aopc_morf"} <= set(res["rows"][0])
        comp = res["comparisons"]["last_frame_share"]
        assert set(comp) == {"last_only", "input_x_gradient", "random"}
        assert comp["random"]["tied_with_best"] is False  # 8 videos, every one worse: p = 2/256, x2 (Holm)
    finally:
        METRICS.pop("last_frame_share")
        METHODS.pop("last_only")
        METHODS.pop("refuses")


def test_result_reports_comparisons_verdict_and_timings() -> None:
    res = evaluate(_model(), _clips(8), ["occlusion", "input_x_gradient", "saliency", "random"],
                   EvalSettings(baseline="mean", mprt_videos=2, smprt_samples=2, n_boot=200))
    comp = res["comparisons"]["frame_aopc_morf"]
    assert set(comp["occlusion"]) >= {"diff", "ci_low", "ci_high", "p", "tied_with_best"}
    best = res["metrics"]["frame_aopc_morf"]["best"]
    assert comp[best]["diff"] == 0.0 and comp[best]["tied_with_best"]
    m = res["methods"]["occlusion"]
    lo, hi = m["ci"]["frame_aopc_morf"]
    assert lo <= m["frame_aopc_morf"] <= hi
    # the random map ignores the model: its MPRT Spearman stays 1, its eMPRT 0, its sMPRT 1
    assert res["methods"]["random"]["mprt"] == pytest.approx(1.0)
    assert res["methods"]["random"]["emprt"] == pytest.approx(0.0)
    assert res["methods"]["random"]["smprt"] == pytest.approx(1.0)
    assert res["methods"]["random"]["input_control"] == pytest.approx(0.0, abs=0.1)
    line = res["verdict"]["perturbation"][0]
    assert line.startswith(f"frame flipping AOPC, most relevant first: {best} best")
    # occlusion removes the only relevant frame first on all 8 videos: significantly better than random
    assert res["vs_random"]["frame_aopc_morf"]["occlusion"]["p"] < 0.05
    assert "occlusion" not in line.split("not distinguishable from random")[1]
    assert set(res["timing"]["methods"]) == {"occlusion", "input_x_gradient", "saliency", "random"}
    assert {"sMPRT", "statistics", "perturbation_and_ground_truth"} <= set(res["timing"]["tests"])
    text = markdown_table(res)
    assert "**Verdict**" in text and "Left out:" in text and "↑ higher is better" in text


def test_pipeline_selection_records_how_and_refuses_bad_names() -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from vidxai.errors import UserError
    from vidxai.pipelines.evaluate import select_videos

    entries = [SimpleNamespace(record=SimpleNamespace(path=f"/d/c{i % 4}/v{i}.avi", label=i % 4)) for i in range(12)]
    dataset = type("D", (), {"entries": entries, "__len__": lambda self: len(entries)})()
    picked, how = select_videos(OmegaConf.create({"limit": 4, "seed": 0}), dataset, "test")
    assert sorted(entries[i].record.label for i in picked) == [0, 1, 2, 3] and "stratified" in how
    picked, how = select_videos(OmegaConf.create({"videos": ["v3.avi", "v5"]}), dataset, "test")
    assert picked == [3, 5] and how == "2 named videos"
    with pytest.raises(UserError, match="v99"):
        select_videos(OmegaConf.create({"videos": ["v99"]}), dataset, "test")


def test_mprt_axis_names_layers_in_words() -> None:
    from vidxai.viz.evaluation import readable_steps

    steps = ["head", "lstm", "encoder.34-43", "encoder.0-6"]
    assert readable_steps(steps) == ["classifier head", "recurrent part (lstm)", "conv block 2 of 2",
                                     "conv block 1 of 2"]
    assert readable_steps(["head", "backbone.layer4"]) == ["classifier head", "layer4"]


# ----------------------------------------------------------------------------- power before verdict
def test_smallest_p_is_the_exact_wilcoxon_bound_times_holm() -> None:
    from scipy.stats import wilcoxon

    from vidxai.evaluation.stats import smallest_p, videos_needed

    for n in (4, 6, 8, 10):  # every difference of one sign: the exact test's smallest two-sided p
        exact = wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue
        assert smallest_p(n) == pytest.approx(exact) and smallest_p(n, 17) == pytest.approx(min(1, 17 * exact))
    assert (videos_needed(17, 0.05), videos_needed(6, 0.05), videos_needed(1, 0.05)) == (10, 8, 6)
    assert videos_needed(17, 0.01) == 12  # computed, not a constant
    for m, alpha in ((17, 0.05), (6, 0.05), (3, 0.1)):
        k = videos_needed(m, alpha)
        assert smallest_p(k, m) < alpha <= smallest_p(k - 1, m)


def _fake_result(n: int, methods: int, random_best: bool = False) -> dict:
    """A result dict as :func:`aggregate` writes it: ``methods`` methods, one score, ``n`` videos each."""
    from vidxai.evaluation.stats import compare_with_best

    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(methods - 1)] + ["random"]
    values = {k: rng.normal(1.0 if k != "random" else 0.0, 0.01, n) for k in names}
    if random_best:
        values["random"] += 5.0
    best, comp = compare_with_best(values, True, 100, 0)
    _, vs_random = compare_with_best(values, True, 100, 1, against="random")
    metric = {"label": "frame flipping AOPC, most relevant first", "direction": "higher", "family": "perturbation",
              "description": "", "chance": None, "best": best}
    mean = {k: {"frame_aopc_morf": float(v.mean()), "ci": {"frame_aopc_morf": [None, None]}} for k, v in values.items()}
    return {"settings": {"videos": n, "alpha": 0.05}, "metrics": {"frame_aopc_morf": metric}, "methods": mean,
            "comparisons": {"frame_aopc_morf": comp}, "vs_random": {"frame_aopc_morf": vs_random}}


def test_verdict_says_first_when_the_videos_are_too_few() -> None:
    from vidxai.evaluation.summary import verdict

    few = _fake_result(8, 18)  # 17 comparisons: 17 x 2/2^8 = 0.13 >= 0.05
    few["verdict"] = verdict(few)
    first = next(iter(few["verdict"].items()))
    assert first[0] == "power" and "Too few videos" in first[1][0] and "limit=10 could" in first[1][0]
    assert "17 comparisons" in first[1][0] and "0.133" in first[1][0]
    assert "too few videos (n=8, needs 10)" in few["verdict"]["perturbation"][0]
    text = markdown_table(few)
    assert text.startswith("**Too few videos"), "said first, above the tables"
    rows = [line for line in text.splitlines() if line.startswith("| m") or line.startswith("| random")]
    assert rows and not any("**" in r for r in rows), "nothing bold when nothing can differ"
    assert "too few videos (n=8; needs 10)" in text
    enough = _fake_result(12, 18)  # 17 x 2/2^12 = 0.008: random differs from the others
    enough["verdict"] = verdict(enough)
    assert "power" not in enough["verdict"] and "tied with it" in enough["verdict"]["perturbation"][0]
    assert any("**" in r for r in markdown_table(enough).splitlines() if r.startswith("| m"))
    fewer_methods = _fake_result(8, 7)  # 6 comparisons: 6 x 2/2^8 = 0.047 < 0.05
    assert "power" not in verdict(fewer_methods)


def test_random_best_is_said_in_words() -> None:
    from vidxai.evaluation.summary import verdict

    res = _fake_result(12, 5, random_best=True)
    line = verdict(res)["perturbation"][0]
    assert "no method beats the random map" in line and "random best" not in line
