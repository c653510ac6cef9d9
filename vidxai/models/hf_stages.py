"""The explainer stages of a classifier explained through its own forward (every ``transformers`` video
classifier, vidxai's wrappers of them, torchvision's attention video models, a transformer of one's own).

The network is explained as two stages: ``tokens`` (a :class:`ModelBody`: the model's own ``forward`` run up to
its classifier, whose input it returns: clips ``(B, T, C, H, W)`` -> pooled ``(B, D)``) and ``head`` (the
classifier, the last ``nn.Linear``). Composing them gives the model's logits exactly (tested for every
architecture). The ``tokens`` stage is explained by :mod:`vidxai.xai.engine` (the rules given to the functions
the forward calls), so no forward is rewritten here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from vidxai.models.contract import Stage, register_stage_kind

__all__ = ["ModelBody", "TokenGeometry", "find_classifier", "model_stages", "transformer_stages"]


def _run_tokens(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


# "tokens": clips (B, T, C, H, W) -> pooled (B, D), the first stage; the head follows it
register_stage_kind("tokens", _run_tokens, before=("head",), first=True)


@dataclass(frozen=True)
class TokenGeometry:
    """How a transformer's tokens tile the clip (for the attention baselines, which score tokens).

    Attributes:
        tubelet: frames per token; patch: ``(ph, pw)`` pixels per token.
        cls: whether token 0 is a CLS token.
        order: ``"time"`` (index = step * patches + patch) or ``"patch"`` (index = patch * steps + step,
            TimeSformer).
        attention: ``"joint"`` (every map over all tokens), ``"divided"`` (TimeSformer: temporal then spatial per
            block), ``"factorised"`` (VideoPrism: ``spatial_layers`` maps over each frame's patches, then maps over
            each patch's frames), or ``"none"`` (no baseline: the reason in ``why``).
        pool: ``"mean"``, ``"cls"`` or ``"attention"`` (a learned query attends to the tokens: V-JEPA 2).
        spatial_layers: the spatial blocks of a factorised encoder.
    """

    tubelet: int
    patch: tuple[int, int]
    cls: bool = False
    order: str = "time"
    attention: str = "joint"
    pool: str = "mean"
    why: str = ""
    spatial_layers: int = 0

    def tokens_to_pixels(self, values: Tensor, frames: int, height: int, width: int) -> Tensor:
        """Per-token values ``(B, S)`` (patch tokens only, forward order) -> ``(B, T, H, W)``."""
        ph, pw = self.patch
        gh, gw = height // ph, width // pw
        if self.order == "time":
            grid = values.reshape(-1, frames // self.tubelet, gh, gw).repeat_interleave(self.tubelet, 1)
        else:
            grid = values.reshape(-1, gh, gw, frames).permute(0, 3, 1, 2)
        return grid.repeat_interleave(ph, 2).repeat_interleave(pw, 3)


class ModelBody(nn.Module):
    """A classifier's own forward up to its classifier: clips ``(B, T, C, H, W)`` -> the classifier's input.

    Args:
        model: the classifier (a ``transformers`` ``...ForVideoClassification``, a torchvision video model, any
            module whose forward ends in ``classifier``).
        classifier: its last ``nn.Linear`` (the forward stops at its call; :class:`vidxai.xai.engine.StopAt`).
        channels_first: the model takes ``(B, C, T, H, W)`` (torchvision); clips are transposed for it.
        geometry: the token geometry, for the attention baselines (``None``: they do not apply).
    """

    def __init__(self, model: nn.Module, classifier: nn.Linear, channels_first: bool = False,
                 geometry: TokenGeometry | None = None) -> None:
        super().__init__()
        self.model, self.classifier = model, classifier
        self.channels_first, self.geometry = channels_first, geometry

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):  # noqa: ANN201
        """The model's parameters but the classifier's (those are the ``head`` stage's): the stages share no
        parameter, so a cascading randomisation or a count over the stages sees each once."""
        head = {id(p) for p in self.classifier.parameters()}
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            if id(p) not in head:
                yield name, p

    def call(self, x: Tensor) -> Callable[[], object]:
        """The model's own forward on clips ``x (B, T, C, H, W)``, as a thunk."""
        arg = x.transpose(1, 2) if self.channels_first else x
        return lambda: self.model(arg)

    def forward(self, x: Tensor) -> Tensor:
        from vidxai.xai.engine import StopAt

        return self.pooled(StopAt.run(self.call(x), self.classifier.weight))

    @staticmethod
    def pooled(features: Tensor) -> Tensor:
        """The classifier's input as ``(B, D)`` (VideoPrism's pooling head keeps its one query: ``(B, 1, D)``)."""
        return features[:, 0] if features.ndim == 3 and features.shape[1] == 1 else features


def find_classifier(model: nn.Module) -> nn.Linear:
    """The classifier of ``model``: its ``classifier`` attribute when that is an ``nn.Linear``, else its last
    ``nn.Linear`` (torchvision's ``head``); a ``TypeError`` when it has none."""
    cls = getattr(model, "classifier", None)
    if isinstance(cls, nn.Linear):
        return cls
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"cannot explain {type(model).__name__}: it has no nn.Linear classifier")
    return linears[-1]


def model_stages(model: nn.Module, prefix: str = "", channels_first: bool = False,
                 geometry: TokenGeometry | None = None) -> tuple[Stage, ...]:
    """``(Stage(prefix, "tokens", ModelBody), Stage(prefix + ".classifier", "head", classifier))`` of ``model``."""
    classifier = find_classifier(model)
    head_name = next((n for n, m in model.named_modules() if m is classifier), "classifier")
    name = prefix or "model"
    return (Stage(name, "tokens", ModelBody(model, classifier, channels_first, geometry)),
            Stage(f"{prefix}.{head_name}" if prefix else head_name, "head", nn.Sequential(classifier)))


def transformer_stages(net: nn.Module) -> tuple[Stage, ...]:
    """The stages of a vidxai network with ``.hf`` (or of a ``transformers`` classifier itself)."""
    hf = getattr(net, "hf", net)
    if not isinstance(hf, nn.Module):
        raise TypeError(f"cannot explain {type(net).__name__}: transformer_stages needs a module with .hf")
    return model_stages(hf, "hf" if hf is not net else "", geometry=geometry_of(hf))


def geometry_of(hf: nn.Module) -> TokenGeometry | None:
    """The token geometry of a ``transformers`` video classifier (for the attention baselines), or ``None``."""
    config = getattr(hf, "config", None)
    kind = getattr(config, "model_type", None)
    if kind is None:
        return None
    patch = _pair(getattr(config, "patch_size", None) or 1)
    if kind == "videomae":
        pool = "mean" if getattr(hf, "fc_norm", None) is not None else "first"
        return TokenGeometry(config.tubelet_size, patch, pool=pool)
    if kind == "timesformer":
        attention = "divided" if config.attention_type == "divided_space_time" else "joint"
        return TokenGeometry(1, patch, cls=True, order="patch", attention=attention, pool="cls")
    if kind == "vivit":
        t, ph, pw = config.tubelet_size
        return TokenGeometry(t, (ph, pw), cls=True, pool="cls")
    if kind == "vjepa2":
        return TokenGeometry(config.tubelet_size, patch, pool="attention")
    if kind == "videoprism_vision_model":
        t, ph, pw = config.tubelet_size
        return TokenGeometry(t, (ph, pw), attention="factorised", pool="attention",
                             spatial_layers=int(config.num_spatial_layers))
    return None


def _pair(value: int | tuple | list) -> tuple[int, int]:
    """A config's ``patch_size``: ``16`` or ``[16, 16]`` -> ``(16, 16)``."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))
