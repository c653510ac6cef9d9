"""The one helper that logs media (images, videos, tables) to Weights & Biases.

Used by the explain pipeline (a ``wandb`` run), the explanation callback and the test-figures callback
(Lightning loggers). Media are described by small records pointing at files already written to the run
folder, so nothing is drawn twice and loggers other than W&B simply keep the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Html", "Image", "Table", "Video", "log_media", "wandb_sinks"]


@dataclass(frozen=True)
class Image:
    """An image file (PNG, ...) with an optional caption."""

    path: str | Path
    caption: str | None = None


@dataclass(frozen=True)
class Video:
    """A video file (GIF by default) with an optional caption."""

    path: str | Path
    caption: str | None = None
    format: str = "gif"


@dataclass(frozen=True)
class Table:
    """A table: column names and rows of plain values."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Html:
    """A self-contained HTML file (``report.html``), shown as it is (no W&B style sheet injected)."""

    path: str | Path


Media = Image | Video | Table | Html | Sequence[Image | Video]


def wandb_sinks(target: Any) -> list[Any]:
    """The W&B destinations in ``target``: a ``wandb`` run, a ``WandbLogger``, a list of Lightning loggers
    (the others are skipped: they keep the files and the scalars), or ``None``."""
    from pytorch_lightning.loggers import Logger, WandbLogger

    if target is None:
        return []
    if isinstance(target, WandbLogger):
        return [target]
    if isinstance(target, (list, tuple)):
        return [sink for item in target for sink in wandb_sinks(item)]
    if isinstance(target, Logger):
        return []
    return [target] if callable(getattr(target, "log", None)) else []


def _to_wandb(item: Any) -> Any:
    import wandb

    if isinstance(item, Image):
        return wandb.Image(str(item.path), caption=item.caption)
    if isinstance(item, Video):
        return wandb.Video(str(item.path), caption=item.caption, format=item.format)
    if isinstance(item, Html):
        return wandb.Html(str(item.path), inject=False)
    if isinstance(item, Table):
        return wandb.Table(columns=list(item.columns), data=[list(row) for row in item.rows])
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return [_to_wandb(i) for i in item]
    raise TypeError(f"log_media: cannot log a {type(item).__name__}; use Image, Video, Table, Html or a list of them")


def log_media(target: Any, media: Mapping[str, Media], step: int | None = None) -> int:
    """Log ``media`` (key -> Image / Video / Table / list of Images or Videos) to every W&B sink in ``target``.

    Lightning's ``WandbLogger`` gets them through ``log_metrics`` (with the trainer ``step``), a ``wandb``
    run through ``run.log``. Empty lists are left out. Returns the number of sinks logged to (0: no W&B).
    """
    sinks = wandb_sinks(target)
    items = {k: v for k, v in media.items() if not (isinstance(v, Sequence) and not isinstance(v, str) and not v)}
    if not sinks or not items:
        return 0
    payload = {key: _to_wandb(value) for key, value in items.items()}
    for sink in sinks:
        if hasattr(sink, "log_metrics"):  # WandbLogger
            sink.log_metrics(payload, step=step)
        elif step is None:
            sink.log(payload)
        else:
            sink.log(payload, step=step)
    return len(sinks)
