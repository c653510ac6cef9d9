"""Helpers shared by the train and explain pipelines (Hydra-aware)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from vidxai.errors import UserError
from vidxai.pipelines.command_line import dotted_keys, given_keys, other_entry_hint

if TYPE_CHECKING:  # the LRP engine imports torch: not needed to check a command line
    from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_entry_point(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run a pipeline; a :class:`UserError` ends in one line on stderr and exit code 2.

    Only the project's own ``UserError`` (and its subclasses, e.g. ``ConfigError``, ``VideoDecodeError``)
    becomes one line, also when ``hydra.utils.instantiate`` wrapped it. Anything else is a bug and keeps its
    traceback. ``VIDXAI_DEBUG=1`` shows the traceback of user errors too.
    """
    try:
        return fn(cfg)
    except (InstantiationException, UserError) as exc:
        # hydra.utils.instantiate wraps what a constructor raised: report the constructor's own message
        cause = exc.__cause__ if isinstance(exc, InstantiationException) else exc
        if not isinstance(cause, UserError) or os.environ.get("VIDXAI_DEBUG"):
            raise
        fail(str(cause))


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def prepare_command_line(conf_dir: str | Path, config_name: str, aliases: dict[str, str],
                         check: Callable[[DictConfig, list[str]], None] | None = None) -> None:
    """At an entry point, before Hydra and before any heavy import: rewrite the old spellings in ``sys.argv``
    (:func:`legacy_overrides`), then fail with one line on an unknown group option or key
    (:func:`check_group_overrides`, :func:`check_overrides`) or on what ``check(cfg, keys)`` refuses (the
    composed config and the keys given; :mod:`vidxai.pipelines.command_line`)."""

    sys.argv[1:] = legacy_overrides(sys.argv[1:], aliases)
    check_group_overrides(sys.argv[1:], conf_dir, config_name)
    cfg = check_overrides(sys.argv[1:], conf_dir, config_name)
    if cfg is not None and check is not None:
        try:
            check(cfg, given_keys(sys.argv[1:]))
        except UserError as exc:
            if os.environ.get("VIDXAI_DEBUG"):
                raise
            fail(str(exc))


def check_group_overrides(argv: Sequence[str], conf_dir: str | Path, config_name: str | None = None) -> None:
    """Fail with one line (exit 2) when a command-line override names a config group option that does not
    exist (``model=nope``), or a group of the other entry point (``explain.py model=convlstm``), before Hydra
    prints its multi-line error (exit 1)."""

    conf = Path(conf_dir)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        hint = other_entry_hint(key, config_name) if config_name and "." not in key else None
        if hint and key in _FOREIGN_GROUPS.get(config_name or "", ()):
            fail(hint)
        if key.startswith("hydra/") or "." in key or not (conf / key).is_dir():
            continue
        options = sorted(p.stem for p in (conf / key).glob("*.yaml"))
        for choice in _sweep_values(value):
            if choice in ("null", "") or choice in options:
                continue
            what = "unknown LRP rule" if key == "rule" else "unknown"  # conf/rule/ is written from the registry
            fail(f"{what} {key}={choice}: choose one of {', '.join(options)} (conf/{key}/)")


#: config groups of the other entry point (conf/<group>/ exists, but this config does not use it)
_FOREIGN_GROUPS = {"explain": ("model", "data", "callbacks", "experiment", "hparams_search", "debug"),
                   "train": ("rule", "evaluation")}

#: Keys of the explainer settings before the ``lrp`` group, rewritten to ``lrp.<key>`` (old command lines work).
LRP_KEYS = ("lstm_rule", "lstm_eps", "bias_factor", "chunk_frames")
EXPLAIN_ALIASES = {key: f"lrp.{key}" for key in LRP_KEYS}
TRAIN_ALIASES = {f"callbacks.explanation.{key}": f"lrp.{key}" for key in LRP_KEYS}


