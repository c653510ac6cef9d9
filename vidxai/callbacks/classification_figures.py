"""Test-set figures (confusion matrix, ROC curves, per-class report) drawn from the classifier's metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from vidxai.wandb_media import Image, Table, log_media

log = logging.getLogger(__name__)

__all__ = ["ClassificationFiguresCallback"]


class ClassificationFiguresCallback(Callback):
    """After ``trainer.test``: write the confusion matrix, ROC curves and classification report, and log them.

    The module computes the metrics (``VideoClassifier.test_results``, torchmetrics states synchronised over
    ranks in its ``on_test_epoch_end``); this callback only draws and logs, on global rank zero. Files land
    in ``<default_root_dir>/<subdir>/``: ``confusion_matrix.png``, ``roc.png``, ``classification_report.png``,
    ``classification_report.json`` and ``.txt``. W&B loggers get the three images under ``test/<name>`` and
    the report as the table ``test/classification_report_table``.

    Args:
        subdir: folder of the run directory that receives the files.
    """

    def __init__(self, subdir: str = "figures") -> None:
        self.subdir = str(subdir)
        #: Paths of the files written after the last test run (name -> path).
        self.artifacts: dict[str, Path] = {}

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        if not trainer.is_global_zero or not results:
            return
        names = list(getattr(pl_module, "class_names", None) or [str(i) for i in range(len(results["f1"]))])
        self.artifacts, report = write_test_figures(results, names, Path(trainer.default_root_dir) / self.subdir)
        log_test_figures(trainer.loggers, self.artifacts, report, names)


def write_test_figures(
    results: dict[str, Any], class_names: list[str], out_dir: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Render and save the test figures and report from the computed metrics: (name -> path, the report)."""
    from vidxai.viz.metrics import (
        classification_report,
        classification_report_figure,
        confusion_matrix_figure,
        roc_figure,
        save_figure,
        save_report,
    )

    confmat = results["confmat"].cpu().numpy()
    fpr, tpr, _ = results["roc"]
    report = classification_report(
        results["precision"].cpu().numpy(),
        results["recall"].cpu().numpy(),
        results["f1"].cpu().numpy(),
        confmat.sum(axis=1),
        class_names,
    )
    figures = {
        "confusion_matrix": confusion_matrix_figure(confmat, class_names),
        "roc": roc_figure(
            [f.cpu().numpy() for f in fpr],
            [t.cpu().numpy() for t in tpr],
            results["auroc"].float().cpu().numpy(),
            class_names,
        ),
        "classification_report": classification_report_figure(report),
    }
    paths = {key: save_figure(fig, out_dir / f"{key}.png") for key, fig in figures.items()}
    paths["report_json"], paths["report_txt"] = save_report(report, out_dir / "classification_report")
    log.info("test figures and classification report written to %s", out_dir)
    return paths, report


def log_test_figures(loggers: Any, paths: dict[str, Path], report: dict[str, Any], class_names: list[str]) -> None:
    """Send the figures and the report table to every W&B logger; other loggers keep the files and scalars."""
    columns = ["class", "precision", "recall", "f1-score", "support"]
    rows = [[name, *(report[name][c] for c in columns[1:])] for name in class_names]
    media: dict[str, Any] = {
        f"test/{key}": [Image(paths[key])] for key in ("confusion_matrix", "roc", "classification_report")
    }
    media["test/classification_report_table"] = Table(columns, rows)
    log_media(loggers, media)
