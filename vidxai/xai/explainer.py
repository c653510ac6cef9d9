"""``VideoLRP``: LRP for video classifiers behind Captum's ``Attribution`` API.

The explainer knows a network only through its stages (:func:`vidxai.models.contract.explain_stages`):
``[frames] [recurrent] head`` (VGG16+LSTM, ConvLSTM) or ``clip head`` (a 3D CNN such as R(2+1)D-18).
One propagation per call, stage by stage from the output: the relevance starts as the target logit
(one-hot times logit) at the head, goes back through the recurrent part over time (Arras et al. 2017,
see :mod:`vidxai.xai.recurrent`) to the per-frame features and through the per-frame CNN with time
folded into the batch, or from the head straight into the clip CNN; in the CNNs the rules of the chosen
composite run as modified gradients (:mod:`vidxai.xai.rules`, :mod:`vidxai.xai.cnn`). No module is
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

from vidxai.models.contract import Stage, explain_stages
from vidxai.xai.cnn import Step, compile_sequential, run_steps
from vidxai.xai.recurrent import (
    LSTM_RULES,
    RecurrentLayer,
    check_lstm_rule,
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
            per channel of the ConvLSTM input maps summed over space. For a clip network (3D CNN) there
            are no per-frame features: ``(T', C)``, the relevance of its last feature map (the input of
            its final global pooling) per channel summed over space, ``T'`` that map's temporal length
            (``ceil(T / 8)`` for R(2+1)D-18; 1 for 8 frames).
        logits: ``(C,)`` the logits of the clip.
        target: the explained class.
        rule: the rule name; ``params`` its resolved parameters.
        initial_state: relevance of the recurrent initial states per layer ``k``: ``"h0_l{k}"``, ``"c0_l{k}"``
            (zero states receive relevance only through ``bias_factor=1``); empty without a recurrent stage.
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


def _split_global_pool(steps: list[Step]) -> tuple[list[Step], list[Step]]:
    """Split a clip CNN's steps into the body and its trailing pooling / flatten steps."""
    k = len(steps)
    while k > 0 and steps[k - 1].kind in ("avgpool", "maxpool", "flatten"):
        k -= 1
    return steps[:k], steps[k:]