def legacy_overrides(argv: Sequence[str], aliases: dict[str, str]) -> list[str]:
    """``argv`` with the old spelling of each aliased key replaced by its new one (``lstm_eps=0.01`` ->
    ``lrp.lstm_eps=0.01``); ``+``/``~`` prefixes and sweep values are kept."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        prefix = key[: len(key) - len(key.lstrip("+~"))]
        new = aliases.get(key[len(prefix):])
        out.append(f"{prefix}{new}{sep}{value}" if new and (sep or prefix == "~") else arg)
    return out


def lrp_config(cfg: DictConfig) -> LRPConfig:
    """The checked :class:`LRPConfig` of the composed ``lrp`` group (one ``error:`` line on a bad setting)."""
    from vidxai.xai.config import LRPConfig

    node = cfg.get("lrp")
    if node is None:
        raise UserError("the config has no lrp group; add `- lrp: default` to its defaults (conf/lrp/)")
    return LRPConfig.from_dict(to_plain(node)).check()


def check_overrides(argv: Sequence[str], conf_dir: str | Path, config_name: str) -> DictConfig | None:
    """Compose ``config_name`` with the command-line overrides once before Hydra does, and return it: a key that
    does not exist (``trainer.max_epoch=2``) fails with one line naming the closest valid key, or the entry point
    it belongs to (exit 2), not Hydra's multi-line message (exit 1). ``+key=value`` adds a key only where a
    constructor receives it (a node with ``_target_``, a new callback or logger): anywhere else nothing would read
    it, so it is refused like an unknown key. Runs with Hydra flags (``-m``, ``--cfg``...) are left to Hydra
    (``None``)."""
    if any(arg.startswith("-") for arg in argv):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, OverrideParseException

    overrides = [arg for arg in argv if "=" in arg or arg.startswith("~")]
    problem: tuple[str, list[str]] | str | None = None  # (unknown key, valid keys) or a message
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
            try:
                cfg = compose(config_name, overrides=overrides)
            except (ConfigCompositionException, OverrideParseException) as exc:
                problem = _failed_override(exc, overrides, config_name)
            added = [a.partition("=")[0][1:] for a in overrides if a.startswith("+") and not a.startswith("++")]
            added = [k for k in added if not k.startswith("hydra") and not (Path(conf_dir) / k).is_dir()]
            if added and problem is None:
                base = compose(config_name, overrides=[o for o in overrides if not o.startswith("+")])
                problem = next(((k, dotted_keys(base)) for k in added if not _receives_new_keys(base, k)), None)
    finally:
        GlobalHydra.instance().clear()
    if problem is not None:  # after Hydra is cleared: the message may compose the other entry point's config
        fail(problem if isinstance(problem, str) else unknown_key_message(problem[0], config_name, problem[1]))
    return cfg


def _receives_new_keys(cfg: DictConfig, key: str) -> bool:
    """Whether a key added at dotted ``key`` reaches a constructor: an ancestor node has ``_target_``, or it adds
    an entry to the ``callbacks``/``logger`` groups (each entry with a ``_target_`` is instantiated)."""
    parts = key.split(".")
    if parts[0] in ("callbacks", "logger") and len(parts) >= 2:
        return True
    node: Any = cfg
    for part in parts[:-1]:
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
        if isinstance(node, DictConfig) and "_target_" in node:
            return True
    return False


def unknown_key_message(key: str, config_name: str, keys: Sequence[str]) -> str:
    """``unknown key X: ...`` with the closest valid key, or the entry point the key belongs to and the way to
    do it here; never a hint to add it with ``+`` (nothing would read it)."""
    import difflib


    hint = other_entry_hint(key, config_name)
    if hint:
        return hint
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    where = f"conf/{config_name}.yaml and its groups"
    return f"unknown key {key}: " + (f"did you mean {close[0]}?" if close else f"see {where} for the valid keys")


def _failed_override(exc: Exception, overrides: list[str], config_name: str) -> tuple[str, list[str]] | str:
    """A failed composition: ``(unknown key, the valid keys)`` where an unknown key is the cause, else the first
    line of Hydra's message."""
    import re

    from hydra import compose

    text = str(exc)
    found = re.search(r"Could not (?:override|append to config)[^']*'([^']+)'", text)
    if not found:
        return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    key = found.group(1)
    base = compose(config_name, overrides=[o for o in overrides if o.lstrip("+~").split("=")[0] != key])
    return key, dotted_keys(base)


