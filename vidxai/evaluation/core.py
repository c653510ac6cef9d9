"""The types every evaluation module shares: the settings, one clip, one process's shard, the run control, and the
few helpers that build and call the methods (the flipping curves are a registry of their own,
:mod:`vidxai.evaluation.curves`).

:mod:`~vidxai.evaluation.runner` (the first pass), :mod:`~vidxai.evaluation.randomisation_pass`,
:mod:`~vidxai.evaluation.shards` (the merge) and :mod:`~vidxai.evaluation.summary` (the statistics) import
from here and not from each other's insides, so the package's imports form no cycle
(``tests/test_import_graph.py``).

:class:`RunControl` is how a caller steers a long evaluation (all optional; without it an evaluation runs start
to end in memory, as :func:`vidxai.evaluation.evaluate` does):

* ``journal`` (:class:`vidxai.journal.Journal`): each finished group of videos and each finished randomisation
  step of one method is written there before the next one starts; what the journal already holds (an earlier,
  interrupted run) is read back instead of computed again, with the same numbers;
* ``check()``: called between units of work (each method's maps of a group, each video's perturbation curves,
  each randomisation step of each method); it raises to stop the run (SIGTERM), leaving what was finished in the
  journal;
* ``progress(phase, done, total)``: after each unit (``phase``: ``first pass``, ``randomisation step k/n``,
  ``sMPRT``; ``total`` 0 when the caller knows it better);
* ``save_maps``: also keep every video's maps in the journal folder (``maps/<key>.npz``), not only those the
  randomisation tests need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from vidxai.data.ground_truth import ClipTruth
from vidxai.evaluation.methods import Method, build_method
from vidxai.evaluation.perturbation import BASELINES, replacement
from vidxai.evaluation.registry import BuildContext, NotApplicable
from vidxai.xai.config import LRPConfig

__all__ = ["EvalClip", "EvalSettings", "RunControl", "Shard", "build_methods",
           "checked_map", "error_line", "maps_of"]


@dataclass
class EvalClip:
    """One clip to evaluate on: the model input ``(T, C, H, W)`` (on the model's device) and where it came from."""

    video: Tensor
    source: str
    label: int | None = None
    truth: ClipTruth | None = None


@dataclass
class EvalSettings:
    """Every choice of the evaluation (all reported in ``settings``).

    The defaults here are the only ones in Python; ``conf/evaluation/default.yaml`` holds the same values for
    the command line (a test checks they are equal), spelled as :data:`CONFIG_KEYS` says, and
    :meth:`from_options` reads them back from plain options.
    """

    #: the option as the config and the command line spell it (``mprt.final_videos=4``) -> the field; the other
    #: fields come from elsewhere in the run (``seed=``, ``target=``, the ``lrp`` group, the model's preprocessing)
    CONFIG_KEYS: ClassVar[dict[str, str]] = {
        "baseline": "baseline", "blur_sigma": "blur_sigma", "road_noise": "road_noise", "n_boot": "n_boot",
        "alpha": "alpha", "batch_size": "batch_size", "video_batch": "video_batch", "region_size": "region_size",
        "region_step": "region_step", "region_max": "region_max", "ig_steps": "ig_steps",
        "mprt.videos": "mprt_videos", "mprt.final_videos": "randomisation_videos",
        "mprt.granularity": "mprt_granularity", "mprt.steps": "mprt_steps", "mprt.smprt_samples": "smprt_samples",
        "mprt.smprt_noise": "smprt_noise",
    }

    baseline: str = "mean"
    blur_sigma: float = 2.0
    road_noise: float = 0.01
    batch_size: int = 32
    #: videos whose maps come from one attribution call per method in the first pass (the randomisation tests
    #: take ``batch_size`` clips per call); 1 = one video at a time
    video_batch: int = 4
    region_size: int = 8
    region_step: float = 0.05
    region_max: float = 0.5
    ig_steps: int = 16
    seed: int = 0
    mprt_videos: int = 1
    randomisation_videos: int = 10
    mprt_steps: int | None = None
    mprt_granularity: str = "block"
    smprt_samples: int = 0
    smprt_noise: float = 0.1
    n_boot: int = 2000
    alpha: float = 0.05
    chunk_frames: int | None = None
    target: int | None = None
    #: ``lstm_eps`` / ``bias_factor`` / ``lstm_rule`` of the LRP methods (unset: ``LRPConfig``'s defaults)
    recurrent: dict[str, Any] = field(default_factory=dict)
    #: extra parameters per LRP rule (e.g. input bounds of a z^B first layer)
    rule_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **given: Any) -> EvalSettings:
        """The settings of plain ``options`` spelled as in the config (``{"baseline": "road", "mprt": {"videos": 2}}``;
        ``mprt: N`` sets both ``mprt.videos`` and ``mprt.final_videos``); a key not given takes the default of
        this class; ``given``: fields set directly (``seed``, ``target``...). Numbers given as text are converted;
        ``ValueError`` names a value that is not one (:meth:`check` is left to the caller)."""
        mprt = options.get("mprt")
        flat = {k: v for k, v in options.items() if k != "mprt"}
        if isinstance(mprt, Mapping):
            flat.update({f"mprt.{k}": v for k, v in mprt.items()})
        elif mprt is not None:
            flat.update({"mprt.videos": mprt, "mprt.final_videos": mprt})
        types = {f.name: str(f.type) for f in fields(cls)}
        values = dict(given)
        for key, name in cls.CONFIG_KEYS.items():
            if key in flat and name not in values:
                values[name] = _typed(key, flat[key], types[name])
        return cls(**values)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline={self.baseline!r}; choose one of {sorted(BASELINES)}")
        for key in ("batch_size", "video_batch", "region_size", "ig_steps", "n_boot"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        if not 0 < self.region_step <= self.region_max <= 1:
            raise ValueError(f"need 0 < region_step <= region_max <= 1, got region_step={self.region_step}, "
                             f"region_max={self.region_max}")
        for key, name in (("mprt_videos", "mprt.videos"), ("randomisation_videos", "mprt.final_videos"),
                          ("smprt_samples", "mprt.smprt_samples")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.mprt_granularity not in ("block", "layer"):
            raise ValueError(f"mprt.granularity={self.mprt_granularity!r}; choose block or layer")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def context(self) -> BuildContext:
        """The :class:`~vidxai.evaluation.registry.BuildContext` of the method builders."""
        lrp = LRPConfig.from_dict(self.recurrent, chunk_frames=self.chunk_frames)
        return BuildContext(replacement=self.replace, batch_size=self.batch_size, ig_steps=self.ig_steps,
                            seed=self.seed, lrp=lrp, rule_params=self.rule_params)

    def replace(self, clip: Tensor) -> Tensor:
        """The replacement clip of ``baseline`` (whole frames)."""
        return replacement(clip, self.baseline, self.blur_sigma, self.road_noise)


def _typed(key: str, value: Any, annotation: str) -> Any:
    """``value`` as the field's type (``int``, ``float``, ``str``; ``None`` and booleans left for ``check``)."""
    if value is None or isinstance(value, bool):
        return value
    kind = {"int": int, "float": float, "str": str}.get(annotation.split("|")[0].strip())
    try:
        return kind(value) if kind is not None else value
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} is not a number") from None


def error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def build_methods(names: Sequence[str], net: nn.Module, s: EvalSettings
                  ) -> tuple[dict[str, Method], dict[str, str], dict[str, str]]:
    """``(methods, skipped reasons, build errors)`` for ``names`` on ``net``."""
    methods, skipped, errors = {}, {}, {}
    ctx = s.context()
    for name in names:
        try:
            methods[name] = build_method(name, net, ctx)
        except NotApplicable as exc:
            skipped[name] = str(exc)
        except Exception as exc:  # a method that cannot handle this model is reported and skipped
            errors[name] = error_line(exc)
    return methods, skipped, errors



@dataclass
class Shard:
    """What one process scored on its share of the videos: plain values only (picklable, no tensors), so the
    processes of a sharded run can send it to rank 0, which merges the shards with :func:`combine`."""

    rows: list[tuple[int, dict[str, Any]]]
    chance: dict[int, dict[str, float | None]]
    curves: dict[int, dict[str, dict[str, np.ndarray]]]
    failed: dict[str, tuple[int, str]]
    skipped: dict[str, str]
    build_errors: dict[str, str]
    info: dict[str, dict[str, Any]]
    times: dict[str, float]
    perturbation_s: float
    rand: dict[str, Any]


def _nothing(*_: Any) -> None:  # the default check and progress of a RunControl
    return None


@dataclass
class RunControl:
    """How a caller steers a long evaluation: journal, stop check, progress, ``save_maps`` (module docstring)."""

    journal: Any = None
    check: Callable[[], None] = _nothing
    progress: Callable[[str, int, int], None] = _nothing
    save_maps: bool = False


def checked_map(pixel: Any) -> np.ndarray:
    out = pixel.numpy()
    if not np.isfinite(out).all():
        raise FloatingPointError("the map has non-finite values")
    return out


def maps_of(method: Any, inputs: list[Any], targets: list[int], keys: list[int], batch_size: int
          ) -> Iterator[np.ndarray]:
    """The map of each input clip, ``batch_size`` clips per call of the method."""
    for start in range(0, len(inputs), batch_size):
        part = slice(start, start + batch_size)
        yield from (checked_map(p) for p in method.many(inputs[part], targets[part], keys[part]))
