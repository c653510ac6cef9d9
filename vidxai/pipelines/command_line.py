"""Command-line checks of ``explain.py`` and ``train.py`` that need no model: run before the heavy imports.

Everything here reads the composed config (Hydra/OmegaConf) and the file system only: no torch, Lightning,
transformers or W&B, so a settings error prints its one ``error:`` line within about a second
(``prepare_command_line`` in :mod:`vidxai.pipelines._common` calls :func:`check_explain` / :func:`check_train`).

* **Keys that do not apply to the run's mode** (:data:`KEY_MODES`) and **pairs that contradict each other**
  (:data:`CONFLICTS`) are refused, never silently ignored: ``evaluate=true compare=[z]`` or
  ``video=clip.mp4 split=test``.
* **Keys of the other entry point** (:data:`TRAIN_ONLY_HINTS`, :data:`EXPLAIN_ONLY_HINTS`): ``explain.py
  model.net.pretrained=...`` names train.py and the explain-side way (``pretrained=``).
* Paths that must exist (``ckpt=``, ``video=``, ``ckpt_path=``) and names that must be in conf/ (``rule=``,
  ``compare=``, ``mode=``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vidxai.errors import ConfigError, MissingPathError, UserError

__all__ = ["CONFLICTS", "EXPLAIN_ONLY_HINTS", "KEY_MODES", "MODE_NAMES", "TRAIN_ONLY_HINTS", "check_explain",
           "check_train", "choose_mode", "other_entry_hint"]

#: the modes of explain.py (vidxai/pipelines/modes/, one module each)
MODE_NAMES = ("single", "compare", "profile", "evaluate")

_EVALUATE_KEYS = ("methods", "save_maps", "baseline", "blur_sigma", "road_noise", "n_boot", "alpha", "batch_size",
                  "video_batch", "region_size", "region_step", "region_max", "ig_steps", "mprt")
#: explain.py keys (top-level name) -> the modes that read them; given on the command line for another mode
#: they are refused (they would be ignored)
KEY_MODES: dict[str, tuple[str, ...]] = {
    "compare": ("compare",),
    "video": ("single", "compare"),
    "index": ("single", "compare"),
    "class": ("single", "compare"),
    "scale": ("single", "compare"),
    "top_k": ("single", "compare"),
    "limit": ("profile", "evaluate"),
    "profile": ("profile",),
    "videos": ("profile", "evaluate"),  # evaluate: names videos of a split; with pretrained=: the clips themselves
    "resume": ("profile", "evaluate"),
    **{key: ("evaluate",) for key in _EVALUATE_KEYS},
}


@dataclass(frozen=True)
class Conflict:
    """Two keys that cannot be given together, and what to do instead."""

    first: str
    second: str
    fix: str


#: pairs of explain.py keys that contradict each other (both given on the command line)
CONFLICTS: tuple[Conflict, ...] = (
    Conflict("video", "split", "video= explains that file; split= picks a video of the checkpoint's own data: "
                               "keep one"),
    Conflict("video", "index", "video= explains that file; index= picks a video of a split: keep one"),
    Conflict("video", "class", "video= explains that file; class= picks a video of a split by class (to explain "
                               "the file for a class, use target=): keep one"),
    Conflict("limit", "videos", "limit=N picks N videos stratified by class, videos=[...] names them: keep one"),
    Conflict("evaluate", "compare", "evaluate=true scores the methods of methods=, compare= draws rules side by "
                                    "side on one video: for rules in the evaluation use methods=[z,epsilon,...]"),
)

#: a train.py key given to explain.py -> the explain-side way (checked by prefix: ``model.net.pretrained``,
#: then ``model.net``, then ``model``)
TRAIN_ONLY_HINTS: dict[str, str] = {
    "model.net.pretrained": "to explain a pretrained network use pretrained=<folder|torchvision:builder>",
    "model.net.weights_path": "to explain a pretrained network use pretrained=<folder|torchvision:builder>",
    "model": "explain.py rebuilds the model from ckpt= (its architecture, classes and preprocessing)",
    "data": "explain.py reads the data config from ckpt=; choose videos with split=/index=/class= or video=PATH",
    "ckpt_path": "explain.py takes the checkpoint as ckpt=",
    "callbacks": "explain.py writes its figures itself (mode=single|compare|profile|evaluate)",
    "experiment": "explain.py takes everything about the model from ckpt=",
    "hparams_search": "explain.py sweeps with -m, e.g. explain.py -m ckpt=... rule=z,epsilon",
    "debug": "for a quick explain.py run use limit=N",
    "optimized_metric": "it is the sweeper's metric of train.py",
}
#: an explain.py key given to train.py -> the train-side way
EXPLAIN_ONLY_HINTS: dict[str, str] = {
    "ckpt": "to resume training use ckpt_path=last or ckpt_path=path/to/last.ckpt",
    "rule": "the explanation callback's rule is lrp.rule=NAME",
    "evaluation": "the evaluation of the methods runs in explain.py mode=evaluate (conf/evaluation/)",
    "compare": "the explanation callback draws several rules with callbacks.explanation.rules={epsilon: {}, z: {}}",
}
_EXPLAIN_DEFAULT = "run it as python explain.py ckpt=<run>/checkpoints/best.ckpt {arg}"


def other_entry_hint(key: str, config_name: str) -> str | None:
    """The one-line hint for a key of the other entry point, or ``None`` when it is not one of its keys."""
    if config_name == "explain":
        table, other = TRAIN_ONLY_HINTS, "train"
    else:
        table, other = EXPLAIN_ONLY_HINTS, "explain"
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        hint = table.get(".".join(parts[:n]))
        if hint:
            return f"{key} belongs to {other}.py: {hint}"
    if key in _other_keys(other):
        if other == "explain":
            return f"{key} belongs to explain.py: " + _EXPLAIN_DEFAULT.format(arg=f"{key}=...")
        return f"{key} belongs to train.py: explain.py takes the model and its data from ckpt="
    return None


@functools.lru_cache(maxsize=2)
def _other_keys(config_name: str) -> frozenset[str]:
    """Every dotted key of conf/<config_name>.yaml as composed with its defaults, plus the group names."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = Path(__file__).resolve().parents[2] / "conf"
    if GlobalHydra.instance().is_initialized():  # never inside another composition: it would be replaced
        raise RuntimeError("_other_keys composes its own config: call it outside initialize_config_dir")
    try:
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose(config_name)
    finally:
        GlobalHydra.instance().clear()
    keys = set(dotted_keys(cfg))
    return frozenset(keys | {p.name for p in conf.iterdir() if p.is_dir() and p.name in keys})


