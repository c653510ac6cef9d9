"""Explain a fixed, stratified set of validation clips with LRP at validation end and log the pictures."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from vidxai.data.clips import prepare_clip
from vidxai.data.transforms import VideoTransform
from vidxai.errors import ConfigError
from vidxai.wandb_media import Image, Video, log_media
from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

__all__ = ["ExplanationCallback", "stratified_indices"]


def stratified_indices(labels: list[int], k: int) -> list[int]:
    """First ``k`` indices taken round-robin over classes (class order, then dataset order): fixed and balanced."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    depth = 0
    while len(out) < k and any(depth < len(q) for q in queues):
        out.extend(q[depth] for q in queues if depth < len(q) and len(out) < k)
        depth += 1
    return out


class ExplanationCallback(Callback):
    """Run LRP on ``num_clips`` validation clips every ``every_n_epochs`` epochs and log heatmaps.

    Runs on global rank zero only and uses no collective operation, so other ranks never wait on it.
    Files land in ``<default_root_dir>/explanations/epoch_XXX/``; W&B loggers get the heatmap grid, the
    relevance curve and the overlay GIF under ``explain/<rule>/...``; every logger gets ``explain/time_s``.

    Args:
        lrp: the explainer settings (:class:`~vidxai.xai.config.LRPConfig` or its mapping, the ``lrp`` group).
        rules: rule name -> rule parameters for several panels (e.g. ``{"epsilon": {}, "z": {}}``), each with
            the other settings of ``lrp``; ``None``: ``lrp``'s own rule.
        num_clips: how many validation clips (stratified over classes, the same every epoch).
        every_n_epochs: explain after every n-th validation epoch; 0 disables the callback.
        top_k: peaks marked on the relevance curve.
        scale: heatmap colour scale, ``"video"`` or ``"frame"``.
        log_media: also write and log the overlay GIF.
        settings: single :class:`~vidxai.xai.config.LRPConfig` fields over ``lrp`` (``lstm_eps=0.01``).

    The rules and settings are checked when the callback is built, the explainers against the model when
    fitting starts (a bad setting stops the run there, not later).
    """

    def __init__(
        self,
        lrp: LRPConfig | Mapping[str, Any] | None = None,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        num_clips: int = 4,
        every_n_epochs: int = 1,
        top_k: int = 3,
        scale: str = "video",
        log_media: bool = True,
        **settings: Any,
    ) -> None:
        base = lrp.to_dict() if isinstance(lrp, LRPConfig) else dict(lrp or {})
        try:
            base_cfg = LRPConfig.from_dict(base, **settings)
            panels = {str(k): dict(v or {}) for k, v in (rules or {base_cfg.rule: base_cfg.params}).items()}
            self.configs = {rule: base_cfg.with_rule(rule, params).check() for rule, params in panels.items()}
        except ValueError as exc:
            raise ConfigError(f"explanation callback: {exc}") from None
        if num_clips < 1:
            raise ConfigError(f"explanation callback: num_clips={num_clips} must be >= 1")
        if scale not in ("video", "frame"):
            raise ConfigError(f"explanation callback: scale={scale!r}; choose 'video' or 'frame'")
        self.num_clips = int(num_clips)
        self.every_n_epochs = int(every_n_epochs)
        self.top_k = int(top_k)
        self.scale = scale
        self.log_media = bool(log_media)
        self._indices: list[int] | None = None
        self.last_duration_s: float | None = None

    # ------------------------------------------------------------------ selection
    def _due(self, trainer: pl.Trainer) -> bool:
        if self.every_n_epochs <= 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return False
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _val_dataset(self, trainer: pl.Trainer) -> Any:
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        dataset = None if loaders is None else loaders.dataset
        # with data.feature_cache the loader serves encoder features: explain the clips behind them
        return getattr(dataset, "clips", dataset)

    def _select(self, trainer: pl.Trainer, dataset: Any) -> list[int]:
        if self._indices is None:
            labels = [int(e.record.label) for e in dataset.entries]
            self._indices = stratified_indices(labels, self.num_clips)
        return self._indices

    def _explainer(self, pl_module: pl.LightningModule, rule: str) -> Any:
        preprocess = getattr(getattr(pl_module, "hparams", None), "preprocess", None)
        return self.configs[rule].build(getattr(pl_module, "net", pl_module), preprocess=preprocess)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Build each explainer once when fitting starts: a setting VideoLRP refuses stops the run here."""
        if stage != "fit" or self.every_n_epochs <= 0:
            return
        for rule in self.configs:
            try:
                self._explainer(pl_module, rule)
            except ValueError as exc:
                raise ConfigError(
                    f"explanation callback: {exc} (or turn it off: callbacks.explanation.every_n_epochs=0)"
                ) from None

    # ------------------------------------------------------------------ main hook
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        dataset = self._val_dataset(trainer)
        if dataset is None or len(dataset) == 0:
            return
        start = time.perf_counter()
        try:
            # validation runs under torch.inference_mode: LRP needs autograd, locally
            with torch.inference_mode(False), torch.enable_grad():
                self._explain_epoch(trainer, pl_module, dataset)
        except Exception as exc:  # an explanation must never kill a training run
            log.warning("explanation callback failed at epoch %d: %s", trainer.current_epoch, exc, exc_info=True)
        self.last_duration_s = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics({"explain/time_s": self.last_duration_s}, step=trainer.global_step)

    def _explain_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dataset: Any) -> None:
        hp = pl_module.hparams
        class_names = list(hp.get("class_names") or [str(i) for i in range(int(hp["num_classes"]))])
        transform = VideoTransform.from_preprocess(dict(hp.get("preprocess") or {}))
        out_root = Path(trainer.default_root_dir) / "explanations" / f"epoch_{trainer.current_epoch:03d}"
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        media_on = self.log_media and bool(wandb_loggers)
        for rule in self.configs:
            explainer = self._explainer(pl_module, rule)
            panels = [
                self._explain_clip(explainer, dataset, i, transform, pl_module.device, class_names,
                                   out_root / rule, f"epoch {trainer.current_epoch} · {rule}", media_on)
                for i in self._select(trainer, dataset)
            ]
            media = {
                f"explain/{rule}/heatmaps": [Image(str(f.heatmaps), cap) for f, cap in panels],
                f"explain/{rule}/curve": [Image(str(f.curve), cap) for f, cap in panels],
                f"explain/{rule}/overlay": [Video(str(f.gif), cap) for f, cap in panels if f.gif is not None],
            }
            log_media(wandb_loggers, media, step=trainer.global_step)

    def _explain_clip(
        self, explainer: Any, dataset: Any, i: int, transform: Any, device: torch.device, class_names: list[str],
        out_dir: Path, title: str, media: bool,
    ) -> tuple[Any, str]:
        """Explain and draw validation clip ``i``: its files and its caption."""
        from vidxai.viz.explanation import render_explanation

        sample = dataset[i]
        x, frames, frame_indices = prepare_clip(sample["video"], sample["frame_indices"], transform, device)
        expl = explainer.explain(x)
        label = int(sample["label"])
        pred = int(np.argmax(expl.logits.detach().cpu().numpy()))
        caption = f"{class_names[label]} -> pred {class_names[pred]} (target {class_names[expl.target]})"
        files = render_explanation(
            out_dir, frames, expl.pixel.detach().cpu().float().numpy(), frame_indices=frame_indices,
            title=f"{title} · {caption}", top_k=self.top_k, scale=self.scale,
            prefix=f"{class_names[label]}_{i:04d}_", media=media,
        )
        return files, caption
