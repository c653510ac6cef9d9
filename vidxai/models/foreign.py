"""Networks vidxai did not build, explained as they are: torchvision's video models and ``transformers``'
``...ForVideoClassification`` models.

:func:`as_video_net` wraps such a model (never copied, never changed) in a thin adapter that takes clips in
vidxai's layout ``(B, T, C, H, W)``, returns the model's own logits and implements the explainer contract
(:mod:`vidxai.models.contract`), so :class:`~vidxai.xai.VideoLRP`, the explain modes and the evaluation treat it
like any vidxai network. The layout the model itself takes is kept beside it (``"BCTHW"`` for torchvision,
``"BTCHW"`` for ``transformers``), so ``VideoLRP(model).attribute(x)`` takes and returns that layout.

Two registries, one per extension point:

* :func:`register_foreign`: which model types are adapted, by which adapter, in which layout;
* :func:`register_torchvision_stages`: the explainer stages of one torchvision video architecture. Built in:
  ``VideoResNet`` (``r3d_18``, ``mc3_18``, ``r2plus1d_18``: torchvision's own stems and ``BasicBlock`` s, the
  blocks vidxai's R(2+1)D is built from) and ``S3D`` (separable convolutions, inception blocks, max pooling).
  ``MViT`` (``mvit_v1_b``, ``mvit_v2_s``) and ``SwinTransformer3d`` (``swin3d_t/s/b``): their own forward
  under the rules of the transformer engine (:mod:`vidxai.xai.engine`; stages from
  :func:`vidxai.models.hf_stages.model_stages`, channels first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from vidxai.errors import ConfigError
from vidxai.models.contract import ExplainableVideoNet, Stage
from vidxai.models.layers import ClipMean

__all__ = [
    "LAYOUTS",
    "ClipMean",
    "ForeignKind",
    "HFVideoClassifier",
    "TorchvisionVideoNet",
    "as_video_net",
    "explainable_summary",
    "first_unknown_module",
    "foreign_kinds",
    "register_foreign",
    "register_torchvision_stages",
    "to_model_layout",
    "to_vidxai_layout",
]

#: The clip layouts: vidxai's (and transformers') ``(B, T, C, H, W)``, torchvision's ``(B, C, T, H, W)``.
LAYOUTS = ("BTCHW", "BCTHW")


def to_vidxai_layout(x: Tensor, layout: str) -> Tensor:
    """A batch in ``layout`` as ``(B, T, C, H, W)`` (a view)."""
    return x.transpose(1, 2) if layout == "BCTHW" else x


def to_model_layout(x: Tensor, layout: str) -> Tensor:
    """A batch ``(B, T, C, H, W)`` in ``layout`` (a view)."""
    return x.transpose(1, 2) if layout == "BCTHW" else x


@dataclass(frozen=True)
class ForeignKind:
    """A registered kind of foreign network: which models it takes, how it adapts them, their input layout."""

    name: str
    matches: Callable[[nn.Module], bool]
    adapt: Callable[[nn.Module], nn.Module]
    layout: str


_FOREIGN: list[ForeignKind] = []


def register_foreign(name: str, matches: Callable[[nn.Module], bool], layout: str
                     ) -> Callable[[Callable[[nn.Module], nn.Module]], Callable[[nn.Module], nn.Module]]:
    """Decorator: ``adapt(model) -> adapter`` wraps models for which ``matches(model)`` holds; ``layout`` is the
    layout those models take (:data:`LAYOUTS`). A name registered again replaces its entry."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    def decorate(adapt: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
        _FOREIGN[:] = [k for k in _FOREIGN if k.name != name]
        _FOREIGN.append(ForeignKind(name, matches, adapt, layout))
        return adapt

    return decorate


def foreign_kinds() -> tuple[ForeignKind, ...]:
    """The registered foreign network kinds."""
    return tuple(_FOREIGN)


# ----------------------------------------------------------------------------------------- torchvision
#: torchvision architecture class -> ``stages(model) -> (Stage, ...)`` (clip stage first, head last)
_TV_STAGES: dict[type, Callable[[nn.Module], tuple[Stage, ...]]] = {}


