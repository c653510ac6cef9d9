"""Attribution methods behind one interface: ``method(clip, target, key) -> map (T, H, W)``.

Every method the evaluation compares is a registered builder (:func:`~vidxai.evaluation.registry.register_method`):
the LRP rules of :data:`vidxai.xai.RULES`, built with :class:`~vidxai.xai.config.LRPConfig` (one method per
rule, named by the rule; ``rule/lstm_rule`` names a variant of the recurrent gate rule on networks with a
recurrent stage), and as baselines Captum's ``Saliency``, ``InputXGradient``, ``IntegratedGradients``,
``GuidedBackprop``, ``LayerGradCam`` (last conv layer of the frames/clip stage, upsampled to the input),
``Occlusion`` of whole frames, and a seeded ``random`` map. All run on the same model, the same clip and the
same target; every map is summed over colour channels to ``(T, H, W)``, so frames and regions are scored alike.
A method that does not apply to a network (Grad-CAM without a convolution, a gate rule without a recurrent
stage) is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidxai.evaluation.registry import (
    METHODS,
    AttributeFn,
    Batched,
    BuildContext,
    MethodFamily,
    NotApplicable,
    method_family,
    register_method,
)
from vidxai.models.contract import Stage, explain_stages, run_stages
from vidxai.xai import RULES
from vidxai.xai.attention import ATTENTION_RULE_LABELS, ATTENTION_RULES, DEFAULT_ATTENTION_RULE
from vidxai.xai.cnn import weighted_layers
from vidxai.xai.config import LRPConfig
from vidxai.xai.recurrent import LSTM_RULES

__all__ = [
    "BASELINE_METHODS",
    "Method",
    "build_method",
    "default_methods",
    "family_of",
    "last_conv_layer",
    "method_label",
    "on_attention",
    "not_applicable",
    "validate_method_names",
]


@dataclass
class Method:
    """One attribution method: its name, family (``lrp``, ``captum``, ``random``...), settings and function."""

    name: str
    family: str
    settings: dict[str, Any]
    fn: AttributeFn = field(repr=False)

    def __call__(self, clip: Tensor, target: int, key: int = 0) -> Tensor:
        """The map ``(T, H, W)`` (float64, CPU) of ``clip (T, C, H, W)`` for class ``target``."""
        out = self.fn(clip, int(target), int(key))
        if out.shape != (clip.shape[0], *clip.shape[2:]):
            raise RuntimeError(f"method {self.name} returned a map of shape {tuple(out.shape)} for a clip "
                               f"{tuple(clip.shape)}; expected (T, H, W)")
        return out.detach().to("cpu", torch.float64)

    def many(self, clips: Sequence[Tensor], targets: Sequence[int], keys: Sequence[int]) -> list[Tensor]:
        """The maps of several clips of one shape, as ``self(clip, target, key)`` gives each one.

        A :class:`~vidxai.evaluation.registry.Batched` method explains them in one call, any other clip by clip.
        """
        if not isinstance(self.fn, Batched) or len(clips) < 2:
            return [self(c, t, k) for c, t, k in zip(clips, targets, keys, strict=True)]
        x = torch.stack(list(clips))
        out = self.fn.fn(x, [int(t) for t in targets], [int(k) for k in keys])
        if out.shape != (x.shape[0], x.shape[1], *x.shape[3:]):
            raise RuntimeError(f"method {self.name} returned maps of shape {tuple(out.shape)} for clips "
                               f"{tuple(x.shape)}; expected (B, T, H, W)")
        return list(out.detach().to("cpu", torch.float64))


#: The stage kind of a transformer's token encoder (``vidxai.models.hf_stages``): the stage the attention rules act on.
_ATTENTION_KIND = "tokens"


def stages_or_none(net: nn.Module) -> tuple[Stage, ...] | None:
    """The network's :func:`~vidxai.models.contract.explain_stages`, or ``None`` when it has no (valid) contract."""
    try:
        return explain_stages(net)
    except TypeError:
        return None


def _stage_kinds(net: nn.Module | None) -> set[str] | None:
    if net is None:
        return None
    return {stage.kind for stage in stages_or_none(net) or ()}


