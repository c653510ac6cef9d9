"""The LightningModule that trains, validates and tests any registered video network."""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassROC,
)

from vidxai.data.input_stats import InputStats, clip_features
from vidxai.errors import ConfigError
from vidxai.models.registry import build_network

__all__ = ["DEFAULT_LR", "DEFAULT_WEIGHT_DECAY", "VideoClassifier"]

log = logging.getLogger(__name__)

#: Optimiser used when no ``optimizer`` partial is given: AdamW with these settings.
DEFAULT_LR = 3e-4
DEFAULT_WEIGHT_DECAY = 1e-4

#: Set while ``load_from_checkpoint`` rebuilds the module: weights come from the checkpoint, so
#: ``pretrained=True`` must not look for ImageNet files on this machine.
_RESTORING_CHECKPOINT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "_RESTORING_CHECKPOINT", default=False
)


def _plain(value: Any, name: str) -> Any:
    """Convert config containers (e.g. OmegaConf) to plain dict/list/scalars so checkpoints load with
    ``weights_only=True``; anything else is a clear error naming the hyper-parameter."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (Sequence, set)) and not isinstance(value, (bytes, bytearray)):
        return [_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"hyper-parameter {name} is a {type(value).__name__}; only numbers, strings, lists and dicts "
        f"can be stored in a checkpoint"
    )


def _inputs_and_label(batch: Any) -> tuple[str, torch.Tensor, torch.Tensor]:
    """Unpack a batch dict ``{"video" or "features": ..., "label": ...}``, with a clear error for anything else."""
    if isinstance(batch, Mapping) and "label" in batch:
        for kind in ("video", "features"):
            if kind in batch:
                return kind, batch[kind], batch["label"]
    got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
    raise ValueError(f"VideoClassifier expects batches as dicts with 'video' and 'label' (or cached 'features' "
                     f"and 'label'), got {got}")


class VideoClassifier(pl.LightningModule):
    """Train / evaluate a video network built by ``build_network`` from the plain dict ``net``.

    Args:
        net: network config, e.g. ``{"arch": "vgg16_lstm", "hidden_size": 256}``; ``arch`` picks the
            network in ``vidxai.models.NETWORKS``, the other keys are its arguments.
        num_classes: number of classes (>= 2).
        class_names: one name per class (default ``"0"``, ``"1"``, ...).
        preprocess: how clips were made (num_frames, size, crop_size, mean, std, ...), stored so a
            checkpoint alone can rebuild the preprocessing.
        data: the data config, stored for reference (dataset, split, ...).
        optimizer: partial taking ``params=`` (Hydra ``_partial_: true``); default AdamW(3e-4, wd 1e-4).
        scheduler: partial taking ``optimizer=``; a ``ReduceLROnPlateau`` monitors ``scheduler_monitor``.
        scheduler_monitor: metric that a plateau scheduler watches.
        label_smoothing: label smoothing of the cross-entropy loss.

    Batches are dicts with ``"video"`` float ``(B, T, 3, H, W)`` (or ``(B, K, T, 3, H, W)`` for K test
    clips per video, whose logits are averaged) and ``"label"`` ``(B,)``; instead of ``"video"`` a batch may
    carry ``"features"``, per-frame encoder features from the feature cache (``net.classify`` only).
    Hyper-parameters are plain Python types, so ``VideoClassifier.load_from_checkpoint(path, weights_only=True)`` works.
    """

    def __init__(
        self,
        net: dict[str, Any],
        num_classes: int,
        class_names: list[str] | None = None,
        preprocess: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        net = _plain(net, "net")
        class_names = _plain(class_names, "class_names")
        preprocess = _plain(preprocess, "preprocess")
        data = _plain(data, "data")
        num_classes = int(num_classes)
        if not isinstance(net, dict) or "arch" not in net:
            raise ValueError(
                f"net must be a dict with an 'arch' key (e.g. {{'arch': 'convlstm'}}), got {net!r}"
            )
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes={num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

        net_kwargs = {k: v for k, v in net.items() if k != "arch"}
        if _RESTORING_CHECKPOINT.get():  # the checkpoint's state dict replaces any ImageNet weights
            if "pretrained" in net_kwargs:
                net_kwargs["pretrained"] = False
            net_kwargs.pop("weights_path", None)
        self.net: nn.Module = build_network(net["arch"], num_classes, **net_kwargs)
        rebuild = getattr(self.net, "rebuild_kwargs", None)
        extra = rebuild() if callable(rebuild) else None
        if extra:  # e.g. a pretrained folder's full config, so checkpoints rebuild without the folder
            self.hparams["net"] = {**net, **_plain(extra, "net")}

        self._make_metrics(num_classes)
        #: statistics of the training clips of the first epoch as the network received them, stored in the
        #: checkpoint (``input_stats``) so explain.py can say when a clip is unlike them (vidxai.data.input_stats)
        self.input_stats = InputStats()
        #: Per-class test metrics of the last test epoch (precision, recall, f1, confmat, auroc: tensors;
        #: roc: (fpr, tpr, thresholds) lists per class), on the CPU; drawn by ``ClassificationFiguresCallback``.
        self.test_results: dict[str, Any] = {}

    def _make_metrics(self, num_classes: int) -> None:
        """The torchmetrics of training, validation and test (module attributes, so they move with the model)."""
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_acc_best = MaxMetric()
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(num_classes, average=None),
                "recall": MulticlassRecall(num_classes, average=None),
                "f1": MulticlassF1Score(num_classes, average=None),
                "confmat": MulticlassConfusionMatrix(num_classes),
                "auroc": MulticlassAUROC(num_classes, average=None),
                "roc": MulticlassROC(num_classes),
            },
            compute_groups=False,
        )

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: Any, *args: Any, **kwargs: Any
    ) -> VideoClassifier:
        """Lightning's ``load_from_checkpoint``, but ImageNet weights are not looked for (the checkpoint
        holds the trained ones), so ``pretrained=True`` checkpoints load on machines without them."""
        token = _RESTORING_CHECKPOINT.set(True)
        try:
            restored = super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
            return restored  # type: ignore[return-value]
        finally:
            _RESTORING_CHECKPOINT.reset(token)

    @property
    def class_names(self) -> list[str]:
        """Class names from the hyper-parameters, or ``"0"``, ``"1"``, ... when none were given."""
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams["num_classes"])]

    # ----------------------------------------------------------------------------------- forward
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` for ``(B, T, 3, H, W)``; ``(B, K, T, 3, H, W)`` averages the K clips' logits."""
        if video.ndim == 6:
            b, k = video.shape[:2]
            return self.net(video.flatten(0, 1)).reshape(b, k, -1).mean(dim=1)
        if video.ndim != 5:
            raise ValueError(
                f"video must be (B, T, 3, H, W) or (B, K, T, 3, H, W) for K clips, "
                f"got shape {tuple(video.shape)}"
            )
        return self.net(video)

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from cached per-frame encoder features: the network's temporal part and head only."""
        return self.net.classify(feats)

    def _shared_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kind, inputs, label = _inputs_and_label(batch)
        logits = self(inputs) if kind == "video" else self.forward_features(inputs)
        loss = F.cross_entropy(logits, label, label_smoothing=self.hparams["label_smoothing"])
        return loss, logits, label

    # ---------------------------------------------------------------------------------- training
    def on_train_start(self) -> None:
        """Forget the sanity-check validation when tracking the best accuracy; keep a resumed run's best."""
        self.val_acc_best.reset()
        restored = getattr(self, "_restored_val_acc_best", None)
        if restored is not None:
            self.val_acc_best.update(torch.tensor(restored, device=self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the best validation accuracy so far (a resumed run reports the same ``val/acc_best``) and the
        statistics of the training clips (``input_stats``)."""
        if self.val_acc_best.update_called:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        if self.input_stats.n:
            checkpoint["input_stats"] = self.input_stats.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_val_acc_best = checkpoint.get("val_acc_best")
        if checkpoint.get("input_stats"):
            self.input_stats = InputStats.from_dict(checkpoint["input_stats"])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.current_epoch == 0 and isinstance(batch, Mapping) and "video" in batch:
            self.input_stats.update(clip_features(batch["video"]))  # cheap: a few means per clip
        loss, logits, label = self._shared_step(batch)
        self.train_loss.update(loss.detach(), weight=label.shape[0])
        self.train_acc.update(logits.detach(), label)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    # -------------------------------------------------------------------------------- validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, label = self._shared_step(batch)
        self.val_loss.update(loss, weight=label.shape[0])
        self.val_acc.update(logits, label)
        self.val_f1.update(logits, label)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/f1", self.val_f1, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    # -------------------------------------------------------------------------------------- test
    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, label = self._shared_step(batch)
        self.test_loss.update(loss, weight=label.shape[0])
        self.test_acc.update(logits, label)
        self.test_f1.update(logits, label)
        self.test_per_class.update(logits.softmax(dim=-1), label)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.log("test/f1", self.test_f1, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        """Compute the per-class test metrics (on every rank: synchronised) into :attr:`test_results`.

        Drawing them (confusion matrix, ROC, report) is ``vidxai.callbacks.ClassificationFiguresCallback``'s job.
        """
        results = self.test_per_class.compute()
        self.test_per_class.reset()
        auroc = results["auroc"].float()
        self.log("test/auroc", torch.nanmean(auroc), sync_dist=True)
        self.test_results = {
            key: tuple([t.detach().cpu() for t in part] for part in value)
            if key == "roc"
            else value.detach().cpu()
            for key, value in results.items()
        }

    # ------------------------------------------------------------------------------- prediction
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``(B, C)``; ``batch`` is a dict with ``"video"`` or a video tensor."""
        video = batch["video"] if isinstance(batch, Mapping) else batch
        return self(video).softmax(dim=-1)

    # -------------------------------------------------------------------------------- optimisers
    def configure_optimizers(self) -> Any:
        """The optimiser over trainable parameters, plus the optional scheduler."""
        params: Iterable[nn.Parameter] = [p for p in self.parameters() if p.requires_grad]
        factory = self.optimizer_factory or functools.partial(
            torch.optim.AdamW, lr=DEFAULT_LR, weight_decay=DEFAULT_WEIGHT_DECAY
        )
        optimizer = factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.hparams["scheduler_monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}
