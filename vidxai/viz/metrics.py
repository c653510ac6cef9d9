"""Figures of classification metrics: confusion matrix, per-class ROC curves, classification report.

Pure functions from numpy arrays to ``matplotlib.figure.Figure`` (no pyplot global state, safe with
the Agg backend and in worker threads). Readable from a handful of classes up to 101 (UCF101): with
many classes the cell annotations and legends are dropped and fonts shrink.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "classification_report",
    "classification_report_figure",
    "classification_report_text",
    "confusion_matrix_figure",
    "roc_figure",
    "save_figure",
    "save_report",
]

#: Above this many classes, cells are not annotated with numbers.
ANNOTATE_MAX_CLASSES = 20
#: Above this many classes, ROC curves get no legend (the title carries the macro AUC).
LEGEND_MAX_CLASSES = 25
_AVERAGES = ("macro avg", "weighted avg")
_METRICS = ("precision", "recall", "f1-score")


def _side(n: int, per_class: float = 0.38, lo: float = 5.0, hi: float = 24.0) -> float:
    """Figure side length in inches for ``n`` classes."""
    return float(np.clip(2.5 + per_class * n, lo, hi))


def _fontsize(n: int) -> float:
    """Tick label font size for ``n`` classes."""
    return float(np.clip(200.0 / max(n, 1), 4.0, 10.0))


def _check_names(n: int, class_names: Sequence[str], what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{what} has {n} classes but class_names has {len(names)}: pass one name per class")
    return names


def confusion_matrix_figure(
    cm: np.ndarray, class_names: Sequence[str], normalize: bool = True, title: str = "Confusion matrix"
) -> Figure:
    """Heatmap of a confusion matrix ``cm[true, predicted]``; ``normalize`` divides each row by its total."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    n = cm.shape[0]
    names = _check_names(n, class_names, "confusion matrix")
    values = cm
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    side = _side(n)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    label = "fraction of true class" if normalize else "count"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    fs = _fontsize(n)
    rotation, align = (90, "center") if n > 10 else (45, "right")
    ax.set_xticks(range(n), names, rotation=rotation, ha=align, fontsize=fs)
    ax.set_yticks(range(n), names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + (" (row-normalised)" if normalize else ""))
    if n <= ANNOTATE_MAX_CLASSES:
        threshold = 0.5 * (values.max() if values.size else 1.0)
        for i in range(n):
            for j in range(n):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(round(values[i, j]))}"
                color = "white" if values[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=fs * 0.8, color=color)
    return fig


