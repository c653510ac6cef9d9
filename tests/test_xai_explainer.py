"""VideoLRP end to end: conservation, sanity signs, invariants (model untouched, determinism, chunks)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from vidxai.evaluation.metrics import mass_in_box, pointing_game
from vidxai.models import VGG16LSTM, ConvLSTM, Stage
from vidxai.xai import RULES, Explanation, VideoLRP


@functools.cache
def _vgg_lstm() -> VGG16LSTM:
    """A float64 VGG16+LSTM with random non-zero biases everywhere (built once; tests must not modify it)."""
    torch.manual_seed(0)
    model = VGG16LSTM(4, hidden_size=8, dropout=0.5).double().eval()
    with torch.no_grad():
        for m in model.encoder.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)
    return model


def _zero_biases(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
    return model


def _clip(t: int = 3, size: int = 32, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (t, 3, size, size) if batch is None else (batch, t, 3, size, size)
    return torch.randn(shape, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------------------ conservation
def test_vgg16_lstm_pixel_relevance_sums_to_target_logit_without_biases() -> None:
    model = _zero_biases(_vgg_lstm())
    explainer = VideoLRP(model, "z", lstm_eps=1e-12)
    clip = _clip()
    for target in (0, 3):
        expl = explainer.explain(clip, target=target)
        logit = float(model(clip[None])[0, target].detach())
        assert abs(logit) > 1e-6
        assert expl.total() == pytest.approx(logit, rel=1e-4)
        assert expl.frame.sum().item() == pytest.approx(logit, rel=1e-4)
        assert float(expl.feature.sum()) == pytest.approx(logit, rel=1e-6)  # the LSTM part alone


def test_convlstm_pixel_relevance_sums_to_target_logit_without_biases() -> None:
    torch.manual_seed(1)
    model = _zero_biases(ConvLSTM(3, hidden_channels=(4, 3), stem_channels=5).double().eval())
    clip = _clip(t=4, size=16)
    expl = VideoLRP(model, "z", lstm_eps=1e-12).explain(clip, target=1)
    logit = float(model(clip[None])[0, 1].detach())
    assert abs(logit) > 1e-6
    assert expl.total() == pytest.approx(logit, rel=1e-4)
    assert expl.feature.shape == (4, 5)


def test_bias_factor_one_conserves_the_recurrent_part_with_biases() -> None:
    model = _vgg_lstm()
    clip = _clip()
    out = VideoLRP(model, "epsilon", bias_factor=1)._propagate(clip[None], target=2)
    total = out["feature"].sum() + sum(r.sum() for r in out["initial"]["h0"] + out["initial"]["c0"])
    assert float(total) == pytest.approx(float(out["logits"][0, 2]), rel=1e-10)


def test_convergence_delta_is_sum_minus_target_logit() -> None:
    model = _vgg_lstm()
    clips = _clip(batch=2)
    explainer = VideoLRP(model, "epsilon")
    assert explainer.has_convergence_delta()
    rel, delta = explainer.attribute(clips, target=[1, 2], return_convergence_delta=True)
    logits = model(clips).detach()
    expected = rel.flatten(1).sum(1) - logits[torch.arange(2), torch.tensor([1, 2])]
    torch.testing.assert_close(delta, expected)
    assert rel.shape == clips.shape


# ------------------------------------------------------------------------------ sanity
def test_zero_frame_gets_zero_relevance_under_z() -> None:
    clip = _clip()
    clip[1] = 0.0
    expl = VideoLRP(_vgg_lstm(), "z").explain(clip)
    assert torch.count_nonzero(expl.pixel[1]) == 0
    assert expl.pixel[0].abs().sum() > 0 and expl.pixel[2].abs().sum() > 0


class _ColourToy(nn.Module):
    """Two classes by hand: class 0 = "more red than green", class 1 = the opposite."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, 1, bias=False)
        self.encoder = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.lstm = nn.LSTM(2, 2, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(2, 2, bias=False))
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0] = 1.0  # feature 0 = red
            conv.weight[1, 1] = 1.0  # feature 1 = green
            for p in self.lstm.parameters():
                p.zero_()
            self.lstm.bias_ih_l0[0:2] = 10.0  # input gate open
            self.lstm.bias_ih_l0[6:8] = 10.0  # output gate open
            self.lstm.weight_ih_l0[4:6] = 4.0 * torch.eye(2)  # g = tanh(4 x)
            self.head[1].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        feats = self.encoder(x.flatten(0, 1)).reshape(b, t, -1)
        return self.head(self.lstm(feats)[0][:, -1])

    def explain_stages(self) -> tuple[Stage, ...]:  # the explainer contract (vidxai.models.contract)
        return (Stage("encoder", "frames", self.encoder), Stage("lstm", "recurrent", self.lstm),
                Stage("head", "head", self.head))


