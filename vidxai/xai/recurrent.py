"""LRP through LSTMs (``torch.nn.LSTM`` and ConvLSTM cells) and the classifier head, after Arras et al. 2017.

"Explaining Recurrent Neural Network Predictions in Sentiment Analysis" (reference code
``ArrasL/LRP_for_LSTM``), in PyTorch's gate order (i, f, g, o):

* the gates i, f, o receive no relevance ("signal takes all");
* ``c_t = f*c_{t-1} + i*g`` splits ``R(c_t)`` between ``f*c_{t-1}`` and ``i*g`` in proportion (epsilon rule);
* ``h_t = o*tanh(c_t)`` passes ``R(h_t)`` to ``c_t`` whole;
* ``g``'s affine map from ``[x_t; h_{t-1}]`` (bias ``b_ih + b_hh``) uses the epsilon rule;
* ``bias_factor = 1`` spreads the share the bias and stabiliser absorb evenly over all input units of the
  layer (as the reference ``lrp_linear`` does with ``bias_nb_units``), so total relevance, initial
  states included, equals the starting relevance; ``bias_factor = 0`` lets them absorb it.

The same code serves dense LSTMs (matrix products) and ConvLSTM cells (convolutions with transposed
convolutions as ``W^T``): a layer is a :class:`RecurrentLayer`, ``pre = W [x; h] + b`` with the four
gates stacked along dimension 1. Everything here is plain tensor arithmetic without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vidxai.xai.cnn import Step
from vidxai.xai.rules import LinearOp, stabilize

__all__ = [
    "RecurrentLayer",
    "RecurrentTrace",
    "convlstm_layers",
    "HeadTrace",
    "head_forward",
    "head_relevance",
    "lstm_layers",
    "recurrent_forward",
    "recurrent_relevance",
]


def _sign(z: Tensor) -> Tensor:
    """``sign(z)`` with ``sign(0) = +1``."""
    return (z == 0.0).to(z) + z.sign()


def _per_sample_sum(t: Tensor) -> Tensor:
    """Sum over all but the batch dimension, shaped to broadcast against ``t``."""
    return t.flatten(1).sum(1).reshape(-1, *((1,) * (t.ndim - 1)))


def _channel_view(b: Tensor, ndim: int) -> Tensor:
    """A per-channel vector shaped to broadcast along dimension 1 of an ``ndim`` tensor."""
    return b.reshape(1, -1, *((1,) * (ndim - 2)))


@dataclass
class RecurrentLayer:
    """One LSTM layer as a gate map ``pre = W [x; h] + b``; gates (i, f, g, o) stacked along dimension 1."""

    weight: Tensor
    bias: Tensor | None
    input_size: int
    hidden: int
    op: LinearOp

    def pre(self, inp: Tensor) -> Tensor:
        """Gate pre-activations for ``inp = [x; h]``."""
        return self.op(inp, self.weight, self.bias)

    @property
    def g_weight(self) -> Tensor:
        """Weights of the cell-input gate ``g`` (third block in PyTorch's order)."""
        return self.weight[2 * self.hidden : 3 * self.hidden]

    @property
    def g_bias(self) -> Tensor | None:
        """Bias of ``g`` (``b_ih + b_hh`` for ``nn.LSTM``)."""
        return None if self.bias is None else self.bias[2 * self.hidden : 3 * self.hidden]


def lstm_layers(lstm: nn.LSTM) -> list[RecurrentLayer]:
    """The layers of a unidirectional ``nn.LSTM`` (current weights, detached)."""
    if lstm.bidirectional or getattr(lstm, "proj_size", 0) or not lstm.batch_first:
        raise ValueError(
            "VideoLRP explains unidirectional nn.LSTM with batch_first=True and proj_size=0; "
            f"got bidirectional={lstm.bidirectional}, batch_first={lstm.batch_first}, "
            f"proj_size={lstm.proj_size}"
        )
    layers = []
    for k in range(lstm.num_layers):
        w_ih = getattr(lstm, f"weight_ih_l{k}").detach()
        w_hh = getattr(lstm, f"weight_hh_l{k}").detach()
        bias = None
        if lstm.bias:
            bias = getattr(lstm, f"bias_ih_l{k}").detach() + getattr(lstm, f"bias_hh_l{k}").detach()
        layers.append(
            RecurrentLayer(
                torch.cat([w_ih, w_hh], dim=1), bias, w_ih.shape[1], lstm.hidden_size, LinearOp("linear")
            )
        )
    return layers


def convlstm_layers(cells: nn.ModuleList) -> list[RecurrentLayer]:
    """The layers of a stack of ConvLSTM cells (each with one ``conv`` over ``cat([x, h])``)."""
    layers = []
    for k, cell in enumerate(cells):
        conv = getattr(cell, "conv", None)
        if not isinstance(conv, nn.Conv2d) or conv.out_channels % 4 or conv.padding_mode != "zeros":
            raise ValueError(
                f"VideoLRP cannot explain cells.{k} ({type(cell).__name__}): expected a ConvLSTMCell with "
                "one "
                "nn.Conv2d `conv` (zero padding) producing 4*hidden gate channels"
            )
        hidden = conv.out_channels // 4
        bias = None if conv.bias is None else conv.bias.detach()
        layers.append(
            RecurrentLayer(conv.weight.detach(), bias, conv.in_channels - hidden, hidden, LinearOp.of(conv))
        )
    return layers


@dataclass
class RecurrentTrace:
    """What the forward pass of one layer keeps for the relevance pass (lists over time)."""

    x: Tensor  # the layer's input sequence (B, T, ...)
    h_prev: list[Tensor] = field(default_factory=list)  # h_{t-1}
    i: list[Tensor] = field(default_factory=list)
    f: list[Tensor] = field(default_factory=list)
    g: list[Tensor] = field(default_factory=list)
    g_pre: list[Tensor] = field(default_factory=list)
    c: list[Tensor] = field(default_factory=list)  # T + 1 entries, c[0] = c0


def _fold(seq: Tensor) -> Tensor:
    """``(B, T, ...) -> (B*T, ...)``."""
    return seq.reshape(seq.shape[0] * seq.shape[1], *seq.shape[2:])


def recurrent_forward(
    layers: list[RecurrentLayer],
    x: Tensor,
    h0: list[Tensor] | None = None,
    c0: list[Tensor] | None = None,
) -> tuple[Tensor, list[RecurrentTrace]]:
    """Run the stacked layers over ``x (B, T, ...)``; return the top layer's hidden sequence and the traces.

    ``h0`` / ``c0``: per-layer initial states (default zeros, as the models use). The input part of the
    gate map, ``W_x x_t + b``, is computed for all steps at once; only ``W_h h_{t-1}`` runs per step.
    """
    traces = []
    seq = x
    for k, layer in enumerate(layers):
        b, steps = seq.shape[:2]
        state_shape = (b, layer.hidden, *seq.shape[3:])
        h = seq.new_zeros(state_shape) if h0 is None else h0[k]
        c = seq.new_zeros(state_shape) if c0 is None else c0[k]
        w_x, w_h = layer.weight[:, : layer.input_size], layer.weight[:, layer.input_size :]
        pre_x = layer.op(_fold(seq), w_x, layer.bias)
        pre_x = pre_x.reshape(b, steps, *pre_x.shape[1:])
        trace = RecurrentTrace(x=seq, c=[c])
        outputs = []
        for t in range(steps):
            trace.h_prev.append(h)
            i, f, g_pre, o = (pre_x[:, t] + layer.op(h, w_h, None)).chunk(4, dim=1)
            i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g_pre)
            c = f * c + i * g
            h = o * torch.tanh(c)
            trace.i.append(i)
            trace.f.append(f)
            trace.g.append(g)
            trace.g_pre.append(g_pre)
            trace.c.append(c)
            outputs.append(h)
        traces.append(trace)
        seq = torch.stack(outputs, dim=1)
    return seq, traces