# ---------------------------------------------------------------------------- explain.py
def choose_mode(options: DictConfig) -> str:
    """``mode=`` when given, else inferred as older command lines meant it: ``evaluate=true`` -> evaluate,
    ``compare=[..]`` -> compare, ``split=`` without ``index``/``class``/``video`` (or ``pretrained=`` with ``videos=``
    and no ``video=``) -> profile, else single."""
    mode = str(options.get("mode") or "auto")
    if mode != "auto":
        if mode not in MODE_NAMES:
            raise UserError(f"mode={mode}: choose one of auto, {', '.join(MODE_NAMES)}")
        if options.get("evaluate") and mode != "evaluate":
            raise UserError(f"evaluate=true asks for mode=evaluate, but mode={mode}: drop one of them")
        return mode
    if options.get("evaluate"):
        return "evaluate"
    if options.get("compare"):
        return "compare"
    picks_one = any(options.get(k) is not None for k in ("video", "index", "class"))
    if options.get("pretrained") not in (None, "") and options.get("videos") not in (None, "") and not picks_one:
        return "profile"  # a pretrained model over a folder of clips
    return "profile" if options.get("split") is not None and not picks_one else "single"


def given_keys(argv: Sequence[str]) -> list[str]:
    """The keys set on a command line (``+``/``~`` prefixes dropped; Hydra flags and ``hydra.*`` left out)."""
    keys = []
    for arg in argv:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key = arg.partition("=")[0].lstrip("+~")
        if not key.startswith("hydra"):
            keys.append(key)
    return keys