def _lrp_names(net: nn.Module | None, lstm_rule: str, attention_rule: str) -> list[str]:
    kinds = _stage_kinds(net)
    names = list(RULES)
    if kinds is None or "recurrent" in kinds:
        names += [f"epsilon/{v}" for v in LSTM_RULES if v != lstm_rule]
    if kinds is None or _ATTENTION_KIND in kinds:
        names += [f"epsilon/{v}" for v in ATTENTION_RULES if v != attention_rule]
    return names


def not_applicable(name: str, net: nn.Module) -> str | None:
    """``None`` when the method ``name`` applies to ``net``, else the reason it does not."""
    rule, _, variant = name.partition("/")
    if rule in RULES:
        kinds = _stage_kinds(net)
        if not kinds:
            return f"{type(net).__name__} does not implement explain_stages() (LRP needs the explainer contract)"
        if variant in LSTM_RULES and "recurrent" not in kinds:
            return "a recurrent gate rule, and the network has no recurrent stage"
        if variant in ATTENTION_RULES and _ATTENTION_KIND not in kinds:
            return "an attention rule, and the network has no attention stage"
        return None
    return METHODS[name].reason_not_applicable(net)


def default_methods(net: nn.Module | None = None, lstm_rule: str = LSTM_RULES[0],
                    attention_rule: str = DEFAULT_ATTENTION_RULE) -> list[str]:
    """Every LRP rule, ``epsilon/<rule>`` for each other recurrent gate rule and each other attention rule
    (``epsilon/cp`` beside AttnLRP), then the registered baselines.

    With ``net``, only the methods that apply to it (gate rules need a recurrent stage, attention rules an
    attention stage, Grad-CAM a convolution).
    """
    names = _lrp_names(net, lstm_rule, attention_rule) + [n for n, spec in METHODS.items() if spec.default]
    return names if net is None else [n for n in names if not_applicable(n, net) is None]


#: The default methods of ``explain.py mode=evaluate`` (``methods=all``: every method, :func:`default_methods`):
#: the few that docs/results.md compares on every recipe, because they were the best or tied with the best on
#: some score of the measured runs, or are the paper's rules: the paper's epsilon and alpha-beta rules, the
#: recommended composite (epsilon_plus_flat), integrated gradients (best relevance mass in the actor box on 4 of
#: the 10 recipes), occlusion (best frame flipping LeRF and evidence-frame score on every events recipe),
#: saliency (the cheapest gradient map; best region flipping on default_vgg16_lstm), and the random map, the
#: floor every method must beat. 7 methods = 6 comparisons per score: 8 videos can separate them (6 x 2/2^8 =
#: 0.047 < 0.05), where all 18 need 10.
RECOMMENDED = ("epsilon", "alpha_beta", "epsilon_plus_flat", "integrated_gradients", "occlusion", "saliency",
               "random")
#: the same for networks with attention: AttnLRP (epsilon), CP-LRP, rollout, Chefer et al., IG, occlusion, random
RECOMMENDED_ATTENTION = ("epsilon", "epsilon/cp", "attention_rollout", "chefer_relevancy", "integrated_gradients",
                         "occlusion", "random")


def recommended_methods(net: nn.Module | None = None, lstm_rule: str = LSTM_RULES[0],
                        attention_rule: str = DEFAULT_ATTENTION_RULE) -> list[str]:
    """:data:`RECOMMENDED` (:data:`RECOMMENDED_ATTENTION` for a network with an attention stage), keeping the
    ones that apply to ``net``."""
    every = default_methods(net, lstm_rule, attention_rule)
    attention = net is not None and _ATTENTION_KIND in (_stage_kinds(net) or set())
    return [n for n in (RECOMMENDED_ATTENTION if attention else RECOMMENDED) if n in every]


#: the family of every LRP method (each rule of :data:`vidxai.xai.RULES` and its gate/attention variants)
LRP_FAMILY = "lrp"


def family_of(name: str, family: str | None = None) -> MethodFamily:
    """How the method ``name`` is drawn (:class:`~vidxai.evaluation.registry.MethodFamily`): ``family`` when
    given (a result records each method's family), else the family of its registration."""
    if family is None:
        family = LRP_FAMILY if name.partition("/")[0] in RULES else METHODS[name].family if name in METHODS else (
            "other")  # a method this process does not know (a result written elsewhere)
    return method_family(family)


