"""LRP through LSTMs (``torch.nn.LSTM`` and ConvLSTM cells) and the classifier head, after Arras et al. 2017.

"Explaining Recurrent Neural Network Predictions in Sentiment Analysis" (reference code
``ArrasL/LRP_for_LSTM``), in PyTorch's gate order (i, f, g, o), with
``pre = W [x_t; h_{t-1}] + b``, ``i, f, o = sigmoid(pre_i, pre_f, pre_o)``, ``g = tanh(pre_g)``:

* ``c_t = f*c_{t-1} + i*g`` splits ``R(c_t)`` between ``f*c_{t-1}`` and ``i*g`` in proportion (epsilon rule);
  ``R(f*c_{t-1})`` goes to ``c_{t-1}`` whole under every rule (the memory path; the forget gate gets none);
* the two gate-times-signal products, ``i*g`` (gate ``i``, signal ``g``) and ``h_t = o*tanh(c_t)`` (gate
  ``o``, signal ``tanh(c_t)``, whose relevance goes to ``c_t``), split their relevance ``R`` by the rule
  ``lstm_rule`` (:data:`LSTM_RULES`):

  - ``signal_take_all`` (default; Arras et al. 2017): the signal gets ``R``, the gate nothing;
  - ``half``: gate and signal get ``R / 2`` each (the "half" rule; AttnLRP's uniform rule for a product
    of two factors, Achtibat et al. 2024);
  - ``proportional``: in proportion to the absolute values of the two factors, the gate gets
    ``R |gate| / (|gate| + |signal|)`` and the signal the rest (after the proportional variant compared by
    Arras et al. 2019, "Explaining and Interpreting LSTMs"; absolute values keep both shares in [0, 1]
    when the signal, a tanh, is negative; ``|gate| + |signal| = 0`` gives half each);

* relevance passes the sigmoid / tanh unchanged to the pre-activation; the pre-activations of the gates
  that received relevance (``g``; with ``half`` / ``proportional`` also ``i`` and ``o``) send it through
  their rows of the affine map from ``[x_t; h_{t-1}]`` (bias ``b_ih + b_hh``) with the epsilon rule;
* ``bias_factor = 1`` spreads the share the bias and stabiliser absorb evenly over all input units of the
  layer (as the reference ``lrp_linear`` does with ``bias_nb_units``), so total relevance, initial
  states included, equals the starting relevance under every rule (the product splits conserve exactly);
  ``bias_factor = 0`` lets them absorb it.

Every epsilon step (the cell split, the gate maps, the head) is :func:`vidxai.xai.rules.epsilon_relevance`.
The same code serves dense LSTMs (matrix products) and ConvLSTM cells (convolutions with transposed
convolutions as ``W^T``): a layer is a :class:`RecurrentLayer`, ``pre = W [x; h] + b`` with the four
gates stacked along dimension 1. Everything here is plain tensor arithmetic without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from vidxai.xai.cnn import Step, run_steps
from vidxai.xai.rules import Composite, Epsilon, LinearOp, Norm, epsilon_relevance

__all__ = [
    "LSTM_RULES",
    "RecurrentLayer",
    "arras_composite",
    "RecurrentTrace",
    "convlstm_layers",
    "HeadTrace",
    "head_forward",
    "head_relevance",
    "lstm_layers",
    "recurrent_forward",
    "check_lstm_rule",
    "recurrent_relevance",
    "split_product",
]

#: How a gate-times-signal product splits its relevance (module docstring); the first is the default.
LSTM_RULES = ("signal_take_all", "half", "proportional")


def check_lstm_rule(rule: str) -> str:
    """``rule`` if it names one of :data:`LSTM_RULES`, else one clear ``ValueError``."""
    if not isinstance(rule, str) or rule not in LSTM_RULES:
        raise ValueError(f"lstm_rule={rule!r} is unknown; choose one of {', '.join(LSTM_RULES)}")
    return rule


def split_product(relevance: Tensor, gate: Tensor, signal: Tensor, rule: str) -> tuple[Tensor | None, Tensor]:
    """Relevance of ``gate`` and ``signal`` for the product ``gate * signal`` with relevance ``relevance``.

    ``signal_take_all``: ``(None, R)`` (the gate gets nothing); ``half``: ``(R/2, R/2)``; ``proportional``:
    ``(R a / (a + b), R - R a / (a + b))`` with ``a = |gate|``, ``b = |signal|`` (half each where both are 0).
    Both parts always sum to ``R``.
    """
    if rule == "signal_take_all":
        return None, relevance
    if rule == "half":
        r_gate = 0.5 * relevance
    elif rule == "proportional":
        a, b = gate.abs(), signal.abs()
        total = a + b
        share = torch.where(total > 0, a / torch.where(total > 0, total, 1.0), 0.5)
        r_gate = share * relevance
    else:
        check_lstm_rule(rule)
    return r_gate, relevance - r_gate


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
    o: list[Tensor] = field(default_factory=list)
    pre: list[Tensor] = field(default_factory=list)  # all four gate pre-activations (B, 4H, ...)
    c: list[Tensor] = field(default_factory=list)  # T + 1 entries, c[0] = c0

    @property
    def g_pre(self) -> list[Tensor]:
        """Pre-activations of ``g`` (views into :attr:`pre`)."""
        return [p.chunk(4, dim=1)[2] for p in self.pre]


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
            pre = pre_x[:, t] + layer.op(h, w_h, None)
            i, f, g_pre, o = pre.chunk(4, dim=1)
            i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g_pre)
            c = f * c + i * g
            h = o * torch.tanh(c)
            trace.i.append(i)
            trace.f.append(f)
            trace.g.append(g)
            trace.o.append(o)
            trace.pre.append(pre)
            trace.c.append(c)
            outputs.append(h)
        traces.append(trace)
        seq = torch.stack(outputs, dim=1)
    return seq, traces


def _cell_step(
    trace: RecurrentTrace, t: int, r_h: Tensor, rc: Tensor, eps: float, bias_factor: float, rule: str, n_cell: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Step ``t`` back through the cell: ``R(h_t)`` (``r_h``) and ``R(c_t)`` (``rc``, from step ``t + 1``) to
    ``R(c_{t-1})``, and the pre-activations of the gates that receive relevance with their relevance."""
    c_t, c_prev = trace.c[t + 1], trace.c[t]
    take_all = rule == "signal_take_all"
    if take_all:
        rc = rc + r_h  # R(h_t) goes to c_t whole
        r_o = None
    else:
        r_o, r_tanh_c = split_product(r_h, trace.o[t], torch.tanh(c_t), rule)
        rc = rc + r_tanh_c
    r_c_prev = epsilon_relevance(trace.f[t] * c_prev, c_t, rc, eps, _identity, bias_factor=bias_factor, n_inputs=n_cell)
    r_ig = epsilon_relevance(trace.i[t] * trace.g[t], c_t, rc, eps, _identity, bias_factor=bias_factor, n_inputs=n_cell)
    r_i, r_g = split_product(r_ig, trace.i[t], trace.g[t], rule)
    if take_all:
        return r_c_prev, trace.g_pre[t], r_g
    # (i, f, g, o): the forget gate gets none
    return r_c_prev, trace.pre[t], torch.cat([r_i, torch.zeros_like(r_g), r_g, r_o], dim=1)