def _sweep_values(value: str) -> list[str]:
    """The option names of ``a``, ``a,b`` or ``choice(a,b)`` (other sweep syntax is left to Hydra)."""
    text = value.strip()
    if text.startswith("choice(") and text.endswith(")"):
        text = text[len("choice("):-1]
    if any(c in text for c in "()[]{}$"):
        return []
    return [v.strip().strip("'\"") for v in text.split(",")]


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    objects: list[Any] = []
    if not cfg:
        return objects
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.debug("instantiating %s <%s>", name, conf._target_)
            obj = hydra.utils.instantiate(conf)
            init = getattr(obj, "_wandb_init", None)
            if isinstance(init, dict) and init.get("anonymous") is None:
                # Lightning's WandbLogger always passes the deprecated `anonymous` setting; W&B warns about it
                init.pop("anonymous", None)
            objects.append(obj)
    return objects


def to_plain(cfg: Any) -> Any:
    """A resolved plain-python copy of a config node (safe to store in checkpoints)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def sweep_group(cfg: DictConfig) -> None:
    """Fill ``logger.wandb.group`` when it is null: the task name for a single run, ``<task>-<sweep folder>`` for
    each job of a multirun (``-m``, optuna, submitit), so every job is its own W&B run, grouped by sweep."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default="unset")
    if group is not None:  # set explicitly, or no W&B logger
        return
    name = str(cfg.get("task_name") or "run")
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get() if HydraConfig.initialized() else None
        if hc is not None and hc.mode == RunMode.MULTIRUN and hc.runtime.output_dir:
            # <sweep dir>/<job subdir>: the sweep folder's name is the same for all of the sweep's jobs
            name = f"{name}-{Path(str(hc.runtime.output_dir)).parent.name}"
    except (ImportError, ValueError):  # pragma: no cover - Hydra always present with a DictConfig
        pass
    with open_dict(cfg):
        cfg.logger.wandb.group = name


def check_launch(trainer: Any) -> None:
    """Refuse a multi-process strategy that re-executes the script (Lightning's ``ddp`` launcher) inside a local
    Hydra multirun: each re-executed rank would start the whole sweep again."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    if type(launcher).__name__ != "_SubprocessScriptLauncher":
        return
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise UserError("trainer.strategy=ddp re-executes the script once per process, which a multirun (-m) cannot "
                        "do: sweep multi-process jobs with hydra/launcher=slurm (srun starts the ranks), or run "
                        "them one at a time without -m")


def save_in_run(run: Any, path: Path) -> None:
    """Put ``path`` among the W&B run's files (uploaded with the run), quietly: ``run.save`` would print a
    "Symlinked 1 file into the W&B run directory" note the user cannot act on."""
    if run is None or not getattr(run, "dir", None):
        return
    shutil.copyfile(path, Path(run.dir) / Path(path).name)


def finish_wandb() -> None:
    """Close the active W&B run, so every job of a multirun gets its own run."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()


class _DropMessages(logging.Filter):
    """Drop log records whose message contains one of ``needles`` (library tips a user cannot act on)."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(n in text for n in self.needles)


def quiet_warnings() -> None:
    """At the entry points: silence library noise a user cannot act on; real warnings stay.

    Deprecation warnings raised inside torch / Lightning / W&B (their own internals, not this project's
    calls), Lightning's advertising tip and its "already configured with model summary" note, and the
    log-interval warning (vidxai logs epoch metrics only, so the interval changes nothing).
    """
    import warnings

    for module in ("torch", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "wandb", "hydra",
                   "torchmetrics", "captum", "torchvision"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*You are using `torch.load` with `weights_only=False`.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        _DropMessages("💡 Tip", "litlogger", "already configured with model summary"))