def method_label(name: str, settings: dict[str, Any] | None = None) -> str:
    """What a report calls the method: its registered ``label``, or for an LRP method on a network with attention
    (``attention_rule`` in its ``settings``) the name with the attention rule's paper name, ``epsilon (AttnLRP)``,
    ``epsilon/cp (CP-LRP)``; else ``name``."""
    if name in METHODS:
        return METHODS[name].label or name
    base, _, variant = name.partition("/")
    rule = (settings or {}).get("attention_rule") or (variant if variant in ATTENTION_RULES else None)
    if base in RULES and rule in ATTENTION_RULE_LABELS:
        return f"{name} ({ATTENTION_RULE_LABELS[rule]})"
    return name


def on_attention(methods: dict[str, Any]) -> bool:
    """Whether the methods of a result (name -> entry) ran on a network with attention: an LRP method records its
    attention rule, or is an attention-rule variant (``epsilon/cp``), or a method of the attention family ran."""
    for name, entry in methods.items():
        entry = entry if isinstance(entry, dict) else {}
        if "attention_rule" in (entry.get("settings") or {}) or name.partition("/")[2] in ATTENTION_RULES:
            return True
        if entry.get("family") == "attention" and not entry.get("skipped"):
            return True
    return False


def validate_method_names(names: list[str]) -> None:
    """Raise ``ValueError`` naming the unknown methods and the valid ones."""
    valid = set(RULES) | set(METHODS)
    variants = set(LSTM_RULES) | set(ATTENTION_RULES)
    bad = []
    for name in names:
        rule, _, variant = str(name).partition("/")
        if rule not in valid or ("/" in str(name) and (rule not in RULES or variant not in variants)):
            bad.append(name)
    if bad:
        raise ValueError(f"unknown method(s) {bad} in methods=; choose from {sorted(valid)}, or an LRP rule with "
                         f"a recurrent gate rule or an attention rule as RULE/VARIANT, VARIANT in "
                         f"{list(LSTM_RULES) + list(ATTENTION_RULES)}")


# ---------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _gradients(clip: Tensor) -> Iterator[None]:
    """Gradients on, and no cuDNN RNN (its backward refuses eval mode) for the Captum methods."""
    with torch.inference_mode(False), torch.enable_grad():
        if clip.is_cuda:
            with torch.backends.cudnn.flags(enabled=False):
                yield
        else:
            yield


def _inputs(clips: Tensor, grad: bool = True) -> Tensor:
    x = clips.detach()
    if x.is_inference():
        x = x.clone()
    return x.requires_grad_(grad)


def last_conv_layer(net: nn.Module) -> tuple[str, nn.Module, str]:
    """``(name, layer, stage kind)`` of the last convolution of the network's first stage that has one.

    Layers are found as the explainer compiles the stages (:func:`vidxai.xai.cnn.weighted_layers`, the
    layer registry; nested residual blocks included): a convolution is a layer whose op has channels
    first. Raises ``ValueError`` when no stage has one (e.g. a ConvLSTM without a stem).
    """
    for stage in explain_stages(net):
        layers = weighted_layers(stage.module, stage.name) or []
        convs = [s for s in layers if s.op is not None and s.op.channel_dim == 1]
        if convs:
            return convs[-1].name, convs[-1].module, stage.kind
    raise ValueError(f"{type(net).__name__} has no Conv2d/Conv3d in a frames or clip stage (no Grad-CAM layer)")


def _channel_sum(attr: Tensor) -> Tensor:
    return attr.sum(2)  # (B, T, C, H, W) -> (B, T, H, W)


