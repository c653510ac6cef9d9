"""LSTM relevance against a plain float64 NumPy transcription of Arras et al.'s algorithm (LRP_for_LSTM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vidxai.models import ConvLSTM, ConvLSTMCell
from vidxai.xai.cnn import compile_sequential
from vidxai.xai.recurrent import (
    convlstm_layers,
    head_forward,
    head_relevance,
    lstm_layers,
    recurrent_forward,
    recurrent_relevance,
)


# ------------------------------------------------------------------ the oracle (no engine code below)
def np_lrp_linear(hin, w, b, hout, rout, bias_nb_units, eps, bias_factor):
    """Arras's ``lrp_linear``: w (D, M), hin (D,), b/hout/rout (M,) -> relevance of hin (D,)."""
    sign_out = np.where(hout[None, :] >= 0, 1.0, -1.0)
    numer = (w * hin[:, None]) + (bias_factor * (b[None, :] * 1.0 + eps * sign_out * 1.0) / bias_nb_units)
    denom = hout[None, :] + (eps * sign_out * 1.0)
    message = (numer / denom) * rout[None, :]
    return message.sum(axis=1)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, rh_out, eps, bias_factor):
    """One LSTM layer (PyTorch gate order i, f, g, o), forward then Arras's backward loop.

    ``rh_out`` (T, H) is the relevance arriving at the hidden states from above. Index -1 of the
    (T+1)-arrays holds the initial state, as in the reference code. Returns (h, Rx, Rh0, Rc0).
    """
    steps, e = x.shape
    d = w_hh.shape[1]
    i, f, g, o = (slice(k * d, (k + 1) * d) for k in range(4))
    gates_pre, gates = np.zeros((steps, 4 * d)), np.zeros((steps, 4 * d))
    h, c = np.zeros((steps + 1, d)), np.zeros((steps + 1, d))
    h[-1], c[-1] = h0, c0
    for t in range(steps):
        gates_pre[t] = w_ih @ x[t] + b_ih + w_hh @ h[t - 1] + b_hh
        gates[t, i], gates[t, f], gates[t, o] = (sigmoid(gates_pre[t, s]) for s in (i, f, o))
        gates[t, g] = np.tanh(gates_pre[t, g])
        c[t] = gates[t, f] * c[t - 1] + gates[t, i] * gates[t, g]
        h[t] = gates[t, o] * np.tanh(c[t])
    rx, rg = np.zeros((steps, e)), np.zeros((steps, d))
    rh, rc = np.zeros((steps + 1, d)), np.zeros((steps + 1, d))
    rh[:steps] = rh_out
    eye, zeros = np.identity(d), np.zeros(d)
    bias_g = b_ih[g] + b_hh[g]
    for t in reversed(range(steps)):
        rc[t] += rh[t]
        rc[t - 1] = np_lrp_linear(gates[t, f] * c[t - 1], eye, zeros, c[t], rc[t], 2 * d, eps, bias_factor)
        rg[t] = np_lrp_linear(gates[t, i] * gates[t, g], eye, zeros, c[t], rc[t], 2 * d, eps, bias_factor)
        rx[t] = np_lrp_linear(x[t], w_ih[g].T, bias_g, gates_pre[t, g], rg[t], d + e, eps, bias_factor)
        rh[t - 1] += np_lrp_linear(
            h[t - 1], w_hh[g].T, bias_g, gates_pre[t, g], rg[t], d + e, eps, bias_factor
        )
    return h[:steps], rx, rh[-1], rc[-1]