def register_torchvision_stages(model_type: type) -> Callable[[Callable[[nn.Module], tuple[Stage, ...]]],
                                                               Callable[[nn.Module], tuple[Stage, ...]]]:
    """Decorator: ``stages(model)`` gives the explainer stages of torchvision models of ``model_type``; they see
    clips in vidxai's layout, so a ``clip`` stage (channels-first inside) is the natural first stage."""

    def decorate(fn: Callable[[nn.Module], tuple[Stage, ...]]) -> Callable[[nn.Module], tuple[Stage, ...]]:
        _TV_STAGES[model_type] = fn
        return fn

    return decorate


class TorchvisionVideoNet(nn.Module):
    """A torchvision video model (``.model``, its own modules) taking vidxai's clips ``(B, T, C, H, W)``.

    ``forward`` is ``model(x.transpose(1, 2))``: the model's own forward and logits. ``explain_stages`` comes
    from the stages registered for the model's class (:func:`register_torchvision_stages`).
    """

    layout = "BCTHW"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """The model's logits for clips ``(B, T, C, H, W)``."""
        return self.model(x.transpose(1, 2))

    def explain_stages(self) -> tuple[Stage, ...]:
        """The registered stages of the model's class; a ``TypeError`` naming what is missing otherwise."""
        fn = _TV_STAGES.get(type(self.model))
        if fn is None:
            raise TypeError(unknown_network_message(self.model))
        return fn(self.model)


def _torchvision_video(model: nn.Module) -> bool:
    return type(model).__module__.startswith("torchvision.models.video")


register_foreign("torchvision video models", _torchvision_video, "BCTHW")(TorchvisionVideoNet)


def _video_resnet_stages(model: nn.Module) -> tuple[Stage, ...]:
    body = nn.Sequential(OrderedDict(
        stem=model.stem, layer1=model.layer1, layer2=model.layer2, layer3=model.layer3, layer4=model.layer4,
        avgpool=model.avgpool, flatten=nn.Flatten(),
    ))  # fmt: skip
    return Stage("model", "clip", body), Stage("model.fc", "head", nn.Sequential(OrderedDict(fc=model.fc)))


def _s3d_stages(model: nn.Module) -> tuple[Stage, ...]:
    body = nn.Sequential(OrderedDict(features=model.features, avgpool=model.avgpool))
    head = nn.Sequential(OrderedDict(classifier=model.classifier, mean=ClipMean()))
    return Stage("model", "clip", body), Stage("model.classifier", "head", head)


def _attention_stages(model: nn.Module) -> tuple[Stage, ...]:
    """MViT / Swin3D: the model's own forward under the engine's rules, then its classifier (``head``)."""
    from vidxai.models.hf_stages import model_stages

    return model_stages(model, "model", channels_first=True)


def _register_torchvision() -> None:
    from torchvision.models.video import S3D, MViT, SwinTransformer3d, VideoResNet

    register_torchvision_stages(VideoResNet)(_video_resnet_stages)
    register_torchvision_stages(S3D)(_s3d_stages)
    register_torchvision_stages(MViT)(_attention_stages)
    register_torchvision_stages(SwinTransformer3d)(_attention_stages)


_register_torchvision()


# ----------------------------------------------------------------------------------------- transformers
def _hf_video_classifier(model: nn.Module) -> bool:
    cls = type(model)
    return cls.__module__.startswith("transformers.") and cls.__name__.endswith("ForVideoClassification")


class HFVideoClassifier(nn.Module):
    """A ``transformers`` ``...ForVideoClassification`` model (``.hf``) as a vidxai network: clips
    ``(B, T, C, H, W)`` (the layout it takes) -> ``hf(pixel_values=x).logits``; its explainer stages are those of
    :func:`vidxai.models.hf_stages.transformer_stages` (the architectures vidxai's transformer LRP knows)."""

    layout = "BTCHW"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model

    def forward(self, x: Tensor) -> Tensor:
        """The model's logits for clips ``(B, T, C, H, W)``."""
        return self.hf(pixel_values=x).logits

    def explain_stages(self) -> tuple[Stage, ...]:
        from vidxai.models.hf_stages import transformer_stages

        try:
            return transformer_stages(self)
        except TypeError:
            raise TypeError(unknown_network_message(self.hf)) from None