# ---------------------------------------------------------------------------- builders
# Every built-in method is Batched: fn(clips (B, T, C, H, W), targets, keys) -> (B, T, H, W), one clip = B of 1.
def _lrp(net: nn.Module, name: str, ctx: BuildContext) -> Method:
    rule, _, variant = name.partition("/")
    base = ctx.lrp if ctx.lrp is not None else LRPConfig()
    config = base.with_rule(rule, {**dict(base.params if base.rule == rule else {}), **ctx.rule_params.get(rule, {})})
    if variant:
        key = "attention_rule" if variant in ATTENTION_RULES else "lstm_rule"
        config = LRPConfig.from_dict(config.to_dict(), **{key: variant})
    explainer = config.build(net)
    settings = {"rule": rule, **explainer.rule_params, "lstm_rule": explainer.lstm_rule,
                "lstm_eps": explainer.lstm_eps, "bias_factor": explainer.bias_factor}
    if _ATTENTION_KIND in (_stage_kinds(net) or ()):
        settings["attention_rule"] = explainer.attention_rule or DEFAULT_ATTENTION_RULE

    def fn(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        return _channel_sum(explainer.attribute(clips, target=list(targets)))

    return Method(name, LRP_FAMILY, settings, Batched(fn))


def _no_conv(net: nn.Module) -> str | None:
    try:
        last_conv_layer(net)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


@register_method("saliency", family="captum", settings={"abs": True})
def _saliency(net: nn.Module, ctx: BuildContext) -> Batched:
    from captum.attr import Saliency

    sal = Saliency(net)

    def saliency(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        with _gradients(clips):
            return _channel_sum(sal.attribute(_inputs(clips), target=list(targets), abs=True))

    return Batched(saliency)


@register_method("input_x_gradient", family="captum")
def _input_x_gradient(net: nn.Module, ctx: BuildContext) -> Batched:
    from captum.attr import InputXGradient

    ixg = InputXGradient(net)

    def input_x_gradient(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        with _gradients(clips):
            return _channel_sum(ixg.attribute(_inputs(clips), target=list(targets)))

    return Batched(input_x_gradient)


@register_method("integrated_gradients", family="captum")
def _integrated_gradients(net: nn.Module, ctx: BuildContext) -> tuple[Batched, dict[str, Any]]:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(net)

    def integrated_gradients(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        with _gradients(clips):  # ig_steps x B clips, in batches of batch_size clips
            attr = ig.attribute(_inputs(clips), target=list(targets), n_steps=int(ctx.ig_steps),
                                internal_batch_size=int(ctx.batch_size))
        return _channel_sum(attr)

    return Batched(integrated_gradients), {"n_steps": int(ctx.ig_steps), "baseline": "zeros (model input space)",
                                           "method": "gausslegendre"}


@register_method("guided_backprop", family="captum")
def _guided_backprop(net: nn.Module, ctx: BuildContext) -> Batched:
    from captum.attr import GuidedBackprop

    gbp = GuidedBackprop(net)

    def guided_backprop(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        with _gradients(clips), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return _channel_sum(gbp.attribute(_inputs(clips), target=list(targets)))

    return Batched(guided_backprop)


@register_method("grad_cam", family="captum", applies=_no_conv)
def _grad_cam(net: nn.Module, ctx: BuildContext) -> tuple[Batched, dict[str, Any]]:
    from captum.attr import LayerGradCam

    layer_name, layer, kind = last_conv_layer(net)
    gc = LayerGradCam(net, layer)

    def fn(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        b, t, _, h, w = clips.shape
        with _gradients(clips):
            cam = gc.attribute(_inputs(clips), target=list(targets), relu_attributions=True)
        cam = cam.detach().float()
        if kind == "frames":  # per-frame CNN: the layer's batch is B*T -> (B*T, 1, h', w')
            cam = F.interpolate(cam.reshape(b * t, 1, *cam.shape[-2:]), size=(h, w), mode="bilinear",
                                align_corners=False)
            return cam.reshape(b, t, h, w)
        # clip stage: (B, 1, t', h', w') over space and time
        cam = cam.reshape(b, 1, *cam.shape[-3:])
        return F.interpolate(cam, size=(t, h, w), mode="trilinear", align_corners=False)[:, 0]

    return Batched(fn), {"layer": layer_name, "relu": True, "upsample": "bilinear" if kind == "frames" else "trilinear"}


def _frame_occlusion(stages: Sequence[Stage], clips: Tensor, bases: Tensor, targets: Sequence[int],
                     batch_size: int) -> Tensor:
    """Captum's whole-frame ``Occlusion`` map of a per-frame CNN, with each distinct frame through the CNN once.

    Occluding frame ``j`` changes only frame ``j``'s features: the CNN runs on the ``2 T`` frames of each clip
    and its replacement, the later stages on the clean and the ``T`` occluded feature sequences. Each pixel of
    frame ``j`` gets ``f(x) - f(x with frame j replaced)`` in every channel (summed over the channels).
    """
    b, t, c, h, w = clips.shape
    with torch.inference_mode():
        feats = torch.cat([stages[0].module(part) for part in torch.cat([clips, bases]).flatten(0, 1).split(
            batch_size * t)])  # (2 B T, ...): the clips' frames, then the replacements'
        ids = torch.arange(b * t).reshape(b, 1, t).repeat(1, t + 1, 1)  # (B, 1 + T sequences, T frames)
        steps = torch.arange(t)
        ids[:, 1 + steps, steps] += b * t  # sequence 1 + j: frame j replaced
        seqs = feats[ids.flatten(0, 1)]
        logits = torch.cat([run_stages(stages[1:], part) for part in seqs.split(batch_size)]).reshape(b, t + 1, -1)
        f = logits.gather(2, torch.tensor(list(targets), device=logits.device).reshape(b, 1, 1).expand(b, t + 1, 1))
        drop = (f[:, :1, 0] - f[:, 1:, 0]) * c  # (B, T): f(x) - f(x_j), once per channel
    return drop[:, :, None, None].expand(b, t, h, w).clone()


@register_method("occlusion", family="perturbation",
                 settings={"window": "one whole frame", "baseline": "the evaluation's replacement"})
def _occlusion(net: nn.Module, ctx: BuildContext) -> tuple[Batched, dict[str, Any]]:
    from captum.attr import Occlusion

    occ = Occlusion(net)
    stages = stages_or_none(net)
    per_frame = stages is not None and stages[0].kind == "frames"

    def occlusion(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        base = torch.stack([ctx.replacement(c) for c in clips])
        if per_frame:
            return _frame_occlusion(stages, clips.detach(), base, targets, int(ctx.batch_size))
        window = (1, *clips.shape[2:])  # one whole frame (all channels)
        per_eval = max(1, int(ctx.batch_size) // len(clips))  # about batch_size clips per forward
        with torch.no_grad():
            attr = occ.attribute(_inputs(clips, grad=False), sliding_window_shapes=window, strides=window,
                                 baselines=base, target=list(targets), perturbations_per_eval=per_eval)
        return _channel_sum(attr)

    return Batched(occlusion), {"computation": "per-frame CNN features, each distinct frame once" if per_frame
                                else "captum.attr.Occlusion"}


@register_method("random", family="random")
def _random(net: nn.Module, ctx: BuildContext) -> tuple[Batched, dict[str, Any]]:
    seed = int(ctx.seed)

    def rand(clips: Tensor, targets: Sequence[int], keys: Sequence[int]) -> Tensor:
        shape = (clips.shape[1], *clips.shape[3:])
        return torch.stack([torch.from_numpy(np.random.default_rng([seed, int(k)]).random(shape)) for k in keys])

    return Batched(rand), {"distribution": "uniform [0, 1) per pixel", "seed": seed}


#: The registered non-LRP methods at import time, in the order they are reported.
BASELINE_METHODS: tuple[str, ...] = tuple(METHODS)


def build_method(name: str, net: nn.Module, ctx: BuildContext) -> Method:
    """Build method ``name`` on ``net`` (eval mode; it is only read).

    Raises :class:`~vidxai.evaluation.registry.NotApplicable` (with the reason) when the method does not apply
    to ``net``, ``ValueError`` for an unknown name.
    """
    reason = not_applicable(name, net) if name.partition("/")[0] in RULES or name in METHODS else None
    if reason is not None:
        raise NotApplicable(reason)
    if name.partition("/")[0] in RULES:
        return _lrp(net, name, ctx)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {default_methods()}")
    spec = METHODS[name]
    built = spec.build(net, ctx)
    fn, settings = built if isinstance(built, tuple) else (built, {})
    return Method(name, spec.family, {**spec.settings, **settings}, fn)