def test_target_swap_flips_the_sign_pattern_on_a_hand_built_toy() -> None:
    clip = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    clip[:, 0, :, :6] = 1.0  # red on the left three quarters
    clip[:, 1, :, 6:] = 1.0  # green on the right quarter
    model = _ColourToy().double().eval()
    explainer = VideoLRP(model, "z")
    assert explainer.explain(clip).target == 0  # more red: class 0 predicted
    for target, red_sign in ((0, 1.0), (1, -1.0)):
        expl = explainer.explain(clip, target=target)
        red, green = expl.pixel[:, :, :6], expl.pixel[:, :, 6:]
        assert torch.all(torch.sign(red) == red_sign)
        assert torch.all(torch.sign(green) == -red_sign)
        assert torch.count_nonzero(expl.relevance[:, 2]) == 0  # blue is absent
        assert torch.all(torch.sign(expl.frame) == torch.sign(expl.logits[target]))


# ------------------------------------------------------------------------------ invariants
_HOOK_KINDS = ("forward", "forward_pre", "backward", "backward_pre")


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "hooks": [
            tuple(len(getattr(m, f"_{kind}_hooks")) for kind in _HOOK_KINDS) for m in model.modules()
        ],
    }


def test_model_is_left_exactly_as_it_was_and_results_are_deterministic() -> None:
    torch.manual_seed(2)
    model = VGG16LSTM(3, hidden_size=6, batch_norm=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    model.train()  # explain must use eval semantics without switching the caller's modes
    model.lstm.weight_hh_l0.requires_grad_(False)
    model.head.register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    clip = torch.randn(3, 3, 32, 32)
    for rule in ("epsilon", "alpha_beta"):
        explainer = VideoLRP(model, rule)
        first = explainer.explain(clip, target=1)
        second = explainer.explain(clip, target=1)
        assert torch.equal(first.relevance, second.relevance)
        after = _snapshot(model)
        assert after["modes"] == before["modes"] and after["grad"] == before["grad"]
        assert after["hooks"] == before["hooks"]
        assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(first.logits, model(clip[None])[0])  # eval-mode logits


def test_clip_relevance_does_not_depend_on_its_batch() -> None:
    model = _vgg_lstm()
    clips = _clip(t=2, batch=3, seed=4)
    explainer = VideoLRP(model, "alpha_beta")
    batch = explainer.attribute(clips, target=[0, 1, 2])
    alone = explainer.attribute(clips[1:2], target=1)
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("rule", ["epsilon", "preset_b_flat"])
def test_chunked_cnn_stage_gives_the_same_result(rule: str) -> None:
    model = _vgg_lstm()
    clips = _clip(t=2, batch=2, seed=5)  # 4 frames in chunks of 3: uneven chunks
    full = VideoLRP(model, rule).attribute(clips, target=0)
    chunked = VideoLRP(model, rule, chunk_frames=3).attribute(clips, target=0)
    torch.testing.assert_close(chunked, full, rtol=1e-10, atol=1e-14)


def test_works_under_inference_mode_and_with_a_lightning_module() -> None:
    class Wrapper(pl.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

    torch.manual_seed(3)
    net = ConvLSTM(3, hidden_channels=(4,), stem_channels=4).eval()
    clip = torch.randn(3, 3, 16, 16)
    reference = VideoLRP(net, "gamma").explain(clip)
    with torch.inference_mode():
        inference_clip = clip.clone()
        expl = VideoLRP(Wrapper(net), "gamma").explain(inference_clip)
    assert torch.equal(expl.relevance, reference.relevance)
    assert expl.target == int(net(clip[None]).argmax())


def test_explanation_fields_and_numpy_export() -> None:
    expl = VideoLRP(_vgg_lstm(), "preset_a_flat").explain(_clip(), target=None)
    assert isinstance(expl, Explanation)
    assert expl.pixel.shape == (3, 32, 32) and expl.frame.shape == (3,) and expl.feature.shape == (3, 512)
    assert expl.logits.shape == (4,) and expl.target == int(expl.logits.argmax())
    assert expl.rule == "preset_a_flat"
    assert expl.initial_state["h0_l0"].shape == (8,) and expl.initial_state["c0_l0"].shape == (8,)
    arrays = expl.to_numpy()
    assert {"pixel", "frame", "feature", "logits", "target", "initial_h0_l0", "initial_c0_l0"} <= set(arrays)
    np.testing.assert_allclose(arrays["frame"], arrays["pixel"].sum((1, 2)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "lrp_magic"}, "unknown LRP rule"),
        ({"rule": "alpha_beta", "alpha": 1.5, "beta": 1.0}, "alpha - beta = 1"),
        ({"rule": "epsilon", "gamma": 0.2}, "no parameter(s) ['gamma']"),
        ({"lstm_eps": -1.0}, "lstm_eps must be a number > 0"),
        ({"bias_factor": 0.5}, "bias_factor must be 0 or 1"),
        ({"chunk_frames": 0}, "chunk_frames must be None or an integer >= 1"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        VideoLRP(_vgg_lstm(), **kwargs)
    assert message in str(err.value)


def test_bad_inputs_and_models_raise_one_clear_error() -> None:
    explainer = VideoLRP(_vgg_lstm(), "epsilon")
    with pytest.raises(ValueError, match="out of range for 4 classes"):
        explainer.explain(_clip(), target=7)
    with pytest.raises(ValueError, match="float"):
        explainer.attribute(torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one clip"):
        explainer.explain(_clip(batch=2))
    with pytest.raises(ValueError, match="cannot explain Linear"):
        VideoLRP(nn.Linear(3, 4))
    bad = ConvLSTM(3, hidden_channels=(4,), stem_channels=4)
    bad.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match=r"encoder\.1 \(Softmax\)"):
        VideoLRP(bad)


def test_every_rule_runs_on_both_models() -> None:
    torch.manual_seed(4)
    conv = ConvLSTM(2, hidden_channels=(3,), stem_channels=3).double().eval()
    for rule in RULES:
        for model, clip in ((conv, _clip(t=2, size=8)), (_vgg_lstm(), _clip(t=2))):
            expl = VideoLRP(model, rule).explain(clip)
            assert torch.isfinite(expl.relevance).all() and expl.pixel.abs().sum() > 0


# ------------------------------------------------------------------------------ metrics
def test_metrics_on_a_known_heatmap() -> None:
    pixel = np.zeros((2, 4, 4))
    pixel[0, 1, 1] = 3.0  # inside the box
    pixel[0, 3, 3] = 1.0  # outside
    pixel[1, 0, 0] = -2.0
    boxes = np.array([[0, 0, 2, 2], [np.nan] * 4])
    np.testing.assert_allclose(mass_in_box(pixel, boxes), [0.75, np.nan])
    np.testing.assert_allclose(pointing_game(pixel, boxes), [1.0, np.nan])
    with pytest.raises(ValueError, match="boxes"):
        mass_in_box(pixel, boxes[:1])