register_foreign("transformers ...ForVideoClassification", _hf_video_classifier, "BTCHW")(HFVideoClassifier)


# ----------------------------------------------------------------------------------------- adapting
def as_video_net(model: nn.Module) -> tuple[nn.Module, str]:
    """``(network, layout)``: ``model`` itself (``"BTCHW"``) when it implements the explainer contract (or is a
    LightningModule with such a ``.net``), else its registered adapter and the layout ``model`` takes.

    Raises:
        ConfigError: no registered kind takes ``model``; the message names the first module type vidxai does not
            know and what it explains.
    """
    inner = getattr(model, "net", None)
    if isinstance(model, ExplainableVideoNet) or (isinstance(inner, nn.Module) and isinstance(inner,
                                                                                              ExplainableVideoNet)):
        return model, "BTCHW"
    for kind in _FOREIGN:
        if kind.matches(model):
            return kind.adapt(model), kind.layout
    raise ConfigError(f"VideoLRP {unknown_network_message(model)}")


def _known_layer(module: nn.Module) -> bool:
    from vidxai.xai.cnn import layer_handler

    return layer_handler(module) is not None


def first_unknown_module(model: nn.Module) -> tuple[str, str] | None:
    """``(name, type name)`` of the first submodule (in ``named_modules`` order) that vidxai's layer registry has
    no handler for (containers such as ``nn.ModuleList`` skipped); ``None`` when every submodule is known."""
    skipped = (nn.ModuleList, nn.ModuleDict)
    for name, module in _named_submodules(model):
        if isinstance(module, skipped) or _known_layer(module):
            continue
        return name, type(module).__name__
    return None


def _named_submodules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    it = iter(model.named_modules())
    next(it)  # the model itself
    yield from it


def explainable_summary() -> str:
    """What vidxai explains, in one phrase (for messages)."""
    from vidxai.models.registry import NETWORKS

    tv = ", ".join(sorted(t.__name__ for t in _TV_STAGES))
    return (f"vidxai's networks ({', '.join(sorted(NETWORKS))}), torchvision {tv} (r3d_18, mc3_18, r2plus1d_18, "
            f"s3d, mvit_v1_b, mvit_v2_s, swin3d_t/s/b), transformers {', '.join(hf_explained())} "
            "...ForVideoClassification, or any network with "
            "explain_stages() (docs/architecture.md)")


def hf_explained() -> tuple[str, ...]:
    """The ``transformers`` architectures vidxai's transformer engine explains (its tested classifiers,
    :data:`vidxai.xai.engine.SUPPORTED_TRANSFORMERS`, without the ``ForVideoClassification`` suffix)."""
    from vidxai.xai.engine import SUPPORTED_TRANSFORMERS

    return tuple(name.removesuffix("ForVideoClassification") for name in SUPPORTED_TRANSFORMERS)


def unknown_network_message(model: nn.Module) -> str:
    """One line: which network vidxai cannot explain, the first module type it does not know, what it explains."""
    kind = type(model).__name__
    unknown = first_unknown_module(model)
    what = f"it does not know {unknown[1]} ({unknown[0]})" if unknown else "its forward is not one vidxai knows"
    return f"cannot explain {kind} yet: {what}; vidxai explains {explainable_summary()}"


def describe_layout(layout: str) -> str:
    """``(B, C, T, H, W)`` for ``"BCTHW"`` ..."""
    return "(" + ", ".join(layout) + ")"


def adapter_model(net: nn.Module) -> Any:
    """The user's own model inside an adapter (``net`` itself when it is not one)."""
    if isinstance(net, TorchvisionVideoNet):
        return net.model
    if isinstance(net, HFVideoClassifier):
        return net.hf
    return net
