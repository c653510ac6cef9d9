"""Explainer settings from conf/explain.yaml reach VideoLRP (on the session's tiny trained run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import compose_cfg

from vidxai.pipelines.explain import explain


def test_lstm_eps_and_bias_factor_reach_the_explainer(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    overrides = [f"ckpt={ckpt}", "logger=csv", "split=val", "index=0", "lstm_eps=0.01", "bias_factor=1"]
    explain(compose_cfg("explain", tmp_path, overrides, data_dir=data_dir))
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    recurrent = summary["recurrent_params"]
    assert (recurrent["lstm_eps"], recurrent["bias_factor"]) == (0.01, 1.0)
    saved = np.load(out / "relevance.npz")
    # bias_factor=1: head and LSTM conserve relevance, so the per-frame features hold the target logit up to
    # the small share of the (zero) initial states, which relevance.npz does not store
    logit = float(saved["logits"][int(saved["target"])])
    assert abs(float(saved["feature"].sum()) - logit) <= 0.05 * abs(logit) + 1e-3