def recurrent_relevance(
    layers: list[RecurrentLayer],
    traces: list[RecurrentTrace],
    r_out: Tensor,
    eps: float = 1e-3,
    bias_factor: float = 0.0,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Propagate ``r_out`` (relevance of the top layer's hidden sequence, ``(B, T, ...)``) to the inputs.

    Returns the input relevance ``(B, T, ...)`` and, per layer, the relevance of ``h0`` and ``c0``.
    Only the ``h`` part of ``g``'s map runs per step; the ``x`` part runs for all steps at once after.
    """
    r_h0: list[Tensor] = []
    r_c0: list[Tensor] = []
    r_seq = r_out
    for layer, trace in zip(reversed(layers), reversed(traces)):
        steps = len(trace.h_prev)
        rh = torch.zeros_like(r_seq[:, 0])
        rc = torch.zeros_like(rh)
        w_g = layer.g_weight
        w_gx, w_gh = w_g[:, : layer.input_size], w_g[:, layer.input_size :]
        g_bias = None if layer.g_bias is None else _channel_view(layer.g_bias, rh.ndim)
        n_inputs = (layer.input_size + layer.hidden) * rh[0, 0].numel()  # units of [x_t; h_{t-1}]
        messages: list[Tensor] = [rh] * steps  # sg_t: relevance / stabilised pre-activation of g
        shares: list[Tensor | float] = [0.0] * steps
        for t in reversed(range(steps)):
            rc = rc + rh + r_seq[:, t]  # R(h_t) goes to c_t whole
            c_t, c_prev = trace.c[t + 1], trace.c[t]
            s = rc / stabilize(c_t, eps)
            r_c_prev, r_ig = trace.f[t] * c_prev * s, trace.i[t] * trace.g[t] * s
            if bias_factor:
                share = bias_factor * _per_sample_sum(eps * _sign(c_t) * s) / (2 * c_t[0].numel())
                r_c_prev, r_ig = r_c_prev + share, r_ig + share
            g_pre, h_prev = trace.g_pre[t], trace.h_prev[t]
            sg = r_ig / stabilize(g_pre, eps)
            rh = h_prev * layer.op.input_grad(h_prev.shape, w_gh, sg)
            if bias_factor:
                absorbed = eps * _sign(g_pre) if g_bias is None else g_bias + eps * _sign(g_pre)
                shares[t] = bias_factor * _per_sample_sum(absorbed * sg) / n_inputs
                rh = rh + shares[t]
            messages[t] = sg
            rc = r_c_prev
        r_h0.insert(0, rh)
        r_c0.insert(0, rc)
        x = _fold(trace.x)
        r_x = x * layer.op.input_grad(x.shape, w_gx, _fold(torch.stack(messages, dim=1)))
        r_seq = r_x.reshape(trace.x.shape)
        if bias_factor:
            r_seq = r_seq + torch.stack([torch.as_tensor(v).to(r_seq) for v in shares], dim=1)
    return r_seq, r_h0, r_c0


@dataclass
class HeadTrace:
    """Inputs and outputs of every head step, kept by :func:`head_forward`."""

    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)


def head_forward(steps: list[Step], x: Tensor) -> tuple[Tensor, HeadTrace]:
    """Logits ``(B, C)`` of the head for its input ``x`` (the last hidden state) and the trace."""
    trace = HeadTrace()
    for step in steps:
        trace.inputs.append(x)
        if step.kind == "linear":
            weight, bias = step.params()
            x = step.op(x, weight, bias)
        else:
            x = step.module.forward(x)
        trace.outputs.append(x)
    if x.ndim != 2:
        raise ValueError(f"the head must produce logits (B, C), got shape {tuple(x.shape)}")
    return x, trace


def head_relevance(
    steps: list[Step], trace: HeadTrace, relevance: Tensor, eps: float = 1e-3, bias_factor: float = 0.0
) -> Tensor:
    """Propagate the relevance of the logits back to the head input.

    Linear layers and average pooling use the epsilon rule with ``eps`` and ``bias_factor`` like the
    LSTM; activations pass relevance through; max pooling routes it to the winner.
    """
    for step, xin, z in zip(reversed(steps), reversed(trace.inputs), reversed(trace.outputs)):
        if step.kind in ("activation", "flatten"):
            relevance = relevance.reshape(xin.shape)
            continue
        if step.kind == "linear":
            weight, bias = step.params()
            op = step.op
            s = relevance / stabilize(z, eps)
            new = xin * op.input_grad(xin.shape, weight, s)
            absorbed = eps * _sign(z) if bias is None else bias + eps * _sign(z)  # linear: channels last
        else:  # pooling, through autograd of the pooling function
            with torch.enable_grad():
                xg = xin.detach().requires_grad_(True)
                zg = step.module.forward(xg)
                s = relevance if step.kind == "maxpool" else relevance / stabilize(z, eps)
                (grad,) = torch.autograd.grad(zg, xg, s)
            if step.kind == "maxpool":
                relevance = grad
                continue
            new = xin * grad
            absorbed = eps * _sign(z)
        if bias_factor:
            new = new + bias_factor * _per_sample_sum(absorbed * s) / xin[0].numel()
        relevance = new
    return relevance
