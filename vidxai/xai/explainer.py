"""``VideoLRP``: LRP for VGG16+LSTM and ConvLSTM video classifiers behind Captum's ``Attribution`` API.

One propagation per call: the relevance starts as the target logit (one-hot times logit) at the head,
goes back through the recurrent part over time (Arras et al. 2017, see :mod:`vidxai.xai.recurrent`),
reaches the per-frame features, and continues through the CNN with time folded into the batch, where
the rules of the chosen composite run as modified gradients (:mod:`vidxai.xai.rules`). No module is
called and no hook is registered: the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.attr import Attribution
from torch import Tensor, nn

from vidxai.xai.cnn import Step, compile_sequential, run_steps
from vidxai.xai.recurrent import (
    RecurrentLayer,
    convlstm_layers,
    head_forward,
    head_relevance,
    lstm_layers,
    recurrent_forward,
    recurrent_relevance,
)
from vidxai.xai.rules import make_composite, resolve_rule

__all__ = ["Explanation", "VideoLRP"]

TargetType = int | Sequence[int] | Tensor | None


@dataclass
class Explanation:
    """The LRP explanation of one clip (all tensors detached, on the CPU).

    Attributes:
        pixel: ``(T, H, W)`` input relevance summed over colour channels.
        frame: ``(T,)`` relevance per frame (sum of ``pixel`` over the frame).
        feature: ``(T, F)`` relevance at the recurrent input: per-frame encoder features (VGG16+LSTM), or
            per channel of the ConvLSTM input maps summed over space.
        logits: ``(C,)`` the logits of the clip.
        target: the explained class.
        rule: the rule name; ``params`` its resolved parameters.
        initial_state: relevance of the recurrent initial states per layer ``k``: ``"h0_l{k}"``, ``"c0_l{k}"``
            (zero states receive relevance only through ``bias_factor=1``).
        relevance: ``(T, 3, H, W)`` the full input relevance.
    """

    pixel: Tensor
    frame: Tensor
    feature: Tensor
    logits: Tensor
    target: int
    rule: str
    initial_state: dict[str, Tensor]
    relevance: Tensor
    params: dict[str, Any] = field(default_factory=dict)

    def total(self) -> float:
        """Sum of the input relevance."""
        return float(self.pixel.sum())

    def delta(self) -> float:
        """Conservation error: total input relevance minus the target logit."""
        return self.total() - float(self.logits[self.target])

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez``: pixel, frame, feature, logits, target, relevance, initial_h0_l0, ..."""
        out = {
            "pixel": self.pixel.numpy(),
            "frame": self.frame.numpy(),
            "feature": self.feature.numpy(),
            "logits": self.logits.numpy(),
            "target": np.asarray(self.target, dtype=np.int64),
            "relevance": self.relevance.numpy(),
        }
        out.update({f"initial_{k}": v.numpy() for k, v in self.initial_state.items()})
        return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The network of a LightningModule with ``.net``, else ``model`` itself."""
    net = getattr(model, "net", None)
    return net if isinstance(net, nn.Module) else model


class VideoLRP(Attribution):
    """Layer-wise Relevance Propagation for video classifiers (VGG16+LSTM, ConvLSTM).

    Args:
        model: the network, or a LightningModule whose ``.net`` is the network. It must have
            ``encoder`` (per-frame CNN as ``nn.Sequential``, or ``nn.Identity``), either ``lstm``
            (``nn.LSTM``, batch_first) or ``cells`` (ConvLSTM cells), and ``head`` (``nn.Sequential`` on
            the last hidden state).
        rule: a name from :data:`~vidxai.xai.RULES` (``z``, ``epsilon``, ``gamma``, ``alpha_beta``,
            ``preset_a_flat``, ``preset_b_flat``) for the CNN.
        lstm_eps: epsilon of the recurrent part and the head (Arras et al.: 1e-3).
        bias_factor: 0 (bias and stabiliser absorb their share) or 1 (spread over the inputs, so the
            recurrent part and head conserve relevance exactly, initial states included).
        chunk_frames: run the CNN stage on at most this many frames at a time (bounded memory, same
            result; the CNN forward is then recomputed per chunk). ``None``: all frames at once.
        **rule_params: parameters of ``rule`` (``epsilon``, ``gamma``, ``alpha``, ``beta``,
            ``beta_sign="paper"`` to give alpha-beta in the paper's ``alpha + beta = 1`` spelling).

    Explaining never changes the model (no hooks, no parameter writes, modes untouched); the
    computation is that of eval mode (dropout off, BatchNorm running statistics, folded into the conv).
    """

    def __init__(
        self,
        model: nn.Module,
        rule: str = "epsilon",
        *,
        lstm_eps: float = 1e-3,
        bias_factor: float = 0.0,
        chunk_frames: int | None = None,
        **rule_params: Any,
    ) -> None:
        net = _unwrap(model)
        super().__init__(net)
        self.net = net
        self.rule_name = rule
        self.rule_params = resolve_rule(rule, **rule_params)  # the registry checks name and params
        self.composite = make_composite(rule, **rule_params)
        if isinstance(lstm_eps, bool) or not isinstance(lstm_eps, (int, float)) or not lstm_eps > 0:
            raise ValueError(f"lstm_eps must be a number > 0, got {lstm_eps!r}")
        if bias_factor not in (0, 1):
            raise ValueError(f"bias_factor must be 0 or 1, got {bias_factor!r}")
        if chunk_frames is not None and (
            isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1
        ):
            raise ValueError(f"chunk_frames must be None or an integer >= 1, got {chunk_frames!r}")
        self.lstm_eps = float(lstm_eps)
        self.bias_factor = float(bias_factor)
        self.chunk_frames = chunk_frames
        self._check_structure(net)
        self._encoder_steps: list[Step] = compile_sequential(net.encoder, "encoder")
        self._head_steps: list[Step] = compile_sequential(net.head, "head")

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _check_structure(net: nn.Module) -> None:
        kind = type(net).__name__
        encoder, head = getattr(net, "encoder", None), getattr(net, "head", None)
        lstm, cells = getattr(net, "lstm", None), getattr(net, "cells", None)
        if not isinstance(encoder, nn.Module) or not isinstance(head, nn.Module):
            raise ValueError(
                f"VideoLRP cannot explain {kind}: it needs `encoder` and `head` modules plus `lstm` or "
                "`cells` "
                "(the structure of vidxai's VGG16LSTM / ConvLSTM)"
            )
        if not isinstance(lstm, nn.LSTM) and not isinstance(cells, nn.ModuleList):
            raise ValueError(
                f"VideoLRP cannot explain {kind}: it has neither an nn.LSTM `lstm` nor an nn.ModuleList "
                "`cells`"
            )

    def _recurrent_layers(self) -> list[RecurrentLayer]:
        lstm = getattr(self.net, "lstm", None)
        return lstm_layers(lstm) if isinstance(lstm, nn.LSTM) else convlstm_layers(self.net.cells)

    # ------------------------------------------------------------------ captum API
    @property
    def multiplies_by_inputs(self) -> bool:
        """LRP relevance is a product with the inputs (Captum's flag)."""
        return True

    def has_convergence_delta(self) -> bool:
        """``attribute`` can return the conservation error."""
        return True

    def compute_convergence_delta(self, attributions: Tensor, output: Tensor) -> Tensor:
        """Per sample: sum of ``attributions`` minus ``output`` (the target logits, shape ``(B,)``)."""
        return attributions.flatten(1).sum(1) - output.flatten().to(attributions)

    def attribute(
        self,
        inputs: Tensor,
        target: TargetType = None,
        return_convergence_delta: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Relevance of ``inputs (B, T, C, H, W)`` for ``target``, shaped like ``inputs``.

        ``target``: an int (every sample), a list / tensor of one class per sample, or ``None`` for the
        predicted class. With ``return_convergence_delta`` also returns ``sum(relevance) - target logit``
        per sample (Captum's LRP returns the opposite sign).
        """
        out = self._propagate(inputs, target)
        relevance = out["relevance"].to(device=inputs.device, dtype=inputs.dtype)
        if return_convergence_delta:
            target_logits = out["logits"].gather(1, out["target"][:, None])[:, 0]
            return relevance, self.compute_convergence_delta(relevance, target_logits.to(relevance.device))
        return relevance

    def explain(self, clip: Tensor, target: int | None = None) -> Explanation:
        """Explain one clip ``(T, C, H, W)`` (or ``(1, T, C, H, W)``); ``target=None``: predicted class."""
        if isinstance(clip, Tensor) and clip.ndim == 5 and clip.shape[0] == 1:
            clip = clip[0]
        if not isinstance(clip, Tensor) or clip.ndim != 4:
            shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
            raise ValueError(f"explain takes one clip (T, C, H, W), got {shape}; use attribute() for batches")
        out = self._propagate(clip[None], target)
        relevance = out["relevance"][0].detach().cpu()
        pixel = relevance.sum(1)
        feature = out["feature"][0].detach().cpu()
        if feature.ndim > 2:  # ConvLSTM: per input channel, summed over space
            feature = feature.flatten(2).sum(2)
        return Explanation(
            pixel=pixel,
            frame=pixel.flatten(1).sum(1),
            feature=feature,
            logits=out["logits"][0].detach().cpu(),
            target=int(out["target"][0]),
            rule=self.rule_name,
            initial_state={
                f"{k}_l{layer}": r[0].detach().cpu()
                for k, v in out["initial"].items()
                for layer, r in enumerate(v)
            },
            relevance=relevance,
            params=dict(self.rule_params),
        )

    # ------------------------------------------------------------------ propagation
    def _model_tensor(self) -> Tensor | None:
        return next(iter(self.net.parameters()), None)

    def _resolve_target(self, target: TargetType, logits: Tensor) -> Tensor:
        batch, classes = logits.shape
        if target is None:
            idx = logits.argmax(1)
        elif isinstance(target, Tensor):
            idx = target.flatten().to(device=logits.device, dtype=torch.long)
            if idx.numel() == 1:
                idx = idx.expand(batch)
        elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            idx = torch.full((batch,), int(target), dtype=torch.long, device=logits.device)
        elif isinstance(target, Sequence) and all(isinstance(t, (int, np.integer)) for t in target):
            idx = torch.tensor([int(t) for t in target], dtype=torch.long, device=logits.device)
        else:
            raise ValueError(f"target must be an int, a list of ints, a tensor or None, got {target!r}")
        if idx.numel() != batch:
            raise ValueError(f"target has {idx.numel()} entries for a batch of {batch} clips")
        if bool(((idx < 0) | (idx >= classes)).any()):
            raise ValueError(f"target {idx.tolist()} out of range for {classes} classes (0..{classes - 1})")
        return idx

    def _encode(self, frames: Tensor) -> Tensor:
        return run_steps(self._encoder_steps, self.composite, frames)

    def _propagate(self, inputs: Tensor, target: TargetType) -> dict[str, Any]:
        if not isinstance(inputs, Tensor) or inputs.ndim != 5:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"VideoLRP expects clips (B, T, C, H, W), got {shape}")
        if not inputs.is_floating_point():
            raise ValueError(
                f"VideoLRP expects float (normalised) clips, got {inputs.dtype}: apply the data module's "
                "VideoTransform"
            )
        ref = self._model_tensor()
        with torch.inference_mode(False), torch.enable_grad():
            x = inputs.detach()
            if ref is not None:
                x = x.to(device=ref.device, dtype=ref.dtype)
            if x.is_inference():
                x = x.clone()
            b, t = x.shape[:2]
            frames = x.reshape(b * t, *x.shape[2:])
            n = frames.shape[0]
            chunk = n if self.chunk_frames is None else min(self.chunk_frames, n)
            graph = None
            if not self._encoder_steps:
                feats = frames
            elif chunk >= n:  # one pass: keep the graph for the relevance
                leaf = frames.detach().requires_grad_(True)
                graph = (leaf, self._encode(leaf))
                feats = graph[1].detach()
            else:  # first pass without graph, chunk by chunk
                with torch.no_grad():
                    feats = torch.cat([self._encode(frames[k : k + chunk]) for k in range(0, n, chunk)])
            feats_seq = feats.reshape(b, t, *feats.shape[1:])

            layers = self._recurrent_layers()
            hidden, traces = recurrent_forward(layers, feats_seq)
            logits, head_trace = head_forward(self._head_steps, hidden[:, -1])
            idx = self._resolve_target(target, logits)
            r_logits = torch.zeros_like(logits).scatter_(1, idx[:, None], logits.gather(1, idx[:, None]))
            r_last = head_relevance(self._head_steps, head_trace, r_logits, self.lstm_eps, self.bias_factor)
            r_hidden = torch.zeros_like(hidden)
            r_hidden[:, -1] = r_last
            r_feats, r_h0, r_c0 = recurrent_relevance(
                layers, traces, r_hidden, self.lstm_eps, self.bias_factor
            )
            r_feats_flat = r_feats.reshape(feats.shape)

            if not self._encoder_steps:
                r_frames = r_feats_flat
            elif graph is not None:
                (r_frames,) = torch.autograd.grad(graph[1], graph[0], r_feats_flat)
            else:
                parts = []
                for k in range(0, n, chunk):
                    leaf = frames[k : k + chunk].detach().requires_grad_(True)
                    (r,) = torch.autograd.grad(self._encode(leaf), leaf, r_feats_flat[k : k + chunk])
                    parts.append(r)
                r_frames = torch.cat(parts)
        return {
            "relevance": r_frames.reshape(x.shape).detach(),
            "feature": r_feats.detach(),
            "logits": logits.detach(),
            "target": idx,
            "initial": {"h0": r_h0, "c0": r_c0},
        }