def np_lstm_lrp(x, params, h0, c0, w_out, b_out, target, eps, bias_factor):
    """Stacked LSTM + linear head on the last hidden state; relevance starts at the target logit."""
    seqs, hs = [x], []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):  # forward, to get each layer's input
        no_relevance = np.zeros((len(x), w_hh.shape[1]))
        h, *_ = np_lstm_layer(seqs[-1], w_ih, w_hh, b_ih, b_hh, h0[k], c0[k], no_relevance, eps, 0)
        seqs.append(h)
        hs.append(h)
    logits = w_out @ hs[-1][-1] + b_out
    rout = np.zeros_like(logits)
    rout[target] = logits[target]
    rh_out = np.zeros_like(hs[-1])
    rh_out[-1] = np_lrp_linear(hs[-1][-1], w_out.T, b_out, logits, rout, w_out.shape[1], eps, bias_factor)
    r_h0, r_c0 = [None] * len(params), [None] * len(params)
    for k in reversed(range(len(params))):
        w_ih, w_hh, b_ih, b_hh = params[k]
        _, rx, r_h0[k], r_c0[k] = np_lstm_layer(
            seqs[k], w_ih, w_hh, b_ih, b_hh, h0[k], c0[k], rh_out, eps, bias_factor
        )
        rh_out = rx
    return logits, rh_out, np.stack(r_h0), np.stack(r_c0)


# ------------------------------------------------------------------ engine
def engine(layers, head, x, h0, c0, target, eps, bias_factor):
    steps = compile_sequential(head, "head")
    hidden, traces = recurrent_forward(layers, x, h0, c0)
    logits, trace = head_forward(steps, hidden[:, -1])
    idx = torch.full((x.shape[0],), target)
    r_logits = torch.zeros_like(logits).scatter_(1, idx[:, None], logits.gather(1, idx[:, None]))
    r_hidden = torch.zeros_like(hidden)
    r_hidden[:, -1] = head_relevance(steps, trace, r_logits, eps, bias_factor)
    r_x, r_h0, r_c0 = recurrent_relevance(layers, traces, r_hidden, eps, bias_factor)
    return hidden, logits, r_x, torch.stack(r_h0), torch.stack(r_c0)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bias_factor", [0.0, 1.0])