class VideoLRP(Attribution):
    """Layer-wise Relevance Propagation for any video network with the explainer contract.

    Args:
        model: the network, or a LightningModule whose ``.net`` is the network. It must implement
            :class:`~vidxai.models.contract.ExplainableVideoNet` (``explain_stages()``): VGG16LSTM,
            ConvLSTM, R2Plus1D and any network written to the contract.
        rule: a name from :data:`~vidxai.xai.RULES` (``z``, ``epsilon``, ``gamma``, ``alpha_beta``,
            ``preset_a_flat``, ``preset_b_flat``) for the CNN stage (per-frame or clip); its first
            conv is the "first layer" of the flat presets.
        lstm_eps: epsilon of the recurrent part and the head (Arras et al.: 1e-3).
        bias_factor: 0 (bias and stabiliser absorb their share) or 1 (spread over the inputs, so the
            recurrent part and head conserve relevance exactly, initial states included).
        lstm_rule: how the LSTM / ConvLSTM products ``i*g`` and ``o*tanh(c)`` split relevance between
            gate and signal: ``signal_take_all`` (Arras et al. 2017, the gate gets nothing), ``half`` or
            ``proportional`` (see :mod:`vidxai.xai.recurrent`).
        chunk_frames: run the per-frame CNN stage on at most this many frames at a time (bounded memory,
            same result; the CNN forward is then recomputed per chunk). ``None``: all frames at once.
            Not for clip networks: their 3D convolutions mix frames (a ``ValueError`` says so).
        **rule_params: parameters of ``rule`` (``epsilon``, ``gamma``, ``alpha``, ``beta``,
            ``beta_sign="paper"`` to give alpha-beta in the paper's ``alpha + beta = 1`` spelling).

    Explaining never changes the model (no hooks, no parameter writes, modes untouched); the
    computation is that of eval mode (dropout off, BatchNorm running statistics, folded into the conv).
    """

    #: the accepted ``lstm_rule`` names, the default first
    LSTM_RULES = LSTM_RULES

    def __init__(
        self,
        model: nn.Module,
        rule: str = "epsilon",
        *,
        lstm_eps: float = 1e-3,
        bias_factor: float = 0.0,
        lstm_rule: str = "signal_take_all",
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
        self.lstm_rule = check_lstm_rule(lstm_rule)
        self.lstm_eps = float(lstm_eps)
        self.bias_factor = float(bias_factor)
        self.chunk_frames = chunk_frames
        try:
            stages = explain_stages(net)
        except TypeError as err:  # no contract / malformed stages: one line naming the fix
            msg = str(err)
            raise ValueError(
                f"VideoLRP {msg}" if msg.startswith("cannot explain") else f"VideoLRP cannot explain: {msg}"
            ) from None
        self.stages: dict[str, Stage] = {s.kind: s for s in stages}
        frames, clip, head = (self.stages.get(k) for k in ("frames", "clip", "head"))
        if clip is not None and chunk_frames is not None:
            raise ValueError(
                f"chunk_frames={chunk_frames} does not apply to {type(net).__name__}: its clip stage "
                f"{clip.name!r} mixes frames in 3D convolutions; set chunk_frames=null"
            )
        self._encoder_steps: list[Step] | None = (
            None if frames is None else compile_sequential(frames.module, frames.name)
        )
        self._clip_steps: tuple[list[Step], list[Step]] | None = (
            None if clip is None else _split_global_pool(compile_sequential(clip.module, clip.name))
        )
        self._head_steps: list[Step] = compile_sequential(head.module, head.name)
        bad = [s.name for s in self._head_steps if s.kind == "residual"]
        if bad:
            raise ValueError(
                f"VideoLRP cannot explain {bad[0]}: residual blocks belong in the clip stage, not the head"
            )
        self._recurrent_layers()  # an unsupported recurrent module fails here, not at the first explanation

    def _recurrent_layers(self) -> list[RecurrentLayer] | None:
        stage = self.stages.get("recurrent")
        if stage is None:
            return None
        if isinstance(stage.module, nn.LSTM):
            return lstm_layers(stage.module)
        return convlstm_layers(stage.module)

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
        return run_steps(self._encoder_steps or [], self.composite, frames)

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
            # forward, stage by stage: the first stage's output and what its relevance pass needs
            if self._clip_steps is not None:
                cnn = self._clip_forward(x)
            else:
                cnn = self._frames_forward(x)
            layers = self._recurrent_layers()
            if layers is not None:
                hidden, traces = recurrent_forward(layers, cnn["out"])
                head_in = hidden[:, -1]
            else:
                head_in = cnn["out"]
            logits, head_trace = head_forward(self._head_steps, head_in)
            idx = self._resolve_target(target, logits)

            # relevance, stage by stage back: head -> recurrent -> frames, or head -> clip
            r_logits = torch.zeros_like(logits).scatter_(1, idx[:, None], logits.gather(1, idx[:, None]))
            r_head_in = head_relevance(self._head_steps, head_trace, r_logits, self.lstm_eps, self.bias_factor)
            r_h0: list[Tensor] = []
            r_c0: list[Tensor] = []
            if layers is not None:
                r_hidden = torch.zeros_like(hidden)
                r_hidden[:, -1] = r_head_in
                r_out, r_h0, r_c0 = recurrent_relevance(
                    layers, traces, r_hidden, self.lstm_eps, self.bias_factor, self.lstm_rule
                )
            else:
                r_out = r_head_in
            if self._clip_steps is not None:
                relevance, feature = self._clip_relevance(cnn, r_out)
            else:
                relevance, feature = self._frames_relevance(cnn, r_out), r_out
        return {
            "relevance": relevance.reshape(x.shape).detach(),
            "feature": feature.detach(),
            "logits": logits.detach(),
            "target": idx,
            "initial": {"h0": r_h0, "c0": r_c0},
        }

    # per-frame CNN: time folded into the batch, optionally in chunks
    def _frames_forward(self, x: Tensor) -> dict[str, Any]:
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
        return {"out": feats.reshape(b, t, *feats.shape[1:]), "frames": frames, "graph": graph, "chunk": chunk}

    def _frames_relevance(self, cnn: dict[str, Any], r_out: Tensor) -> Tensor:
        frames, graph, chunk = cnn["frames"], cnn["graph"], cnn["chunk"]
        r_feats = r_out.reshape(frames.shape[0], *r_out.shape[2:])
        if not self._encoder_steps:
            return r_feats
        if graph is not None:
            (r_frames,) = torch.autograd.grad(graph[1], graph[0], r_feats)
            return r_frames
        parts = []
        for k in range(0, frames.shape[0], chunk):
            leaf = frames[k : k + chunk].detach().requires_grad_(True)
            (r,) = torch.autograd.grad(self._encode(leaf), leaf, r_feats[k : k + chunk])
            parts.append(r)
        return torch.cat(parts)

    # clip CNN: (B, T, C, H, W) -> (B, C, T, H, W), one pass over the whole clip
    def _clip_forward(self, x: Tensor) -> dict[str, Any]:
        body, pool = self._clip_steps  # type: ignore[misc]
        leaf = x.transpose(1, 2).detach().requires_grad_(True)
        fmap = run_steps(body, self.composite, leaf)
        out = run_steps(pool, self.composite, fmap) if pool else fmap
        return {"out": out.detach(), "leaf": leaf, "fmap": fmap, "graph_out": out}

    def _clip_relevance(self, cnn: dict[str, Any], r_out: Tensor) -> tuple[Tensor, Tensor]:
        leaf, fmap, out = cnn["leaf"], cnn["fmap"], cnn["graph_out"]
        if fmap is out or fmap is leaf:
            (r_leaf,) = torch.autograd.grad(out, leaf, r_out)
            r_fmap = r_out
        else:
            r_leaf, r_fmap = torch.autograd.grad(out, [leaf, fmap], r_out)
        # feature: per time step of the last feature map (B, C, T', ...) -> (B, T', C, ...)
        feature = r_fmap.transpose(1, 2) if r_fmap.ndim >= 3 else r_fmap[:, None]
        return r_leaf.transpose(1, 2), feature
