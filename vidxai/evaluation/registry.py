"""The two extension points of the evaluation: scores (metrics) and attribution methods.

A **metric** declares its name, a label a reader knows, its direction (``higher`` or ``lower`` is better, or
``none`` for a diagnostic that ranks nothing), its family (``perturbation``, ``ground_truth``,
``randomisation``, ``control``), its scoring function and, optionally, its chance level (what a map that
knows nothing scores on the same video). The scoring function takes one :class:`ScoreInput` and returns a
number or ``None`` (the score does not apply to this video). Registering one is all it takes: the runner
scores it, and the statistics, the table, the figure, the CSV and W&B follow::

    @register_metric("top_frame_hit", label="top frame is evidence", direction="higher",
                     family="ground_truth", needs="evidence", chance=lambda s: float(s.truth.evidence.mean()))
    def top_frame_hit(s: ScoreInput) -> float | None:
        return float(s.truth.evidence[s.frame_scores.argmax()])

A **method** is a registered builder ``builder(net, ctx: BuildContext) -> fn`` with
``fn(clip (T, C, H, W), target, key) -> (T, H, W)`` (or :class:`Batched`: a function of a batch of clips);
``applies(net)`` returns ``None`` or the reason the method does not apply to ``net`` (it is then skipped
with that reason, not reported as an error). A builder that takes only the network (``plain=True``)
registers in one line::

    register_method("attention_rollout", family="attention", plain=True)(build_attention_rollout)

A method's **family** (``lrp``, ``captum``, ``perturbation``, ``attention``, ``random``...) decides how the figures
draw it (:data:`METHOD_FAMILIES`: a colour map whose shades the members share, or one colour, and a line style)
and whether it is a reference rather than a method to compare (``random``: the floor every method must beat).
A method registered with a family nobody registered gets that family with the next unused colour map, so it is
drawn in its own colours without a second registration; ``register_family`` chooses them, ``colour=`` /
``label=`` on :func:`register_method` fix one method's colour and the name the report shows.

The LRP methods are not listed here: every rule of :data:`vidxai.xai.RULES` is a method of family ``lrp``
(see :mod:`vidxai.evaluation.methods`), so a new rule is evaluated without a second registration.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor, nn

from vidxai.data.ground_truth import ClipTruth

__all__ = [
    "DIRECTIONS",
    "FAMILIES",
    "METHODS",
    "METHOD_FAMILIES",
    "METRICS",
    "Batched",
    "BuildContext",
    "MethodFamily",
    "MethodSpec",
    "Metric",
    "NotApplicable",
    "ScoreInput",
    "method_family",
    "register_family",
    "register_method",
    "register_metric",
]

DIRECTIONS = ("higher", "lower", "none")
FAMILIES = ("perturbation", "ground_truth", "randomisation", "control")

#: ``fn(clip (T, C, H, W) on the model's device, target class, key) -> (T, H, W)``; ``key`` seeds ``random``.
AttributeFn = Callable[[Tensor, int, int], Tensor]
#: ``fn(clips (B, T, C, H, W), targets, keys) -> (B, T, H, W)``: the maps of several clips in one call.
BatchAttributeFn = Callable[[Tensor, Sequence[int], Sequence[int]], Tensor]


@dataclass(frozen=True)
class Batched:
    """A method function that explains a batch of clips at once (larger tensors use the cores better).

    A builder may return ``Batched(fn)`` instead of a single-clip function; the evaluation then computes the
    maps of several clips in one call where it has several (the randomisation tests), and one clip is a batch
    of one. ``fn`` must give each clip the map it gives that clip alone (tested for the built-in methods).
    """

    fn: BatchAttributeFn

    def __call__(self, clip: Tensor, target: int, key: int) -> Tensor:
        return self.fn(clip[None], [int(target)], [int(key)])[0]


class NotApplicable(Exception):  # noqa: N818 (a reason, not an error)
    """Raised by a method builder when the method does not apply to the network (skipped with the message)."""


@dataclass
class ScoreInput:
    """Everything a metric may read for one method on one video.

    Attributes:
        pixel: the method's map ``(T, H, W)`` (float64).
        curves: the flipping curves of this video (the method's own and the method-independent ones), by name.
        truth: the clip's ground truth (boxes, evidence) or ``None``.
        video: the model input ``(T, C, H, W)`` on the CPU.
        randomised: maps of the same method on the progressively randomised model (randomisation family).
        smooth / smooth_randomised: the method's maps averaged over noisy copies of the input, on the
            original and on the fully randomised model (sMPRT).
    """

    pixel: np.ndarray
    curves: Mapping[str, np.ndarray] = field(default_factory=dict)
    truth: ClipTruth | None = None
    video: np.ndarray | None = None
    randomised: list[np.ndarray] = field(default_factory=list)
    smooth: np.ndarray | None = None
    smooth_randomised: np.ndarray | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def frame_scores(self) -> np.ndarray:
        """``(T,)``: the map summed over each frame."""
        return self.pixel.reshape(len(self.pixel), -1).sum(1)


@dataclass(frozen=True)
class Metric:
    """One registered score (see the module docstring)."""

    name: str
    label: str
    direction: str
    family: str
    score: Callable[[ScoreInput], float | None] = field(repr=False)
    chance: Callable[[ScoreInput], float | None] | None = field(default=None, repr=False)
    #: what the data must record for the score: ``boxes``, ``evidence`` or nothing
    needs: str | None = None
    description: str = ""

    @property
    def higher_is_better(self) -> bool | None:
        return None if self.direction == "none" else self.direction == "higher"


#: name -> :class:`Metric`, in registration order (the order of the tables and panels).
METRICS: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    label: str,
    direction: str,
    family: str,
    chance: Callable[[ScoreInput], float | None] | None = None,
    needs: str | None = None,
    description: str = "",
) -> Callable[[Callable[[ScoreInput], float | None]], Callable[[ScoreInput], float | None]]:
    """Decorator: register ``fn(ScoreInput) -> float | None`` as the metric ``name``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: direction must be one of {DIRECTIONS}, got {direction!r}")
    if family not in FAMILIES:
        raise ValueError(f"metric {name!r}: family must be one of {FAMILIES}, got {family!r}")

    def deco(fn: Callable[[ScoreInput], float | None]) -> Callable[[ScoreInput], float | None]:
        METRICS[name] = Metric(name, label, direction, family, fn, chance, needs, description)
        return fn

    return deco


@dataclass
class BuildContext:
    """What a method builder may need besides the network (all from the evaluation's settings)."""

    replacement: Callable[[Tensor], Tensor]
    batch_size: int = 32
    ig_steps: int = 16
    seed: int = 0
    #: the LRP settings every LRP method starts from (an :class:`~vidxai.xai.config.LRPConfig`)
    lrp: Any = None
    #: extra parameters per LRP rule name (e.g. the input bounds of a z^B first layer)
    rule_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One registered attribution method."""

    name: str
    family: str
    build: Callable[[nn.Module, BuildContext], Any] = field(repr=False)
    applies: Callable[[nn.Module], str | None] | None = field(default=None, repr=False)
    default: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: what the report and the figures call it (default: ``name``)
    label: str | None = None
    #: its own colour in the figures (any matplotlib colour); default: a shade of its family's colour map
    colour: str | None = None

    def reason_not_applicable(self, net: nn.Module) -> str | None:
        """``None`` when the method applies to ``net``, else the reason."""
        return self.applies(net) if self.applies is not None else None


#: name -> :class:`MethodSpec` (the non-LRP methods, in the order they are reported).
METHODS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class MethodFamily:
    """How the figures draw the methods of one family, and whether the family is a reference (module docstring)."""

    name: str
    #: a matplotlib colour map (the members get shades of it) or one colour for every member (``"0.45"``)
    colours: str
    #: line style of its curves (``-`` solid, ``--`` dashed)
    line: str = "--"
    #: a reference, not a method to compare (the random map): left out of the report's method columns
    reference: bool = False


#: family name -> :class:`MethodFamily`.
METHOD_FAMILIES: dict[str, MethodFamily] = {}
#: colour maps given, in this order, to families registered without one
_SPARE_COLOURS = ("Reds", "YlOrBr", "PuRd", "BuGn", "RdPu", "YlGn", "GnBu", "OrRd", "PuBu", "YlOrRd")


def register_family(name: str, *, colours: str | None = None, line: str = "--",
                    reference: bool = False) -> MethodFamily:
    """Register (or replace) how the family ``name`` is drawn; ``colours=None``: the next colour map no
    family uses yet."""
    if colours is None:
        used = {f.colours for f in METHOD_FAMILIES.values()}
        spare = [c for c in _SPARE_COLOURS if c not in used]
        colours = spare[0] if spare else _SPARE_COLOURS[len(METHOD_FAMILIES) % len(_SPARE_COLOURS)]
    METHOD_FAMILIES[name] = MethodFamily(name, colours, line, reference)
    return METHOD_FAMILIES[name]


def method_family(family: str) -> MethodFamily:
    """The :class:`MethodFamily` ``family`` (registered with default colours when it was not)."""
    return METHOD_FAMILIES.get(family) or register_family(family)


register_family("lrp", colours="Blues", line="-")
register_family("captum", colours="Oranges")
register_family("perturbation", colours="Greens")
register_family("attention", colours="Purples")
register_family("random", colours="0.45", reference=True)


def _call_plain(fn: Callable[..., Tensor]) -> AttributeFn:
    """Adapt ``fn(clip, target)`` or ``fn(clip, target, key)`` to the three-argument form."""
    try:
        n = len([p for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        n = 3
    return fn if n >= 3 else (lambda clip, target, key: fn(clip, target))


def register_method(
    name: str,
    *,
    family: str = "other",
    applies: Callable[[nn.Module], str | None] | None = None,
    default: bool = True,
    settings: Mapping[str, Any] | None = None,
    plain: bool = False,
    label: str | None = None,
    colour: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a method builder under ``name`` (of ``family``, default ``other``; registered with
    default colours when it is new; ``label`` / ``colour``: the name the report shows and a colour of its own).

    ``builder(net, ctx)`` returns ``fn`` or ``(fn, settings)``; with ``plain=True`` the builder is
    ``builder(net) -> fn`` and an exception while building means "does not apply" (skipped with its message).
    ``default=False`` keeps the method out of the default list (it runs when named in ``methods=``).
    """

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        if plain:
            def build(net: nn.Module, ctx: BuildContext) -> Any:
                try:
                    return _call_plain(builder(net))
                except Exception as exc:  # a plain builder refuses a network it cannot explain
                    raise NotApplicable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        else:
            build = builder
        method_family(family)
        METHODS[name] = MethodSpec(name, family, build, applies, default, dict(settings or {}), label, colour)
        return builder

    return deco