def roc_figure(
    fpr_list: Sequence[np.ndarray],
    tpr_list: Sequence[np.ndarray],
    auc_list: Sequence[float],
    class_names: Sequence[str],
    title: str = "ROC curves (one vs rest)",
) -> Figure:
    """One ROC curve per class plus the chance diagonal; the legend (or title) gives the AUCs."""
    n = len(fpr_list)
    if not (len(tpr_list) == len(auc_list) == n):
        raise ValueError(
            f"roc_figure needs one fpr, tpr and auc per class, got {n}, {len(tpr_list)}, {len(auc_list)}"
        )
    names = _check_names(n, class_names, "ROC data")
    aucs = np.asarray(auc_list, dtype=np.float64)
    fig = Figure(figsize=(8.0, 6.5) if n <= LEGEND_MAX_CLASSES else (7.0, 6.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _class_colors(n)
    for k in range(n):
        fpr, tpr = np.asarray(fpr_list[k], dtype=np.float64), np.asarray(tpr_list[k], dtype=np.float64)
        label = f"{names[k]} (AUC {aucs[k]:.3f})"
        ax.plot(fpr, tpr, color=colors[k], lw=1.4 if n <= LEGEND_MAX_CLASSES else 0.7, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1.0, label="chance")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    macro = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    ax.set_title(f"{title}, macro AUC {macro:.3f}")
    ax.grid(alpha=0.3)
    if n <= LEGEND_MAX_CLASSES:
        ax.legend(loc="lower right", fontsize=max(5.0, 9.0 - 0.15 * n), framealpha=0.85)
    return fig


def _class_colors(n: int) -> list[tuple[float, ...]]:
    """Distinct colours for ``n`` classes (tab10/tab20, else a continuous colormap)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    if n <= 20:
        return [cmap(k) for k in range(n)]
    return [cmap(k / max(n - 1, 1)) for k in range(n)]


def classification_report(
    precision: np.ndarray,
    recall: np.ndarray,
    f1: np.ndarray,
    support: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Per-class metrics as a dict in scikit-learn's ``output_dict`` format.

    Keys: each class name -> ``{"precision", "recall", "f1-score", "support"}``, then ``"accuracy"``
    (support-weighted recall), ``"macro avg"`` and ``"weighted avg"``. Plain Python floats/ints (JSON-safe).
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (precision, recall, f1, support)]
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        sizes = [a.size for a in arrays]
        raise ValueError(f"precision, recall, f1, support must have one entry per class, got sizes {sizes}")
    names = _check_names(n, class_names, "classification report")
    p, r, f, s = (np.nan_to_num(a, nan=0.0) for a in arrays)
    total = float(s.sum())
    report: dict[str, Any] = {}
    for k, name in enumerate(names):
        report[name] = {
            "precision": float(p[k]), "recall": float(r[k]), "f1-score": float(f[k]), "support": int(s[k])
        }  # fmt: skip
    weights = s / total if total > 0 else np.full(n, 1.0 / max(n, 1))
    report["accuracy"] = float((r * weights).sum())
    report["macro avg"] = {
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "f1-score": float(f.mean()),
        "support": int(total),
    }
    report["weighted avg"] = {
        "precision": float((p * weights).sum()),
        "recall": float((r * weights).sum()),
        "f1-score": float((f * weights).sum()),
        "support": int(total),
    }
    return report


def _report_rows(report: dict[str, Any]) -> list[str]:
    """Row names of a report: its classes, then the averages."""
    classes = [k for k in report if k != "accuracy" and k not in _AVERAGES]
    return classes + [a for a in _AVERAGES if a in report]


def classification_report_text(report: dict[str, Any], digits: int = 3) -> str:
    """Plain-text table of a ``classification_report`` dict, like scikit-learn's."""
    rows = _report_rows(report)
    width = max([len(r) for r in rows] + [len("weighted avg")])
    header = f"{'':>{width}} " + " ".join(f"{m:>10}" for m in (*_METRICS, "support"))
    lines = [header, ""]
    for row in rows:
        if row == _AVERAGES[0]:
            total = report[row]["support"]
            accuracy = f"{report['accuracy']:>10.{digits}f}"
            lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {accuracy} {total:>10}"]
        vals = " ".join(f"{report[row][m]:>10.{digits}f}" for m in _METRICS)
        lines.append(f"{row:>{width}} {vals} {report[row]['support']:>10}")
    return "\n".join(lines) + "\n"


def classification_report_figure(report: dict[str, Any], title: str = "Classification report") -> Figure:
    """Heatmap of precision / recall / F1 per class (rows) plus the averages; support in the row labels."""
    rows = _report_rows(report)
    values = np.array([[report[r][m] for m in _METRICS] for r in rows], dtype=np.float64)
    n = len(rows)
    height = float(np.clip(1.5 + 0.28 * n, 3.0, 30.0))
    fig = Figure(figsize=(6.0, height), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.08, pad=0.04)
    fs = _fontsize(n)
    ax.set_xticks(range(len(_METRICS)), _METRICS)
    ax.set_yticks(range(n), [f"{r} ({report[r]['support']})" for r in rows], fontsize=fs)
    ax.set_title(f"{title}, accuracy {report.get('accuracy', float('nan')):.3f}")
    ax.axhline(n - len([a for a in _AVERAGES if a in report]) - 0.5, color="black", lw=1.5)
    if n <= 40:
        for i in range(n):
            for j in range(len(_METRICS)):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=fs * 0.9)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix, parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def save_report(report: dict[str, Any], path_stem: str | Path) -> tuple[Path, Path]:
    """Write a ``classification_report`` as ``<stem>.json`` and ``<stem>.txt``; returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, txt_path = stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.txt"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    txt_path.write_text(classification_report_text(report))
    return json_path, txt_path
