"""Tests of vidxai.viz.metrics: confusion matrix, ROC and classification-report figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import classification_report as sk_report
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, roc_curve

from vidxai.viz.metrics import (
    classification_report,
    classification_report_figure,
    classification_report_text,
    confusion_matrix_figure,
    roc_figure,
    save_figure,
    save_report,
)


def predictions(num_classes: int, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and noisy probabilities that mostly favour the right class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    scores = rng.normal(size=(n, num_classes))
    scores[np.arange(n), y] += 2.0
    probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    return y, probs


def saved_size(fig: Figure, path: Path, dpi: int = 100) -> tuple[int, int]:
    save_figure(fig, path, dpi=dpi)
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("num_classes", [11, 101])
def test_figures_render_and_save(tmp_path: Path, num_classes: int) -> None:
    names = [f"class_{k}" for k in range(num_classes)]
    y, probs = predictions(num_classes, n=3 * num_classes * 4)
    pred = probs.argmax(1)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)

    fig = confusion_matrix_figure(cm, names)
    width, height = fig.get_size_inches() * 100
    assert saved_size(fig, tmp_path / "sub" / "cm.png") == (round(width), round(height))
    annotated = [t for t in fig.axes[0].texts]
    assert (len(annotated) == num_classes**2) if num_classes <= 20 else not annotated

    curves = [roc_curve(y == k, probs[:, k]) for k in range(num_classes)]
    aucs = [roc_auc_score(y == k, probs[:, k]) for k in range(num_classes)]
    fig = roc_figure([c[0] for c in curves], [c[1] for c in curves], aucs, names)
    assert len(fig.axes[0].lines) == num_classes + 1  # one per class + chance diagonal
    assert f"{np.mean(aucs):.3f}" in fig.axes[0].get_title()
    legend = fig.axes[0].get_legend()
    has_legend = legend is not None and f"AUC {aucs[0]:.3f}" in legend.get_texts()[0].get_text()
    assert has_legend == (num_classes <= 25)
    w, h = saved_size(fig, tmp_path / "roc.png")
    assert (w, h) == tuple(round(v) for v in fig.get_size_inches() * 100)

    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(num_classes), zero_division=0)
    report = classification_report(p, r, f, s, names)
    fig = classification_report_figure(report)
    assert fig.axes[0].images[0].get_array().shape == (num_classes + 2, 3)
    assert min(saved_size(fig, tmp_path / "report.png")) >= 300


def test_classification_report_matches_sklearn() -> None:
    names = ["a", "b", "c", "d"]
    y, probs = predictions(4, n=50, seed=1)
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    ours = classification_report(p, r, f, s, names)
    theirs = sk_report(y, pred, target_names=names, output_dict=True, zero_division=0)
    assert list(ours) == list(theirs)
    for key in names + ["macro avg", "weighted avg"]:
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[key][metric] == pytest.approx(theirs[key][metric]), (key, metric)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    text = classification_report_text(ours)
    assert "weighted avg" in text and f"{ours['accuracy']:.3f}" in text
    json.dumps(ours)  # plain python types only


def test_save_report(tmp_path: Path) -> None:
    report = classification_report([1.0, 0.5], [0.5, 1.0], [0.66, 0.66], [2, 1], ["x", "y.z"])
    json_path, txt_path = save_report(report, tmp_path / "out" / "classification_report")
    assert json.loads(json_path.read_text())["y.z"]["support"] == 1
    assert txt_path.name == "classification_report.txt" and "y.z" in txt_path.read_text()


def test_confusion_matrix_normalisation_and_counts() -> None:
    cm = np.array([[3, 1], [0, 0]])
    fig = confusion_matrix_figure(cm, ["a", "b"], normalize=True)
    shown = fig.axes[0].images[0].get_array()
    assert np.allclose(shown, [[0.75, 0.25], [0.0, 0.0]])  # empty row stays 0, no NaN
    texts = [t.get_text() for t in confusion_matrix_figure(cm, ["a", "b"], normalize=False).axes[0].texts]
    assert texts == ["3", "1", "0", "0"]


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="square"):
        confusion_matrix_figure(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="class_names has 1"):
        confusion_matrix_figure(np.zeros((2, 2)), ["a"])
    with pytest.raises(ValueError, match="one fpr, tpr and auc per class"):
        roc_figure([np.zeros(2)], [], [0.5], ["a"])
    with pytest.raises(ValueError, match="one entry per class"):
        classification_report([1.0], [1.0, 0.0], [1.0], [1], ["a"])