def test_lstm_relevance_equals_numpy_arras(bias_factor: float, num_layers: int) -> None:
    torch.manual_seed(0)
    batch, steps, features, hidden, classes = 2, 4, 6, 5, 3
    lstm = nn.LSTM(features, hidden, num_layers=num_layers, batch_first=True).double()
    head = nn.Sequential(nn.Dropout(0.5), nn.Linear(hidden, classes)).double().eval()
    x = torch.randn(batch, steps, features, dtype=torch.float64)
    h0 = torch.randn(num_layers, batch, hidden, dtype=torch.float64)  # random non-zero initial states
    c0 = torch.randn(num_layers, batch, hidden, dtype=torch.float64)
    eps, target = 1e-3, 1
    hid, logits, r_x, r_h0, r_c0 = engine(
        lstm_layers(lstm), head, x, list(h0), list(c0), target, eps, bias_factor
    )

    out, _ = lstm(x, (h0, c0))
    torch.testing.assert_close(hid, out.detach())
    torch.testing.assert_close(logits, head(out[:, -1]).detach())

    params = [
        tuple(
            getattr(lstm, f"{n}_l{k}").detach().numpy()
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for k in range(num_layers)
    ]
    w_out, b_out = head[1].weight.detach().numpy(), head[1].bias.detach().numpy()
    for b in range(batch):
        np_logits, np_rx, np_rh0, np_rc0 = np_lstm_lrp(
            x[b].numpy(), params, h0[:, b].numpy(), c0[:, b].numpy(), w_out, b_out, target, eps, bias_factor
        )
        np.testing.assert_allclose(logits[b].numpy(), np_logits, rtol=1e-12)
        np.testing.assert_allclose(r_x[b].numpy(), np_rx, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r_h0[:, b].numpy(), np_rh0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r_c0[:, b].numpy(), np_rc0, rtol=1e-9, atol=1e-12)
        assert np.abs(np_rx).sum() > 0 and np.abs(np_rc0).sum() > 0
        total = np_rx.sum() + np_rh0.sum() + np_rc0.sum()
        if bias_factor == 1.0:  # conservation, initial states included
            assert total == pytest.approx(np_logits[target], rel=1e-10)
        else:  # the biases and stabilisers absorb a share
            assert total != pytest.approx(np_logits[target], rel=1e-6)


def test_convlstm_relevance_equals_dense_oracle() -> None:
    """A ConvLSTM cell with a 1x1 kernel on 1x1 maps is a dense LSTM: the conv code path meets the oracle."""
    torch.manual_seed(2)
    cell = ConvLSTMCell(4, 3, kernel_size=1).double()
    head = nn.Sequential(nn.Flatten(), nn.Linear(3, 2)).double()
    x = torch.randn(2, 3, 4, 1, 1, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 3, 1, 1, dtype=torch.float64), torch.randn(1, 2, 3, 1, 1, dtype=torch.float64)
    w = cell.conv.weight.detach()[:, :, 0, 0].numpy()
    params = [(w[:, :4], w[:, 4:], cell.conv.bias.detach().numpy(), np.zeros(12))]
    for bias_factor in (0.0, 1.0):
        _, logits, r_x, r_h0, r_c0 = engine(
            convlstm_layers(nn.ModuleList([cell])), head, x, list(h0), list(c0), 1, 1e-3, bias_factor
        )
        for b in range(2):
            np_logits, np_rx, np_rh0, np_rc0 = np_lstm_lrp(
                x[b, :, :, 0, 0].numpy(), params, h0[:, b, :, 0, 0].numpy(), c0[:, b, :, 0, 0].numpy(),
                head[1].weight.detach().numpy(), head[1].bias.detach().numpy(), 1, 1e-3, bias_factor,
            )
            np.testing.assert_allclose(logits[b].numpy(), np_logits, rtol=1e-12)
            np.testing.assert_allclose(r_x[b, :, :, 0, 0].numpy(), np_rx, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(r_h0[:, b, :, 0, 0].numpy(), np_rh0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(r_c0[:, b, :, 0, 0].numpy(), np_rc0, rtol=1e-9, atol=1e-12)


def test_spatial_convlstm_conserves_with_bias_factor_one() -> None:
    """3x3 gate convolutions on 6x6 maps, two stacked cells, non-zero initial states: exact conservation."""
    torch.manual_seed(3)
    net = ConvLSTM(3, in_channels=2, hidden_channels=(4, 3), stem_channels=0).double().eval()
    x = torch.randn(2, 3, 2, 6, 6, dtype=torch.float64)
    h0 = [torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.randn(2, 3, 6, 6, dtype=torch.float64)]
    c0 = [torch.randn_like(h) for h in h0]
    layers = convlstm_layers(net.cells)
    steps = compile_sequential(net.head, "head")
    hidden, traces = recurrent_forward(layers, x, h0, c0)
    logits, trace = head_forward(steps, hidden[:, -1])
    r_logits = torch.zeros_like(logits)
    r_logits[:, 2] = logits[:, 2]
    r_hidden = torch.zeros_like(hidden)
    r_hidden[:, -1] = head_relevance(steps, trace, r_logits, 1e-3, 1.0)
    r_x, r_h0, r_c0 = recurrent_relevance(layers, traces, r_hidden, 1e-3, 1.0)
    total = r_x.flatten(1).sum(1) + sum(r.flatten(1).sum(1) for r in r_h0 + r_c0)
    torch.testing.assert_close(total, logits[:, 2], rtol=1e-10, atol=1e-12)
    assert all(float(r.abs().sum()) > 0 for r in r_h0 + r_c0)
    with torch.no_grad():
        torch.testing.assert_close(logits, net.head(_convlstm_reference(net, x, h0, c0)))


def _convlstm_reference(net: ConvLSTM, x: torch.Tensor, h0: list, c0: list) -> torch.Tensor:
    """The model's own cells run with the given initial states: last layer's final hidden state."""
    seq = x
    for cell, h, c in zip(net.cells, h0, c0):
        state, outs = (h, c), []
        for t in range(seq.shape[1]):
            state = cell(seq[:, t], state)
            outs.append(state[0])
        seq = torch.stack(outs, 1)
    return seq[:, -1]


def test_unsupported_recurrent_layers_raise() -> None:
    with pytest.raises(ValueError, match="unidirectional"):
        lstm_layers(nn.LSTM(3, 4, batch_first=True, bidirectional=True))
    with pytest.raises(ValueError, match="expected a ConvLSTMCell"):
        convlstm_layers(nn.ModuleList([nn.Linear(3, 4)]))