def recurrent_relevance(
    layers: list[RecurrentLayer],
    traces: list[RecurrentTrace],
    r_out: Tensor,
    eps: float = 1e-3,
    bias_factor: float = 0.0,
    rule: str = "signal_take_all",
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Propagate ``r_out`` (relevance of the top layer's hidden sequence, ``(B, T, ...)``) to the inputs.

    ``rule``: how the products ``i*g`` and ``o*tanh(c)`` split relevance (:data:`LSTM_RULES`).
    Returns the input relevance ``(B, T, ...)`` and, per layer, the relevance of ``h0`` and ``c0``.
    Only the ``h`` part of the gate maps runs per step; the ``x`` part runs for all steps at once after.
    """
    check_lstm_rule(rule)
    take_all = rule == "signal_take_all"  # only g receives relevance: its rows of W suffice
    r_h0: list[Tensor] = []
    r_c0: list[Tensor] = []
    r_seq = r_out
    for layer, trace in zip(reversed(layers), reversed(traces)):
        steps = len(trace.h_prev)
        rh = torch.zeros_like(r_seq[:, 0])
        rc = torch.zeros_like(rh)
        w_gates, bias = (layer.g_weight, layer.g_bias) if take_all else (layer.weight, layer.bias)
        w_x, w_h = w_gates[:, : layer.input_size], w_gates[:, layer.input_size :]
        bias = None if bias is None else _channel_view(bias, rh.ndim)
        n_inputs = (layer.input_size + layer.hidden) * rh[0, 0].numel()  # units of [x_t; h_{t-1}]
        n_cell = 2 * rh[0].numel()  # units of the sum f*c_{t-1} + i*g
        z_gates: list[Tensor] = [rh] * steps  # pre-activations of the gates that receive relevance
        r_gates: list[Tensor] = [rh] * steps  # and their relevance
        for t in reversed(range(steps)):
            rc, z_gates[t], r_gates[t] = _cell_step(trace, t, rh + r_seq[:, t], rc, eps, bias_factor, rule, n_cell)
            h_prev = trace.h_prev[t]
            rh = epsilon_relevance(
                h_prev, z_gates[t], r_gates[t], eps, partial(layer.op.input_grad, h_prev.shape, w_h),
                bias, bias_factor, n_inputs,
            )
        r_h0.insert(0, rh)
        r_c0.insert(0, rc)
        x = _fold(trace.x)
        r_x = epsilon_relevance(
            x, _fold(torch.stack(z_gates, dim=1)), _fold(torch.stack(r_gates, dim=1)), eps,
            partial(layer.op.input_grad, x.shape, w_x), bias, bias_factor, n_inputs,
        )
        r_seq = r_x.reshape(trace.x.shape)
    return r_seq, r_h0, r_c0


def _identity(s: Tensor) -> Tensor:
    """``W^T s`` of an identity map (the sum ``f*c_{t-1} + i*g`` has unit weights)."""
    return s


def arras_composite(eps: float = 1e-3, bias_factor: float = 0.0) -> Composite:
    """The rules of a head after a recurrent stage (the Arras model's output layer).

    Linear layers: epsilon with ``eps`` and ``bias_factor`` (channels last, the bias as it is); average
    pooling: the proportional rule with ``eps``; activations pass relevance through; max pooling routes it
    to the winner.
    """
    rule = Epsilon(eps, bias_factor)
    return Composite(conv=rule, linear=rule, avgpool=Norm(eps, bias_factor))


@dataclass
class HeadTrace:
    """The head input kept by :func:`head_forward`."""

    input: Tensor


def head_forward(steps: list[Step], x: Tensor) -> tuple[Tensor, HeadTrace]:
    """Logits ``(B, C)`` of the compiled head ``steps`` for its input ``x`` (the last hidden state), and the trace."""
    with torch.no_grad():
        logits = run_steps(steps, arras_composite(), x)
    if logits.ndim != 2:
        raise ValueError(f"the head must produce logits (B, C), got shape {tuple(logits.shape)}")
    return logits, HeadTrace(x)


def head_relevance(
    steps: list[Step], trace: HeadTrace, relevance: Tensor, eps: float = 1e-3, bias_factor: float = 0.0
) -> Tensor:
    """Propagate the relevance of the logits back to the head input with :func:`arras_composite` rules."""
    with torch.enable_grad():
        leaf = trace.input.detach().requires_grad_(True)
        out = run_steps(steps, arras_composite(eps, bias_factor), leaf)
        if out is leaf:
            return relevance
        (r,) = torch.autograd.grad(out, leaf, relevance)
    return r
