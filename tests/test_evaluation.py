"""The explanation evaluation on hand-built models where the answer is known (CPU, tiny clips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vidxai.data.ground_truth import ClipTruth, clip_ground_truth
from vidxai.data.transforms import VideoTransform
from vidxai.evaluation import (
    EvalClip,
    EvalSettings,
    aopc,
    cascade_steps,
    default_methods,
    evaluate,
    flipping_curves,
    randomised_cascade,
    replacement,
    spearman,
)
from vidxai.evaluation.metrics import box_masks, mass_accuracy, pointing_accuracy, rank_accuracy, temporal_accuracy
from vidxai.evaluation.perturbation import frame_masks, region_masks, region_scores, region_steps
from vidxai.models.contract import Stage, run_stages
from vidxai.models.convlstm import ConvLSTM
from vidxai.xai import RULES


class _Last(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]


class _Flat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class HandBuilt(nn.Module):
    """``frames`` (flatten each frame) -> ``head`` (a linear read-out of all frames or of the last only)."""

    def __init__(self, t: int, c: int, h: int, w: int, last_only: bool, weights: torch.Tensor) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten())
        f = c * h * w
        inputs = f if last_only else t * f
        linear = nn.Linear(inputs, weights.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weights.reshape(weights.shape[0], -1)[:, :inputs])
            linear.bias.zero_()
        self.head = nn.Sequential(_Last(), linear) if last_only else nn.Sequential(_Flat(), linear)

    def explain_stages(self) -> tuple[Stage, ...]:
        return Stage("encoder", "frames", self.encoder), Stage("head", "head", self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.explain_stages(), x)


T, C, H, W = 6, 3, 8, 8


def _last_frame_model() -> HandBuilt:
    f = C * H * W
    weights = torch.stack([torch.full((f,), 0.1), torch.full((f,), -0.1)])  # class 0 likes bright last frames
    return HandBuilt(T, C, H, W, last_only=True, weights=weights).eval()


def _clips(n: int, seed: int = 0) -> list[EvalClip]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = 0.5 + torch.rand(T, C, H, W, generator=g)
        x[-1] += 1.0  # the last frame is brighter than the mean frame: removing it lowers the class-0 logit
        out.append(EvalClip(x, f"clip{i}"))
    return out


# ------------------------------------------------------------------------------ the known answers
@pytest.mark.parametrize(("method", "baseline"), [("occlusion", "mean"), ("input_x_gradient", "zero")])
def test_last_frame_model_morf_above_random_above_lerf(method: str, baseline: str) -> None:
    """A model that reads only the last frame: an exact method's MoRF removes it first, LeRF last."""
    res = evaluate(_last_frame_model(), _clips(6), [method], EvalSettings(baseline=baseline, mprt_videos=0))
    m = res["methods"][method]
    assert m["frame_aopc_morf"] > m["frame_aopc_random"] > m["frame_aopc_lerf"]
    # the only relevant frame is the last one: removing it first is what "last frame first" does too
    assert m["frame_aopc_morf"] == pytest.approx(m["frame_aopc_last_first"])
    assert m["frame_aopc_lerf"] == pytest.approx(m["frame_aopc_first_first"])
    drop = res["curves"][method]["frame_morf"][0] - res["curves"][method]["frame_morf"][1]
    assert drop > 0 and m["frame_aopc_morf"] == pytest.approx(drop * T / (T + 1))


def test_occlusion_first_morf_step_is_the_largest_single_frame_drop() -> None:
    g = torch.Generator().manual_seed(3)
    weights = torch.randn(2, T * C * H * W, generator=g) * torch.linspace(0.2, 1.0, T).repeat_interleave(C * H * W)
    model = HandBuilt(T, C, H, W, last_only=False, weights=weights).eval()
    x = torch.randn(T, C, H, W, generator=g)
    res = evaluate(model, [EvalClip(x, "one")], ["occlusion"], EvalSettings(mprt_videos=0))
    with torch.no_grad():
        f = model(x[None])[0]
        target = int(f.argmax())
        base = replacement(x, "mean")
        drops = []
        for t in range(T):
            y = x.clone()
            y[t] = base[t]
            drops.append(float(f[target] - model(y[None])[0, target]))
    curve = res["curves"]["occlusion"]["frame_morf"]
    assert curve[0] - curve[1] == pytest.approx(max(drops), rel=1e-5, abs=1e-6)


