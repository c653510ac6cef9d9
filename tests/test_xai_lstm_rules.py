"""The recurrent gate rules (``lstm_rule``): a hand-computed cell per rule, conservation, validation.

The oracle below is plain Python arithmetic on floats (``math``), written from the rule definitions in
``vidxai.xai.recurrent``'s docstring, independent of the engine's tensor code.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidxai.models import VGG16LSTM, ConvLSTM, ConvLSTMCell
from vidxai.xai import VideoLRP
from vidxai.xai.cnn import compile_sequential
from vidxai.xai.recurrent import (
    LSTM_RULES,
    convlstm_layers,
    head_forward,
    head_relevance,
    lstm_layers,
    recurrent_forward,
    recurrent_relevance,
)

# one cell, one step: x (2,), h0 = c0 scalars (hidden size 1); weight rows in PyTorch's gate order i, f, g, o
W_X = [[0.7, -0.4], [0.2, 0.5], [-0.9, 0.6], [0.3, 0.8]]
W_H = [0.5, -0.3, 0.4, -0.6]
BIAS = [0.1, -0.2, 0.05, 0.3]
X, H0, C0 = [0.8, -1.1], 0.6, -0.7
R_H1 = 1.7  # relevance arriving at h_1
EPS = 1e-3


def _sign(v: float) -> float:
    return 1.0 if v >= 0 else -1.0


def _split(rule: str, r: float, gate: float, signal: float) -> tuple[float, float]:
    """(R_gate, R_signal) of ``gate * signal`` with relevance ``r``."""
    if rule == "signal_take_all":
        return 0.0, r
    if rule == "half":
        return r / 2, r / 2
    share = abs(gate) / (abs(gate) + abs(signal))
    return share * r, (1 - share) * r


def hand_cell(rule: str, bias_factor: float) -> tuple[float, list[float], float, float]:
    """h_1 and the relevance of x (2,), h0 and c0 for relevance ``R_H1`` at h_1."""
    pre = [W_X[k][0] * X[0] + W_X[k][1] * X[1] + W_H[k] * H0 + BIAS[k] for k in range(4)]
    sig = [1 / (1 + math.exp(-p)) for p in pre]
    i, f, g, o = sig[0], sig[1], math.tanh(pre[2]), sig[3]
    c1 = f * C0 + i * g
    h1 = o * math.tanh(c1)
    # h_1 = o * tanh(c_1): the signal part goes through tanh to c_1 unchanged
    r_o, r_c1 = _split(rule, R_H1, o, math.tanh(c1))
    # c_1 = f*c0 + i*g: epsilon rule with two input units (bias_factor spreads the stabiliser's share)
    s = r_c1 / (c1 + EPS * _sign(c1))
    absorbed = bias_factor * EPS * _sign(c1) * s / 2
    r_c0 = f * C0 * s + absorbed
    r_ig = i * g * s + absorbed
    r_i, r_g = _split(rule, r_ig, i, g)
    # the gates' affine maps from [x; h0]: epsilon rule with three input units; the forget gate gets none
    r_gate = [r_i, 0.0, r_g, r_o]
    msg = [r_gate[k] / (pre[k] + EPS * _sign(pre[k])) for k in range(4)]
    share = bias_factor * sum((BIAS[k] + EPS * _sign(pre[k])) * msg[k] for k in range(4)) / 3
    r_x = [X[j] * sum(W_X[k][j] * msg[k] for k in range(4)) + share for j in range(2)]
    r_h0 = H0 * sum(W_H[k] * msg[k] for k in range(4)) + share
    return h1, r_x, r_h0, r_c0


def _lstm_cell() -> nn.LSTM:
    lstm = nn.LSTM(2, 1, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor(W_X, dtype=torch.float64))
        lstm.weight_hh_l0.copy_(torch.tensor(W_H, dtype=torch.float64)[:, None])
        lstm.bias_ih_l0.copy_(torch.tensor(BIAS, dtype=torch.float64) - 0.25)  # b_ih + b_hh = BIAS
        lstm.bias_hh_l0.fill_(0.25)
    return lstm


def _conv_cell() -> nn.ModuleList:
    cell = ConvLSTMCell(2, 1, kernel_size=1).double()
    with torch.no_grad():
        weight = torch.cat([torch.tensor(W_X, dtype=torch.float64), torch.tensor(W_H, dtype=torch.float64)[:, None]], 1)
        cell.conv.weight.copy_(weight[:, :, None, None])
        cell.conv.bias.copy_(torch.tensor(BIAS, dtype=torch.float64))
    return nn.ModuleList([cell])


@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
@pytest.mark.parametrize("rule", LSTM_RULES)
@pytest.mark.parametrize("kind", ["lstm", "convlstm"])
def test_single_cell_equals_hand_computation(kind: str, rule: str, bias_factor: float) -> None:
    h1, r_x, r_h0, r_c0 = hand_cell(rule, bias_factor)
    spatial = (1, 1) if kind == "convlstm" else ()
    layers = lstm_layers(_lstm_cell()) if kind == "lstm" else convlstm_layers(_conv_cell())
    x = torch.tensor(X, dtype=torch.float64).reshape(1, 1, 2, *spatial)
    h0 = [torch.full((1, 1, *spatial), H0, dtype=torch.float64)]
    c0 = [torch.full((1, 1, *spatial), C0, dtype=torch.float64)]
    hidden, traces = recurrent_forward(layers, x, h0, c0)
    assert float(hidden.flatten()[0]) == pytest.approx(h1, rel=1e-13)
    r_out = torch.full_like(hidden, R_H1)
    e_x, e_h0, e_c0 = recurrent_relevance(layers, traces, r_out, EPS, bias_factor, rule)
    assert e_x.flatten().tolist() == pytest.approx(r_x, rel=1e-12, abs=1e-14)
    assert float(e_h0[0].flatten()[0]) == pytest.approx(r_h0, rel=1e-12, abs=1e-14)
    assert float(e_c0[0].flatten()[0]) == pytest.approx(r_c0, rel=1e-12, abs=1e-14)
    if bias_factor == 1.0:  # the hand computation conserves too
        assert sum(r_x) + r_h0 + r_c0 == pytest.approx(R_H1, rel=1e-12)


def test_the_rules_differ_on_the_hand_cell() -> None:
    """Sanity of the oracle itself: the three rules give three different input relevances."""
    results = {rule: hand_cell(rule, 0.0)[1] for rule in LSTM_RULES}
    assert results["half"] != pytest.approx(results["signal_take_all"], rel=1e-3)
    assert results["proportional"] != pytest.approx(results["half"], rel=1e-3)
    assert results["proportional"] != pytest.approx(results["signal_take_all"], rel=1e-3)


def _engine_total(layers, head: nn.Module, x, h0, c0, rule: str, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    steps = compile_sequential(head, "head")
    hidden, traces = recurrent_forward(layers, x, h0, c0)
    logits, trace = head_forward(steps, hidden[:, -1])
    r_logits = torch.zeros_like(logits)
    r_logits[:, target] = logits[:, target]
    r_hidden = torch.zeros_like(hidden)
    r_hidden[:, -1] = head_relevance(steps, trace, r_logits, 1e-3, 1.0)
    r_x, r_h0, r_c0 = recurrent_relevance(layers, traces, r_hidden, 1e-3, 1.0, rule)
    assert all(float(r.abs().sum()) > 0 for r in [r_x, *r_h0, *r_c0])
    total = r_x.flatten(1).sum(1) + sum(r.flatten(1).sum(1) for r in r_h0 + r_c0)
    return total, logits[:, target]


@pytest.mark.parametrize("rule", LSTM_RULES)
def test_lstm_conserves_with_bias_factor_one(rule: str) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True).double()
    head = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    h0, c0 = list(torch.randn(2, 2, 5, dtype=torch.float64)), list(torch.randn(2, 2, 5, dtype=torch.float64))
    total, logit = _engine_total(lstm_layers(lstm), head, x, h0, c0, rule, target=1)
    torch.testing.assert_close(total, logit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", LSTM_RULES)
def test_spatial_convlstm_conserves_with_bias_factor_one(rule: str) -> None:
    torch.manual_seed(3)
    net = ConvLSTM(3, in_channels=2, hidden_channels=(4, 3), stem_channels=0).double().eval()
    x = torch.randn(2, 3, 2, 6, 6, dtype=torch.float64)
    h0 = [torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.randn(2, 3, 6, 6, dtype=torch.float64)]
    c0 = [torch.randn_like(h) for h in h0]
    total, logit = _engine_total(convlstm_layers(net.cells), net.head, x, h0, c0, rule, target=2)
    torch.testing.assert_close(total, logit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", LSTM_RULES)
def test_videolrp_conserves_per_rule_on_both_models(rule: str) -> None:
    """End to end, zero initial states: recurrent input + initial-state relevance == target logit."""
    torch.manual_seed(4)
    vgg = VGG16LSTM(3, hidden_size=6).double().eval()
    clip = torch.randn(1, 3, 3, 32, 32, dtype=torch.float64)
    out = VideoLRP(vgg, "epsilon", bias_factor=1, lstm_rule=rule)._propagate(clip, target=2)
    total = out["feature"].sum() + sum(r.sum() for r in out["initial"]["h0"] + out["initial"]["c0"])
    assert float(total) == pytest.approx(float(out["logits"][0, 2]), rel=1e-10)
    conv = ConvLSTM(3, hidden_channels=(4,), stem_channels=0).double().eval()  # pixels feed the cells
    expl = VideoLRP(conv, "epsilon", bias_factor=1, lstm_rule=rule).explain(clip[0, :, :, :8, :8], target=1)
    total = expl.total() + sum(float(r.sum()) for r in expl.initial_state.values())
    assert total == pytest.approx(float(expl.logits[1]), rel=1e-10)


def test_default_rule_is_signal_take_all_and_other_rules_change_the_map() -> None:
    torch.manual_seed(5)
    net = ConvLSTM(3, hidden_channels=(4,), stem_channels=3).double().eval()
    clip = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    default = VideoLRP(net, "epsilon").explain(clip, target=0).pixel
    assert torch.equal(default, VideoLRP(net, "epsilon", lstm_rule="signal_take_all").explain(clip, target=0).pixel)
    for rule in ("half", "proportional"):
        other = VideoLRP(net, "epsilon", lstm_rule=rule).explain(clip, target=0).pixel
        assert not torch.allclose(other, default, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("bad", ["Half", "arras", "", None, 1])
def test_bad_lstm_rule_raises_one_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"lstm_rule=.* is unknown; choose one of signal_take_all, half, proportional"):
        VideoLRP(ConvLSTM(3, hidden_channels=(4,), stem_channels=0), "epsilon", lstm_rule=bad)


def test_evaluation_scores_every_gate_rule_as_its_own_method() -> None:
    from vidxai.evaluation.methods import default_methods

    assert VideoLRP.LSTM_RULES == LSTM_RULES and LSTM_RULES[0] == "signal_take_all"
    methods = default_methods()
    assert "epsilon/half" in methods and "epsilon/proportional" in methods
    assert "epsilon/signal_take_all" not in methods  # that is plain `epsilon`
