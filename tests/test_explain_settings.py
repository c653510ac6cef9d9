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


def test_the_evaluation_group_holds_the_settings_defaults_once(tmp_path: Path) -> None:
    """conf/evaluation/default.yaml spells every setting of EvalSettings.CONFIG_KEYS with the dataclass's default
    (they cannot drift apart); composed into the explain config at the top level, so the old spellings
    (`baseline=blur mprt.final_videos=4 n_boot=50`) still reach the settings."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from vidxai.evaluation import EvalSettings
    from vidxai.pipelines.evaluate import evaluation_settings

    yaml = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf" / "evaluation" / "default.yaml"))
    flat = {f"{k}.{sub}": v for k, value in yaml.items() if isinstance(value, dict) for sub, v in value.items()}
    flat.update({k: v for k, v in yaml.items() if not isinstance(v, dict)})
    assert set(EvalSettings.CONFIG_KEYS) <= set(flat)
    assert set(flat) - set(EvalSettings.CONFIG_KEYS) == {"methods", "save_maps"}  # which methods, what to keep
    defaults = {f.name: f.default for f in fields(EvalSettings)}
    for key, name in EvalSettings.CONFIG_KEYS.items():
        assert flat[key] == defaults[name] and type(flat[key]) is type(defaults[name]), (key, flat[key], defaults[name])
    assert EvalSettings.from_options(yaml) == EvalSettings()

    cfg = compose_cfg("explain", tmp_path, ["ckpt=x.ckpt"])
    assert evaluation_settings(cfg) == EvalSettings(recurrent=evaluation_settings(cfg).recurrent)
    cfg = compose_cfg("explain", tmp_path, ["ckpt=x.ckpt", "baseline=blur", "mprt.final_videos=4", "n_boot=50",
                                            "alpha=0.01", "seed=3"])
    s = evaluation_settings(cfg)
    assert (s.baseline, s.randomisation_videos, s.n_boot, s.alpha, s.seed, s.mprt_videos) == ("blur", 4, 50, 0.01, 3, 1)