def check_explain(cfg: DictConfig, keys: Collection[str]) -> None:
    """Refuse what explain.py would ignore or cannot do, before any model is loaded (``keys``: the keys given on
    the command line, by :func:`given_keys`). Raises :class:`UserError`."""
    top = {k.split(".")[0] for k in keys}
    given = {k for k in top if k == "evaluate" and cfg.get("evaluate") or k != "evaluate"}
    for c in CONFLICTS:
        if c.first in given and c.second in given and _set(cfg, c.first) and _set(cfg, c.second):
            raise ConfigError(f"{c.first}= and {c.second}= together: {c.fix}")
    mode = choose_mode(cfg)
    for key in sorted(given):
        modes = KEY_MODES.get(key)
        if modes and mode not in modes and _set(cfg, key):
            use = " or ".join(f"mode={m}" for m in modes)
            raise ConfigError(f"{key}= does not apply to mode={mode} (it is read by {use} only): drop {key}= "
                              f"or choose {use}")
    if mode == "evaluate" and _set(cfg, "video"):
        raise ConfigError("evaluate mode scores the videos of a split of the checkpoint's data; drop video= and "
                          "pass split=test limit=N")
    has_ckpt = model_source(cfg) == "ckpt"
    if has_ckpt and not Path(str(cfg.ckpt)).expanduser().exists():
        raise MissingPathError(f"checkpoint not found: {Path(str(cfg.ckpt)).expanduser()}; pass "
                               "ckpt=path/to/best.ckpt from a train.py run")
    if not has_ckpt:  # pretrained=: what the file system alone says (a folder, its config.json and weights)
        from vidxai.pretrained_source import check_source

        check_source(str(cfg.pretrained), cfg.get("weights"))
    if _set(cfg, "video") and not Path(str(cfg.video)).expanduser().exists():
        raise MissingPathError(f"video not found: {cfg.video}; pass video=path/to/a/video file")
    rules = _conf_options("rule")
    if mode == "compare" and cfg.get("compare") is not None:
        names = OmegaConf.to_container(cfg.compare) if OmegaConf.is_list(cfg.compare) else [cfg.compare]
        if not names:
            raise ConfigError("compare=[] names no rule; pass compare=[z,epsilon,...] or drop mode=compare")
        unknown = [str(n) for n in names if str(n) not in rules]
        if unknown:
            raise ConfigError(f"compare=: unknown LRP rule(s) {unknown}; choose from {', '.join(rules)}")


def model_source(cfg: DictConfig) -> str:
    """``"ckpt"`` or ``"pretrained"``: which model explain.py explains; one error line for neither or both (and for
    ``weights=`` without ``pretrained=``)."""
    has_ckpt = not OmegaConf.is_missing(cfg, "ckpt") and cfg.get("ckpt") not in (None, "")
    pretrained = cfg.get("pretrained") not in (None, "")
    if has_ckpt and pretrained:
        raise UserError(f"pass either ckpt= (a train.py checkpoint) or pretrained= (a model as it is), not both: "
                        f"got ckpt={cfg.ckpt} and pretrained={cfg.pretrained}")
    if not has_ckpt and not pretrained:
        raise UserError("explain.py needs a checkpoint: pass ckpt=outputs/train/<run>/checkpoints/best.ckpt (written "
                        "by train.py; `make explain` takes the newest one), or a model you already have: "
                        "pretrained=<Hugging Face folder or repo id | torchvision:<builder> weights=<file.pth>>")
    if cfg.get("weights") not in (None, "") and not pretrained:
        raise UserError(f"weights={cfg.weights} goes with pretrained=torchvision:<builder>; a checkpoint (ckpt=) "
                        "carries its own weights")
    return "pretrained" if pretrained else "ckpt"


def dotted_keys(cfg: object, prefix: str = "") -> list[str]:
    """Every key of a config, nested ones dotted (``trainer.max_epochs``), in the config's order."""
    keys = []
    if isinstance(cfg, DictConfig):
        for k in cfg.keys():
            name = f"{prefix}{k}"
            keys.append(name)
            node = cfg._get_node(k)
            if isinstance(node, DictConfig):
                keys.extend(dotted_keys(node, f"{name}."))
    return keys


def _set(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` holds a value (not null, not false, not an empty list)."""
    if OmegaConf.is_missing(cfg, key):
        return False
    value = cfg.get(key)
    return value is not None and value is not False and not (OmegaConf.is_list(value) and len(value) == 0
                                                              and key != "compare")


def _conf_options(group: str) -> list[str]:
    conf = Path(__file__).resolve().parents[2] / "conf" / group
    return sorted(p.stem for p in conf.glob("*.yaml"))


# ---------------------------------------------------------------------------- train.py
def check_train(cfg: DictConfig, keys: Collection[str]) -> None:
    """What train.py can refuse without torch: a resume checkpoint that is not there."""
    resume = cfg.get("ckpt_path")
    if resume not in (None, "", "last") and not Path(str(resume)).expanduser().exists():
        raise MissingPathError(f"ckpt_path={resume} is not a file: pass a .ckpt written by train.py, or "
                               "ckpt_path=last for the newest checkpoint of the last run")
