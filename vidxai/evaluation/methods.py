"""Attribution methods behind one interface: ``method(clip, target, key) -> map (T, H, W)``.

Every method the evaluation compares is built here from a network and plain settings: the LRP rules of
:data:`vidxai.xai.RULES` through :class:`~vidxai.xai.VideoLRP` (one method per rule, named by the rule;
``rule/lstm_rule`` names a variant of the recurrent rule where ``VideoLRP`` offers ``lstm_rule``), and
as baselines Captum's ``Saliency``, ``InputXGradient``, ``IntegratedGradients``, ``GuidedBackprop``,
``LayerGradCam`` (last conv layer of the frames/clip stage, upsampled to the input), ``Occlusion`` of
whole frames, and a seeded ``random`` map. All run on the same model, the same clip and the same target;
every map is summed over colour channels to ``(T, H, W)``, so frames and regions are scored alike.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidxai.models.contract import explain_stages
from vidxai.xai import RULES, VideoLRP
from vidxai.xai.cnn import weighted_layers
from vidxai.xai.recurrent import LSTM_RULES

__all__ = [
    "BASELINE_METHODS",
    "Method",
    "build_method",
    "default_methods",
    "last_conv_layer",
    "validate_method_names",
]

#: The non-LRP methods, in the order they are reported.
BASELINE_METHODS: tuple[str, ...] = (
    "saliency",
    "input_x_gradient",
    "integrated_gradients",
    "guided_backprop",
    "grad_cam",
    "occlusion",
    "random",
)

#: ``fn(clip (T, C, H, W) on the model's device, target class, key) -> (T, H, W)``; ``key`` seeds ``random``.
AttributeFn = Callable[[Tensor, int, int], Tensor]


@dataclass
class Method:
    """One attribution method: its name, family (``lrp``, ``captum``, ``random``), settings and function."""

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


def _has_recurrent(net: nn.Module | None) -> bool:
    if net is None:
        return True
    try:
        return any(stage.kind == "recurrent" for stage in explain_stages(net))
    except TypeError:
        return False


def default_methods(net: nn.Module | None = None, lstm_rule: str = LSTM_RULES[0]) -> list[str]:
    """Every LRP rule, ``epsilon/<rule>`` for each other recurrent gate rule, then the baselines.

    The gate-rule variants are left out for a ``net`` without a recurrent stage (they would equal ``epsilon``).
    """
    names = list(RULES)
    if _has_recurrent(net):
        names += [f"epsilon/{v}" for v in LSTM_RULES if v != lstm_rule]
    return names + list(BASELINE_METHODS)


def validate_method_names(names: list[str]) -> None:
    """Raise ``ValueError`` naming the unknown methods and the valid ones."""
    valid = set(RULES) | set(BASELINE_METHODS)
    bad = []
    for name in names:
        rule, _, variant = str(name).partition("/")
        if rule not in valid or ("/" in str(name) and (rule not in RULES or variant not in LSTM_RULES)):
            bad.append(name)
    if bad:
        raise ValueError(f"unknown method(s) {bad} in methods=; choose from {sorted(valid)}, or an LRP rule with "
                         f"a recurrent gate rule as RULE/LSTM_RULE, LSTM_RULE in {list(LSTM_RULES)}")


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


def _batch(clip: Tensor, grad: bool = True) -> Tensor:
    x = clip.detach()
    if x.is_inference():
        x = x.clone()
    return x[None].requires_grad_(grad)


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
    return attr[0].sum(1)  # (1, T, C, H, W) -> (T, H, W)


# ---------------------------------------------------------------------------- builders
def _lrp(net: nn.Module, name: str, chunk_frames: int | None, recurrent: dict[str, Any]) -> Method:
    rule, _, variant = name.partition("/")
    kwargs: dict[str, Any] = {**recurrent, "chunk_frames": chunk_frames}
    if variant:
        kwargs["lstm_rule"] = variant
    explainer = VideoLRP(net, rule=rule, **kwargs)
    settings = {"rule": rule, **explainer.rule_params, "lstm_rule": explainer.lstm_rule,
                "lstm_eps": explainer.lstm_eps, "bias_factor": explainer.bias_factor}

    def fn(clip: Tensor, target: int, key: int) -> Tensor:
        return explainer.explain(clip, target=target).pixel

    return Method(name, "lrp", settings, fn)


def _grad_cam(net: nn.Module) -> Method:
    from captum.attr import LayerGradCam

    layer_name, layer, kind = last_conv_layer(net)
    gc = LayerGradCam(net, layer)

    def fn(clip: Tensor, target: int, key: int) -> Tensor:
        t, _, h, w = clip.shape
        with _gradients(clip):
            cam = gc.attribute(_batch(clip), target=target, relu_attributions=True)
        cam = cam.detach()
        if kind == "frames":  # per-frame CNN: the layer's batch is B*T -> (T, 1, h', w')
            cam = cam.reshape(t, 1, *cam.shape[-2:])
            return F.interpolate(cam.float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        # clip stage: (1, 1, t', h', w') over space and time
        cam = cam.reshape(1, 1, *cam.shape[-3:])
        return F.interpolate(cam.float(), size=(t, h, w), mode="trilinear", align_corners=False)[0, 0]

    settings = {"layer": layer_name, "relu": True, "upsample": "bilinear" if kind == "frames" else "trilinear"}
    return Method("grad_cam", "captum", settings, fn)


def build_method(
    name: str,
    net: nn.Module,
    *,
    replacement: Callable[[Tensor], Tensor],
    batch_size: int = 32,
    ig_steps: int = 16,
    seed: int = 0,
    chunk_frames: int | None = None,
    recurrent: dict[str, Any] | None = None,
) -> Method:
    """Build method ``name`` on ``net`` (eval mode; it is only read).

    Args:
        replacement: ``clip -> replacement clip`` (the evaluation's ``baseline=``): what frame occlusion
            puts in place of a frame.
        batch_size: clips per forward for the methods that need many (occlusion, integrated gradients).
        ig_steps: integration steps of integrated gradients (baseline: zeros in model input space).
        seed: seeds the ``random`` map (with the per-video ``key``).
        chunk_frames: passed to ``VideoLRP``.
        recurrent: ``lstm_eps`` / ``bias_factor`` / ``lstm_rule`` for ``VideoLRP`` (a ``rule/lstm_rule``
            name overrides ``lstm_rule``); unset keys keep ``VideoLRP``'s defaults.
    """
    rule = name.partition("/")[0]
    if rule in RULES:
        return _lrp(net, name, chunk_frames, dict(recurrent or {}))
    if name == "random":
        def rand(clip: Tensor, target: int, key: int) -> Tensor:
            rng = np.random.default_rng([int(seed), int(key)])
            return torch.from_numpy(rng.random((clip.shape[0], *clip.shape[2:])))

        return Method("random", "random", {"distribution": "uniform [0, 1) per pixel", "seed": int(seed)}, rand)
    if name == "grad_cam":
        return _grad_cam(net)

    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency

    if name == "saliency":
        sal = Saliency(net)

        def saliency(clip: Tensor, target: int, key: int) -> Tensor:
            with _gradients(clip):
                return _channel_sum(sal.attribute(_batch(clip), target=target, abs=True))

        return Method(name, "captum", {"abs": True}, saliency)
    if name == "input_x_gradient":
        ixg = InputXGradient(net)

        def input_x_gradient(clip: Tensor, target: int, key: int) -> Tensor:
            with _gradients(clip):
                return _channel_sum(ixg.attribute(_batch(clip), target=target))

        return Method(name, "captum", {}, input_x_gradient)
    if name == "integrated_gradients":
        ig = IntegratedGradients(net)

        def integrated_gradients(clip: Tensor, target: int, key: int) -> Tensor:
            with _gradients(clip):
                attr = ig.attribute(_batch(clip), target=target, n_steps=int(ig_steps),
                                    internal_batch_size=int(batch_size))
            return _channel_sum(attr)

        return Method(name, "captum", {"n_steps": int(ig_steps), "baseline": "zeros (model input space)",
                                       "method": "gausslegendre"}, integrated_gradients)
    if name == "guided_backprop":
        gbp = GuidedBackprop(net)

        def guided_backprop(clip: Tensor, target: int, key: int) -> Tensor:
            with _gradients(clip), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                return _channel_sum(gbp.attribute(_batch(clip), target=target))

        return Method(name, "captum", {}, guided_backprop)
    if name == "occlusion":
        occ = Occlusion(net)

        def occlusion(clip: Tensor, target: int, key: int) -> Tensor:
            window = (1, *clip.shape[1:])  # one whole frame (all channels)
            base = replacement(clip)[None]
            with torch.no_grad():
                attr = occ.attribute(_batch(clip, grad=False), sliding_window_shapes=window, strides=window,
                                     baselines=base, target=target, perturbations_per_eval=int(batch_size))
            return _channel_sum(attr)

        return Method(name, "captum", {"window": "one whole frame", "baseline": "the evaluation's replacement"},
                      occlusion)
    raise ValueError(f"unknown method {name!r}; choose from {default_methods()}")
