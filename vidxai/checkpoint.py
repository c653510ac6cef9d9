"""Load a training checkpoint safely: network, class names and preprocessing, from ``ckpt=`` alone.

Checkpoints are read with ``torch.load(weights_only=True)``, so a crafted file cannot run code, and the
network is rebuilt through the name registry (:func:`vidxai.models.build_network`), never from an import
path stored in the file.
"""

from __future__ import annotations

import csv
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidxai.errors import UserError

__all__ = ["TMP_MARK", "LoadedCheckpoint", "atomic_save", "load_checkpoint"]

#: Infix of the temporary files :func:`atomic_save` writes (``last.ckpt.tmp-<pid>``).
TMP_MARK = ".tmp-"

_NET_PREFIX = "net."


@dataclass
class LoadedCheckpoint:
    """What explanation tools need from a checkpoint written by ``train.py``."""

    path: Path
    net: nn.Module
    arch: str
    class_names: list[str]
    preprocess: dict[str, Any]
    data: dict[str, Any]
    hparams: dict[str, Any]
    datamodule_state: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    #: best validation accuracy recorded in the checkpoint (``val_acc_best``), if any
    val_accuracy: float | None = None
    #: statistics of the training clips (:mod:`vidxai.data.input_stats`); empty for older checkpoints
    input_stats: dict[str, Any] = field(default_factory=dict)

    def test_accuracy(self) -> float | None:
        """The test accuracy its training run recorded (``<run>/csv/metrics.csv``, ``test/acc``), if any."""
        metrics = self.path.resolve().parent.parent / "csv" / "metrics.csv"
        if not metrics.is_file():
            return None
        with metrics.open(newline="") as fh:
            values = [row.get("test/acc") for row in csv.DictReader(fh)]
        found = [float(v) for v in values if v not in (None, "")]
        return found[-1] if found else None

    def describe(self) -> str:
        """One line: which checkpoint, its architecture, classes, epoch and recorded accuracies."""
        parts = [self.arch, f"{len(self.class_names)} classes"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        test = self.test_accuracy()
        parts.append("test accuracy " + (f"{test:.2f}" if test is not None else "not recorded"))
        if self.val_accuracy is not None:
            parts.append(f"best val accuracy {self.val_accuracy:.2f}")
        return f"checkpoint {self.path}: {', '.join(parts)}"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file: write ``<path>.tmp-<pid>`` in the same folder, flush it
    to disk, then rename it over ``path`` (``os.replace``). A process killed meanwhile leaves the previous file
    intact; the temporary file it left is removed by the next save."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{target.name}{TMP_MARK}*"):
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - file systems that cannot open folders
        pass


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        hint = " (a folder: pass the .ckpt file inside its checkpoints/)" if path.is_dir() else ""
        raise UserError(f"checkpoint not found: {path}{hint}; pass ckpt=path/to/best.ckpt from a train.py run")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "unsupported global" not in text.lower():  # garbage bytes, not a forbidden object
            raise UserError(
                f"checkpoint {path} is unreadable (not a torch checkpoint); "
                "pass a complete .ckpt file written by train.py"
            ) from None
        raise UserError(
            f"checkpoint {path} refused by safe loading (weights_only=True): it holds Python objects beyond "
            "tensors and plain containers, which could run code; use a checkpoint written by vidxai's train.py"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}: {_first_line(str(exc))}); "
            "pass a complete .ckpt file written by train.py"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(
            f"checkpoint {path} is not a Lightning checkpoint (no 'state_dict'); pass one written by train.py"
        )
    return ckpt


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network of a ``train.py`` checkpoint in eval mode, with its class names and preprocessing.

    Raises:
        UserError: missing, unreadable or unsafe file; a checkpoint of another architecture or project.
    """
    from vidxai.models import NETWORKS, build_network

    path = Path(path).expanduser()
    ckpt = _read(path, map_location)
    hp = ckpt.get("hyper_parameters") or {}
    net_cfg = hp.get("net")
    if not isinstance(net_cfg, dict) or "arch" not in net_cfg:
        raise UserError(
            f"checkpoint {path} was not written by vidxai's train.py (no 'net.arch' hyper-parameter); "
            f"vidxai explains {sorted(NETWORKS)} checkpoints"
        )
    arch = net_cfg["arch"]
    if arch not in NETWORKS:
        raise UserError(f"checkpoint {path} holds architecture {arch!r}; vidxai explains {sorted(NETWORKS)}")
    num_classes = int(hp.get("num_classes", 0))
    class_names = list(hp.get("class_names") or [str(i) for i in range(num_classes)])
    kwargs = {k: v for k, v in net_cfg.items() if k != "arch"}
    # weights come from the checkpoint: never look for ImageNet weights when rebuilding
    if "pretrained" in kwargs:
        kwargs["pretrained"] = False
    kwargs.pop("weights_path", None)
    try:
        net = build_network(arch, num_classes=num_classes, **kwargs)
    except ValueError as exc:
        raise UserError(f"checkpoint {path}: cannot rebuild network: {exc}") from None
    state = {k[len(_NET_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(_NET_PREFIX)}
    missing, unexpected = _load_state(net, state)
    if missing or unexpected:
        raise UserError(
            f"checkpoint {path} does not match architecture {arch!r} "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''}); it was written for another network"
        )
    net.to(map_location).eval()
    dm_state = {}
    for key, value in ckpt.items():
        if key.endswith("DataModule") and isinstance(value, dict):
            dm_state = value
    return LoadedCheckpoint(
        path=path,
        net=net,
        arch=arch,
        class_names=class_names,
        preprocess=dict(hp.get("preprocess") or {}),
        data=dict(hp.get("data") or {}),
        hparams=dict(hp),
        datamodule_state=dm_state,
        epoch=ckpt.get("epoch"),
        val_accuracy=_float_or_none(ckpt.get("val_acc_best")),
        input_stats=dict(ckpt.get("input_stats") or {}),
    )


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _load_state(net: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shape_bad:
        return missing + [f"{k} (shape)" for k in sorted(shape_bad)], unexpected
    net.load_state_dict(state, strict=True)
    return [], []
