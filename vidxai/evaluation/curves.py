"""The registry of flipping curves: what is removed in which order, which score reads the curve, how it is drawn.

A **curve** removes frames or regions of a clip step by step in one order and records the target logit after
each step (:func:`vidxai.evaluation.perturbation.flipping_curves`). Its registration says everything the
evaluation needs to know about it:

* ``name`` and ``unit`` (``frame``: whole frames, one per step; ``region``: squares of ``region_size`` pixels,
  in steps of ``region_step`` up to ``region_max`` of all regions);
* ``order(OrderInput) -> indices``: how its order is computed; ``per_method=True`` when the order comes from the
  method's map (most relevant first...), else it is drawn once per video and shared by every method
  (a reference: random, by position);
* ``score``: the AOPC key that reads it: for a per-method curve a registered metric (its ``metric`` arguments
  are those of :func:`~vidxai.evaluation.registry.register_metric`; its chance level is the AOPC of
  ``reference``), for a reference the per-video column and the entry in the result's ``orders``;
* ``label``, ``better`` (``lower`` or ``higher`` curve is better) and ``style``: what the figures show
  (:mod:`vidxai.viz.evaluation`: one panel per per-method curve with its reference dotted; the frame references
  together in one panel "by position").

The runner (:mod:`vidxai.evaluation.runner`), the statistics (:mod:`vidxai.evaluation.summary`), the scores
and the figures all read :data:`CURVES`, so a new curve is one registration::

    register_curve("frame_middle_first", unit="frame", label="middle frame first", score="frame_aopc_middle_first",
                   order=lambda o: np.argsort(np.abs(np.arange(o.shape[0]) - o.shape[0] // 2), kind="stable"))

The random draws of the references come from one generator per video, in registration order (so the random
orders of the built-in curves do not change when a curve is registered after them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import Tensor

from vidxai.evaluation.perturbation import (
    aopc,
    frame_masks,
    frame_order,
    frame_scores,
    region_grid,
    region_masks,
    region_order,
    region_scores,
    region_steps,
)
from vidxai.evaluation.registry import ScoreInput, register_metric

__all__ = ["CURVES", "UNITS", "Curve", "OrderInput", "curve_masks", "method_curves", "order_scores",
           "reference_curves", "register_curve"]

#: what one step of a curve removes, and the x axis of its figure
UNITS: dict[str, str] = {"frame": "frames removed", "region": "region steps (share of regions removed)"}


@dataclass(frozen=True)
class OrderInput:
    """What an order function may read for one video (and, for a per-method curve, one method's map)."""

    #: ``(T, H, W)`` of the clip
    shape: tuple[int, int, int]
    #: the video's generator (seeded by ``(seed, video key)``); references draw from it in registration order
    rng: np.random.Generator
    region_size: int
    #: regions removed after each step of a region curve
    counts: Sequence[int]
    #: tie-breaks shared by every method (a permutation of the frames, of the regions)
    frame_ties: np.ndarray
    region_ties: np.ndarray
    #: the method's map ``(T, H, W)`` (``None`` for a reference)
    pixel: np.ndarray | None = None

    @property
    def n_regions(self) -> int:
        return len(self.region_ties)


@dataclass(frozen=True)
class Curve:
    """One registered flipping curve (see the module docstring)."""

    name: str
    unit: str
    order: Callable[[OrderInput], np.ndarray] = field(repr=False)
    per_method: bool
    score: str
    label: str
    reference: str | None = None
    better: str | None = None
    style: str = "-"

    @property
    def axis(self) -> str:
        """The x axis of its figure."""
        return UNITS[self.unit]

    def masks(self, o: OrderInput) -> Tensor:
        """``(steps + 1, T, H, W)`` removal masks of this curve's order."""
        order = self.order(o)
        if self.unit == "frame":
            return frame_masks(order, o.shape)
        return region_masks(order, o.shape, o.region_size, o.counts)


#: name -> :class:`Curve`, in registration order (the order of the panels and of the random draws).
CURVES: dict[str, Curve] = {}


def _aopc_of(name: str) -> Callable[[ScoreInput], float | None]:
    def score(s: ScoreInput) -> float | None:
        c = s.curves.get(name)
        return None if c is None else aopc(c)

    return score


def register_curve(
    name: str,
    *,
    unit: str,
    order: Callable[[OrderInput], np.ndarray],
    score: str,
    label: str,
    per_method: bool = False,
    reference: str | None = None,
    better: str | None = None,
    style: str = "-",
    metric: Mapping[str, Any] | None = None,
) -> Curve:
    """Register a curve (module docstring). A per-method curve needs ``metric`` (``label``, ``direction``,
    ``description`` of its AOPC score, registered as ``score`` in family ``perturbation``) and a ``reference``."""
    if unit not in UNITS:
        raise ValueError(f"curve {name!r}: unit must be one of {list(UNITS)}, got {unit!r}")
    if better not in (None, "lower", "higher"):
        raise ValueError(f"curve {name!r}: better must be lower, higher or None, got {better!r}")
    if per_method:
        if metric is None or reference not in CURVES or CURVES[reference].per_method:
            raise ValueError(f"curve {name!r}: a per-method curve needs metric= and a registered reference curve "
                             f"(one of {[c.name for c in reference_curves()]})")
        register_metric(score, family="perturbation", chance=_aopc_of(reference), **dict(metric))(_aopc_of(name))
    curve = Curve(name, unit, order, per_method, score, label, reference, better, style)
    CURVES[name] = curve
    return curve


def method_curves() -> list[Curve]:
    """The curves ordered by each method's map."""
    return [c for c in CURVES.values() if c.per_method]


def reference_curves() -> list[Curve]:
    """The method-independent curves (drawn once per video)."""
    return [c for c in CURVES.values() if not c.per_method]


def order_scores() -> dict[str, str]:
    """Reference curve -> its AOPC key (per-video column and entry in the result's ``orders``)."""
    return {c.name: c.score for c in reference_curves()}


def curve_masks(shape: tuple[int, int, int], rng: np.random.Generator, region_size: int, region_step: float,
                region_max: float) -> tuple[dict[str, Tensor], Callable[[str, np.ndarray], None]]:
    """The masks of every reference curve of one video, and ``add(method, pixel)``, which adds the masks of the
    per-method curves of one method's map as ``"<method>\\t<curve>"``."""
    t = shape[0]
    n_regions = int(np.prod(region_grid(shape, region_size)))
    counts = region_steps(n_regions, region_step, region_max)
    base = OrderInput(shape, rng, region_size, counts, rng.permutation(t), rng.permutation(n_regions))
    masks = {c.name: c.masks(base) for c in reference_curves()}

    def add(method: str, pixel: np.ndarray) -> None:
        mine = replace(base, pixel=pixel)
        for c in method_curves():
            masks[f"{method}\t{c.name}"] = c.masks(mine)

    return masks, add


# ---------------------------------------------------------------------------- the built-in curves
def _frames(o: OrderInput) -> np.ndarray:
    assert o.pixel is not None
    return frame_scores(o.pixel)


register_curve("frame_random", unit="frame", score="frame_aopc_random", label="random order", style=":",
               order=lambda o: o.rng.permutation(o.shape[0]))
register_curve("frame_last_first", unit="frame", score="frame_aopc_last_first", label="last frame first",
               order=lambda o: np.arange(o.shape[0])[::-1])
register_curve("frame_first_first", unit="frame", score="frame_aopc_first_first", label="first frame first",
               style="--", order=lambda o: np.arange(o.shape[0]))
register_curve("region_random", unit="region", score="region_aopc_random", label="random order", style=":",
               order=lambda o: o.rng.permutation(o.n_regions))
register_curve("frame_morf", unit="frame", per_method=True, score="frame_aopc_morf", reference="frame_random",
               label="frames removed, most relevant first (MoRF)", better="lower",
               order=lambda o: frame_order(_frames(o), o.frame_ties, True),
               metric={"label": "frame flipping AOPC, most relevant first", "direction": "higher",
                       "description": "mean drop of the target logit as frames are removed, most relevant first"})
register_curve("frame_lerf", unit="frame", per_method=True, score="frame_aopc_lerf", reference="frame_random",
               label="frames removed, least relevant first (LeRF)", better="higher",
               order=lambda o: frame_order(_frames(o), o.frame_ties, False),
               metric={"label": "frame flipping AOPC, least relevant first", "direction": "lower",
                       "description": "mean drop of the target logit as frames are removed, least relevant first"})
register_curve("region_morf", unit="region", per_method=True, score="region_aopc_morf", reference="region_random",
               label="regions removed, most relevant first", better="lower",
               order=lambda o: region_order(region_scores(o.pixel, o.region_size), o.region_ties),
               metric={"label": "region flipping AOPC, most relevant first", "direction": "higher",
                       "description": "mean drop of the target logit as regions are removed, most relevant first"})
