"""``VideoLRP``: LRP for video classifiers behind Captum's ``Attribution`` API.

The explainer knows a network only through its stages (:func:`vidxai.models.contract.explain_stages`):
``[frames] [recurrent] head`` (VGG16+LSTM, ConvLSTM), ``clip head`` (a 3D CNN such as R(2+1)D-18), or
any sequence of registered stage kinds. One propagation per call: forward through the stages'
propagators (:mod:`vidxai.xai.propagators`, one registered per stage kind), then the relevance starts as
the target logit (one-hot times logit) at the head and goes back through them in reverse order: through
the recurrent part over time (Arras et al. 2017, :mod:`vidxai.xai.recurrent`), through the per-frame CNN
with time folded into the batch, or through a clip CNN; in the CNNs the rules of the chosen composite run
as modified gradients (:mod:`vidxai.xai.rules`, :mod:`vidxai.xai.cnn`). No module is called and no hook
is registered: the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from captum.attr import Attribution
from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models.contract import Stage, explain_stages
from vidxai.models.foreign import as_video_net, to_vidxai_layout
from vidxai.xai.attention import check_attention_rule
from vidxai.xai.composites import fill_box_bounds
from vidxai.xai.propagators import PropagatorContext, StagePropagator, StageRelevance, build_propagator
from vidxai.xai.recurrent import LSTM_RULES, check_lstm_rule
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


class VideoLRP(Attribution):
    """Layer-wise Relevance Propagation for any video network with the explainer contract.

    Args:
        model: the network, or a LightningModule whose ``.net`` is the network. A network implementing
            :class:`~vidxai.models.contract.ExplainableVideoNet` (``explain_stages()``: VGG16LSTM, ConvLSTM,
            R2Plus1D, VideoMAE, TimeSformer and any network written to the contract) takes clips
            ``(B, T, C, H, W)``; a torchvision video model (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``) takes
            ``(B, C, T, H, W)`` and a ``transformers`` ``...ForVideoClassification`` model (VideoMAE,
            TimeSformer) ``(B, T, C, H, W)``, as they do themselves (:mod:`vidxai.models.foreign`; ``layout``).
            Anything else: a ``ConfigError`` naming the first module type vidxai does not know.
        rule: a name from :data:`~vidxai.xai.RULES` (``z``, ``epsilon``, ``gamma``, ``alpha_beta``, the
            presets and composites such as ``epsilon_gamma_box``): which rule each layer of the CNN stages
            and of the head gets; the network's first conv is the composites' "first layer".
        lstm_eps: epsilon of the recurrent part and of a head after it (Arras et al.: 1e-3).
        bias_factor: 0 (bias and stabiliser absorb their share) or 1 (spread over the inputs, so the
            recurrent part and the head after it conserve relevance exactly, initial states included).
        lstm_rule: how the LSTM / ConvLSTM products ``i*g`` and ``o*tanh(c)`` split relevance between
            gate and signal: ``signal_take_all`` (Arras et al. 2017, the gate gets nothing), ``half`` or
            ``proportional`` (see :mod:`vidxai.xai.recurrent`).
        chunk_frames: run the per-frame CNN stage on at most this many frames at a time (bounded memory,
            same result; the CNN forward is then recomputed per chunk). ``None``: all frames at once.
            Not for clip networks: their 3D convolutions mix frames (a ``ValueError`` says so).
        preprocess: the checkpoint's preprocessing (``mean``, ``std``): where a rule's input bounds
            ``low`` / ``high`` are unset (``epsilon_gamma_box``) they are computed from it (pixels in
            ``[0, 1]`` normalised); without it, from the data pipeline's default normalisation.
        attention_rule: the attention rule of a transformer (``attnlrp``: AttnLRP, the default; ``cp``: CP-LRP,
            attention weights held constant; :mod:`vidxai.xai.attention`). ``None``: the default; set on a
            network without attention, a ``ConfigError``.
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
        preprocess: Mapping[str, Any] | None = None,
        attention_rule: str | None = None,
        **rule_params: Any,
    ) -> None:
        own = _unwrap(model)
        # a torchvision / transformers model is explained through its adapter (vidxai's clip layout inside);
        # inputs and relevance keep the layout the model takes (``self.layout``)
        net, self.layout = as_video_net(own)
        super().__init__(own)
        self.net = net
        self.rule_name = rule
        # the registry checks name and params; input bounds of a box rule come from the preprocess
        self.rule_params = resolve_rule(rule, **fill_box_bounds(resolve_rule(rule, **rule_params), preprocess))
        self.composite = make_composite(rule, **self.rule_params)
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
        self.attention_rule = None if attention_rule is None else check_attention_rule(attention_rule)
        try:
            stages = explain_stages(net)
        except TypeError as err:  # no contract / malformed stages: one line naming the fix
            msg = str(err)
            raise ValueError(
                f"VideoLRP {msg}" if msg.startswith("cannot explain") else f"VideoLRP cannot explain: {msg}"
            ) from None
        self.stages: dict[str, Stage] = {s.kind: s for s in stages}
        self.propagators: list[StagePropagator] = self._build_propagators(stages)
        if self.attention_rule is not None and not any(getattr(p, "uses_attention", False) for p in self.propagators):
            raise ConfigError(
                f"attention_rule={attention_rule!r} does not apply to {type(net).__name__}: it has no attention "
                f"(stages {[s.kind for s in stages]}); leave attention_rule unset (null)"
            )

    def _build_propagators(self, stages: Sequence[Stage]) -> list[StagePropagator]:
        context = PropagatorContext(
            self.composite, self.lstm_rule, self.lstm_eps, self.bias_factor, self.chunk_frames, type(self.net).__name__,
            attention_rule=self.attention_rule,
        )
        out = []
        for k, stage in enumerate(stages):
            ctx = replace(context, first=k == 0, previous=stages[k - 1].kind if k else None)
            out.append(build_propagator(stage, ctx))
        return out

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
        """Relevance of ``inputs`` for ``target``, shaped like ``inputs``: clips ``(B, T, C, H, W)``, or
        ``(B, C, T, H, W)`` for a torchvision model (the layout the model takes, :attr:`layout`).

        ``target``: an int (every sample), a list / tensor of one class per sample, or ``None`` for the
        predicted class. With ``return_convergence_delta`` also returns ``sum(relevance) - target logit``
        per sample (Captum's LRP returns the opposite sign).
        """
        if isinstance(inputs, Tensor) and inputs.ndim == 5:
            out = self._propagate(to_vidxai_layout(inputs, self.layout), target)
            relevance = to_vidxai_layout(out["relevance"], self.layout)  # its own inverse: back to the model's
        else:
            out = self._propagate(inputs, target)  # one clear error
            relevance = out["relevance"]
        relevance = relevance.to(device=inputs.device, dtype=inputs.dtype)
        if return_convergence_delta:
            target_logits = out["logits"].gather(1, out["target"][:, None])[:, 0]
            return relevance, self.compute_convergence_delta(relevance, target_logits.to(relevance.device))
        return relevance

    def explain(self, clip: Tensor, target: int | None = None) -> Explanation:
        """Explain one clip ``(T, C, H, W)`` (or ``(1, T, C, H, W)``; ``(C, T, H, W)`` for a torchvision model, the
        layout it takes); ``target=None``: predicted class. ``Explanation.relevance`` is ``(T, C, H, W)``."""
        if isinstance(clip, Tensor) and clip.ndim == 5 and clip.shape[0] == 1:
            clip = clip[0]
        if isinstance(clip, Tensor) and clip.ndim == 4 and self.layout == "BCTHW":
            clip = clip.transpose(0, 1)
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
            h, contexts = x, []
            for propagator in self.propagators:  # forward, stage by stage
                h, ctx = propagator.forward(h)
                contexts.append(ctx)
            logits = h
            idx = self._resolve_target(target, logits)
            r = torch.zeros_like(logits).scatter_(1, idx[:, None], logits.gather(1, idx[:, None]))
            feature, initial = None, {}
            for k in reversed(range(len(self.propagators))):  # relevance, stage by stage back
                if k == 0 and feature is None:
                    feature = r  # by default: the relevance at the first stage's output
                res = self.propagators[k].relevance(contexts[k], r)
                res = res if isinstance(res, StageRelevance) else StageRelevance(res)
                feature = res.feature if res.feature is not None else feature
                initial.update(res.initial)
                r = res.input
        return {
            "relevance": r.reshape(x.shape).detach(),
            "feature": feature.detach(),
            "logits": logits.detach(),
            "target": idx,
            "initial": {"h0": [], "c0": [], **initial},
        }
