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

from vidxai.errors import ConfigError

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
        rules: rule name -> rule parameters (e.g. ``{"epsilon": {"epsilon": 0.1}}``), see ``vidxai.xai.RULES``.
        num_clips: how many validation clips (stratified over classes, the same every epoch).
        every_n_epochs: explain after every n-th validation epoch; 0 disables the callback.
        top_k: peaks marked on the relevance curve.
        scale: heatmap colour scale, ``"video"`` or ``"frame"``.
        log_media: also write and log the overlay GIF.
        chunk_frames: CNN stage in chunks of this many frames (bounded memory).
        lstm_eps: epsilon of the recurrent part and the head; ``None``: VideoLRP's default.
        bias_factor: 0 or 1, see :class:`~vidxai.xai.VideoLRP`; ``None``: VideoLRP's default.
        lstm_rule: gate rule of the recurrent part: ``signal_take_all``, ``half`` or ``proportional``.

    The rules and their parameters are checked against the rule registry when the callback is built, the
    explainer settings against the model when fitting starts (a bad setting stops the run there, not later).
    """

    def __init__(
        self,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        num_clips: int = 4,
        every_n_epochs: int = 1,
        top_k: int = 3,
        scale: str = "video",
        log_media: bool = True,
        chunk_frames: int | None = None,
        lstm_eps: float | None = None,
        bias_factor: float | None = None,
        lstm_rule: str = "signal_take_all",
    ) -> None:
        from vidxai.xai import resolve_rule
        from vidxai.xai.recurrent import check_lstm_rule

        self.rules = {str(k): dict(v or {}) for k, v in (rules or {"epsilon": {}}).items()}
        for rule, params in self.rules.items():
            try:
                resolve_rule(rule, **params)  # the rule registry checks names and parameters
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
        self.chunk_frames = chunk_frames
        self.recurrent_params = {
            k: v for k, v in (("lstm_eps", lstm_eps), ("bias_factor", bias_factor)) if v is not None
        }
        self.recurrent_params["lstm_rule"] = check_lstm_rule(lstm_rule)
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
        from vidxai.xai import VideoLRP

        net = getattr(pl_module, "net", pl_module)
        params = self.rules[rule]
        return VideoLRP(net, rule=rule, chunk_frames=self.chunk_frames, **self.recurrent_params, **params)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Build each explainer once when fitting starts: a setting VideoLRP refuses stops the run here."""
        if stage != "fit" or self.every_n_epochs <= 0:
            return
        for rule in self.rules:
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
        from vidxai.data.clips import prepare_clip
        from vidxai.data.transforms import VideoTransform
        from vidxai.reporting import render_explanation
        from vidxai.wandb_media import Image, Video, log_media

        hp = pl_module.hparams
        preprocess = dict(hp.get("preprocess") or {})
        class_names = list(hp.get("class_names") or [str(i) for i in range(int(hp["num_classes"]))])
        transform = VideoTransform.from_preprocess(preprocess)
        out_root = Path(trainer.default_root_dir) / "explanations" / f"epoch_{trainer.current_epoch:03d}"
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        device = pl_module.device

        for rule in self.rules:
            explainer = self._explainer(pl_module, rule)
            grids, curves, captions, gifs = [], [], [], []
            for i in self._select(trainer, dataset):
                sample = dataset[i]
                x, frames, frame_indices = prepare_clip(sample["video"], sample["frame_indices"], transform, device)
                expl = explainer.explain(x)
                label = int(sample["label"])
                name = f"{class_names[label]}_{i:04d}"
                caption = (
                    f"{class_names[label]} -> pred {class_names[int(np.argmax(expl.logits.cpu().numpy()))]}"
                    f" (target {class_names[expl.target]})"
                )
                files = render_explanation(
                    out_root / rule,
                    frames,
                    expl.pixel.detach().cpu().float().numpy(),
                    frame_indices=frame_indices,
                    title=f"epoch {trainer.current_epoch} · {rule} · {caption}",
                    top_k=self.top_k,
                    scale=self.scale,
                    prefix=f"{name}_",
                    media=self.log_media and bool(wandb_loggers),
                )
                grids.append(str(files.heatmaps))
                curves.append(str(files.curve))
                captions.append(caption)
                if files.gif is not None:
                    gifs.append((str(files.gif), caption))
            media = {
                f"explain/{rule}/heatmaps": [Image(path, cap) for path, cap in zip(grids, captions)],
                f"explain/{rule}/curve": [Image(path, cap) for path, cap in zip(curves, captions)],
                f"explain/{rule}/overlay": [Video(path, cap) for path, cap in gifs],
            }
            log_media(wandb_loggers, media, step=trainer.global_step)