def test_aopc_of_a_constant_curve_is_zero_and_of_a_drop_its_mean() -> None:
    assert aopc([2.5] * 9) == 0.0
    assert aopc([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        aopc([])


def test_mass_and_rank_accuracy_inside_the_box_and_uniform() -> None:
    boxes = np.array([[1, 2, 5, 6], [0, 0, 4, 4], [np.nan] * 4])
    mask = box_masks(boxes, (8, 8))
    assert mask.sum() == 16 + 16 and not mask[2].any()
    inside = np.where(mask, np.random.default_rng(0).random(mask.shape) + 0.1, 0.0)
    inside[~mask] = -1.0  # negative relevance outside does not count as mass
    assert mass_accuracy(inside, mask) == 1.0 and rank_accuracy(inside, mask) == 1.0
    uniform = np.ones(mask.shape)
    share = mask.mean()
    assert mass_accuracy(uniform, mask) == pytest.approx(share)
    assert rank_accuracy(uniform, mask) == pytest.approx(share)  # ties: the expectation, not the first pixels
    assert pointing_accuracy(uniform, mask) == pytest.approx(16 / 64)
    point = np.zeros(mask.shape)
    point[0, 3, 2] = 5.0  # inside frame 0's box
    point[1, 7, 7] = 5.0  # outside frame 1's box
    point[1, 0, 0] = 1.0
    assert pointing_accuracy(point, mask) == pytest.approx(0.5)
    assert np.isnan(mass_accuracy(-uniform, mask))


def test_temporal_accuracy_counts_positive_frame_relevance_on_evidence() -> None:
    evidence = np.array([False, True, True, False])
    assert temporal_accuracy([0.0, 2.0, 1.0, -5.0], evidence) == 1.0
    assert temporal_accuracy([1.0, 1.0, 1.0, 1.0], evidence) == pytest.approx(0.5)
    assert np.isnan(temporal_accuracy([-1.0] * 4, evidence))


def test_ground_truth_boxes_follow_the_resize_and_centre_crop() -> None:
    transform = VideoTransform(crop_size=32)
    # source 64x64 -> decoded 40x40 (scale 0.625) -> centre crop 32 (offset 4)
    got = transform.eval_boxes([[16, 32, 48, 64]], source_size=(64, 64), decoded_size=(40, 40))
    np.testing.assert_allclose(got, [[10 - 4, 20 - 4, 30 - 4, 32]])  # y1 = 40 - 4 = 36 clipped to 32
    truth = {"boxes": [[0, 0, 8, 8]] * 4 + [[8, 8, 16, 16]] * 4, "evidence_frames": [5, 6]}
    clip = clip_ground_truth(truth, [1, 3, 5, 7], (16, 16), None, VideoTransform())
    np.testing.assert_allclose(clip.boxes[1], [0, 0, 8, 8])
    np.testing.assert_allclose(clip.boxes[2], [8, 8, 16, 16])
    assert clip.evidence.tolist() == [False, False, True, False]
    assert clip_ground_truth({"boxes": [[0, 0, 1, 1]]}, [0], (4, 4), None, VideoTransform()).evidence is None


def test_chance_levels_and_random_map_on_ground_truth() -> None:
    boxes = np.tile([[0.0, 0.0, 4.0, 8.0]], (T, 1))  # half of each 8x8 frame
    evidence = np.zeros(T, dtype=bool)
    evidence[[1, 2]] = True
    clips = [EvalClip(c.video, c.source, truth=ClipTruth(boxes, evidence)) for c in _clips(3)]
    res = evaluate(_last_frame_model(), clips, ["random", "input_x_gradient"],
                   EvalSettings(baseline="zero", mprt_videos=0))
    assert res["chance"]["mass_accuracy"] == pytest.approx(0.5)
    assert res["chance"]["temporal_accuracy"] == pytest.approx(2 / T)
    assert res["ground_truth_videos"]["temporal_accuracy"] == 3
    # the last-frame model puts everything on the last frame, which is no evidence frame
    assert res["methods"]["input_x_gradient"]["temporal_accuracy"] == 0.0
    assert abs(res["methods"]["random"]["mass_accuracy"] - 0.5) < 0.05


# ------------------------------------------------------------------------------ perturbation mechanics
def test_masks_replace_exactly_k_frames_and_the_scheduled_regions() -> None:
    m = frame_masks([2, 0, 1], (3, 4, 4))
    assert m.shape == (4, 3, 4, 4)
    assert [int(s.any(-1).any(-1).sum()) for s in m] == [0, 1, 2, 3] and bool(m[1, 2].all())
    counts = region_steps(3 * 2 * 2, 0.25, 0.5)
    assert counts == [0, 3, 6]
    r = region_masks(np.arange(12)[::-1], (3, 4, 3), 2, counts)  # 4x3 frames, 2x2 regions (border: 2x1)
    assert r.shape == (3, 3, 4, 3) and not r[0].any()
    assert bool(r[1, 2, 2:, 2:].all()) and int(r[1].sum()) == 2 + 4 + 2  # regions 11, 10, 9 of frame 2
    scores = region_scores(np.ones((1, 4, 3)), 2)
    np.testing.assert_allclose(scores, [[[4, 2], [4, 2]]])


def test_flipping_curves_batch_and_deduplicate() -> None:
    model = _last_frame_model()
    calls = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return model(x)

    x = _clips(1)[0].video
    base = replacement(x, "mean")
    masks = {"a": frame_masks(range(T), (T, H, W)), "b": frame_masks(range(T), (T, H, W)),
             "c": frame_masks(list(range(T))[::-1], (T, H, W))}
    one = flipping_curves(counted, x, base, 0, masks, batch_size=1)
    n_unique = len(calls)
    assert n_unique == 2 * (T + 1) - 2  # a == b; c shares the intact and the all-replaced clip
    calls.clear()
    many = flipping_curves(counted, x, base, 0, masks, batch_size=4)
    assert max(calls) <= 4 and sum(calls) == n_unique
    # a batch of 4 sums each logit's C*H*W float32 products (all of one sign) in another order than a batch of
    # 1 may: they differ by at most 2 (C*H*W - 1) u of the logit (u = 2**-24, Higham), 2.3e-5 here
    for k in masks:
        np.testing.assert_allclose(one[k], many[k], rtol=2 * C * H * W * 2.0**-24)
    with torch.no_grad():
        assert one["a"][0] == pytest.approx(float(model(x[None])[0, 0]))
        assert one["a"][-1] == pytest.approx(float(model(base[None])[0, 0]))


def test_per_frame_path_gives_the_logits_of_whole_clips() -> None:
    """With a per-frame CNN, distinct frames run once and only the later stages per clip: same logits."""
    torch.manual_seed(1)
    net = ConvLSTM(3, hidden_channels=(4,), stem_channels=4, dropout=0.0).eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    net = net.double()
    base = replacement(x, "blur", blur_sigma=1.0)
    counts = region_steps(4 * 2 * 2, 0.25, 1.0)
    rng = np.random.default_rng(0)
    masks = {"frames": frame_masks(rng.permutation(4), (4, 8, 8)),
             "regions": region_masks(rng.permutation(16), (4, 8, 8), 4, counts)}
    calls = []
    stem = net.encoder

    class Counting(nn.Module):
        def forward(self, y: torch.Tensor) -> torch.Tensor:
            calls.append(len(y))
            return stem(y)

    stages = (Stage("encoder", "frames", Counting()), *net.explain_stages()[1:])
    whole = flipping_curves(net, x, base, 1, masks, batch_size=3)
    per_frame = flipping_curves(net, x, base, 1, masks, batch_size=3, stages=stages)
    for k in masks:
        np.testing.assert_allclose(per_frame[k], whole[k], rtol=1e-10, atol=1e-12)
    n_clips = 5 + 5 - 2  # intact and all-replaced clips are shared by both curves
    assert sum(calls) < n_clips * 4  # far fewer CNN frames than clips x frames
    assert max(calls) <= 3 * 4


def test_replacement_values() -> None:
    x = torch.randn(4, 3, 8, 8)
    mean = replacement(x, "mean")
    torch.testing.assert_close(mean[2], x.mean(0))
    assert replacement(x, "zero").abs().sum() == 0
    blur = replacement(torch.ones(2, 3, 8, 8), "blur", blur_sigma=1.5)
    torch.testing.assert_close(blur, torch.ones(2, 3, 8, 8))  # a constant image stays constant
    with pytest.raises(ValueError, match="baseline"):
        replacement(x, "noise")


# ------------------------------------------------------------------------------ failures, all methods, MPRT
def test_a_failing_method_is_reported_and_skipped() -> None:
    res = evaluate(_last_frame_model(), _clips(2), ["grad_cam", "saliency"], EvalSettings(mprt_videos=0))
    # not applicable (no convolution): skipped with the reason, not an error
    assert res["methods"]["grad_cam"]["skipped"] and "Conv" in res["methods"]["grad_cam"]["reason"]
    assert "error" not in res["methods"]["grad_cam"]
    assert res["methods"]["saliency"]["videos"] == 2 and "error" not in res["methods"]["saliency"]
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(_last_frame_model(), _clips(1), ["nope"], EvalSettings())


def test_every_method_runs_on_a_convlstm_and_the_randomisation_test() -> None:
    torch.manual_seed(0)
    net = ConvLSTM(3, hidden_channels=(4,), stem_channels=4, dropout=0.0).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clips = [EvalClip(torch.randn(3, 3, 16, 16), f"c{i}") for i in range(2)]
    res = evaluate(net, clips, default_methods(), EvalSettings(ig_steps=4, mprt_videos=1, region_size=4))
    failed = {n: m["error"] for n, m in res["methods"].items() if "error" in m}
    assert not failed
    # the recurrent gate rules are methods of their own
    assert res["methods"]["epsilon/half"]["settings"]["lstm_rule"] == "half"
    assert res["methods"]["epsilon"]["settings"]["lstm_rule"] == "signal_take_all"
    assert "epsilon/half" not in default_methods(_last_frame_model())  # no recurrent stage: no gate rules
    assert res["mprt"]["steps"] == ["head", "cells", "encoder.0-2"]
    assert res["methods"]["random"]["mprt_spearman"] == [1.0, 1.0, 1.0]  # a map that ignores the model
    for name in RULES:
        assert len(res["methods"][name]["mprt_spearman"]) == 3
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the model was changed"
    assert set(res["curves"]["epsilon"]) == {"frame_morf", "frame_lerf", "frame_random", "frame_last_first",
                                             "frame_first_first", "region_morf", "region_random"}
    # method-independent orders: the same curve for every method
    assert res["curves"]["epsilon"]["frame_random"] == res["curves"]["saliency"]["frame_random"]


def test_cascade_goes_from_the_head_down_and_randomises_a_copy() -> None:
    from vidxai.models.vgg16_lstm import VGG16LSTM

    net = VGG16LSTM(2, hidden_size=4, batch_norm=True).eval()
    blocks = [s.name for s in cascade_steps(net)]
    assert blocks[:2] == ["head", "lstm"] and len(blocks) == 7  # VGG16's five conv blocks, top first
    assert blocks[2] == "encoder.34-43" and blocks[-1] == "encoder.0-6"
    layers = cascade_steps(net, "layer")
    assert len(layers) == 2 + 13 and all(isinstance(s.modules[1], nn.BatchNorm2d) for s in layers[2:])
    head_w = net.head[-1].weight.clone()
    conv_top = net.encoder[40].weight.clone()
    seen = []
    for name, model in randomised_cascade(net, seed=0, max_steps=3):
        seen.append(name)
        if name == "head":
            assert not torch.equal(model.head[-1].weight, head_w)
            assert torch.equal(model.encoder[40].weight, conv_top)
    assert seen == blocks[:3]
    assert not torch.equal(model.encoder[40].weight, conv_top)
    assert torch.equal(net.head[-1].weight, head_w) and torch.equal(net.encoder[40].weight, conv_top)


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 200).astype(float)
    b = a + rng.normal(0, 2, 200)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_summary_table_is_a_valid_wandb_table_with_missing_values() -> None:
    wandb = pytest.importorskip("wandb")
    from vidxai.evaluation.summary import markdown_table, summary_table

    res = evaluate(_last_frame_model(), _clips(1), ["saliency", "grad_cam", "random"], EvalSettings(mprt_videos=0))
    columns, rows = summary_table(res)
    assert "temporal_accuracy" not in columns  # no ground truth here: left out, with the reason
    assert "temporal evidence" in res["metrics"]["temporal_accuracy"]["left_out"]
    assert rows[1][-1].startswith("skipped") and all(v is None for v in rows[1][1:-1])  # no Grad-CAM layer
    table = wandb.Table(columns=columns, data=rows)
    assert len(table.data) == 3
    assert "grad_cam | skipped: " in markdown_table(res)
