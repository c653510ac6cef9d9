"""Cluster sweeps: submitit launcher configs, and an optuna sweep of 2 trials run end to end through
hydra/launcher=submitit_local (each trial its own process and its own W&B run, grouped by sweep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import CONF, ROOT, TINY_DATA
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e .[cluster]")


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_settings_from_the_command_line(launcher: str) -> None:
    GlobalHydra.instance().clear()
    overrides = [f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                 "hydra.launcher.timeout_min=720", "trainer=ddp"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launch = cfg.hydra.launcher
    assert launch._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launch.partition, launch.gpus_per_node, launch.timeout_min) == ("gpu", 4, 720)
    if launcher == "slurm":  # our preset: one task per GPU, as Lightning's DDP on SLURM expects
        assert launch.tasks_per_node == 4 and launch.signal_delay_s == 120


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_through_submitit_local(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    args = [
        "-m", "hparams_search=optuna", "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA,
        "model=convlstm", "model.net.hidden_channels=[4]", "model.net.stem_channels=4", "trainer=cpu",
        "trainer.max_epochs=1", "test=false", "logger=wandb", "callbacks.explanation.every_n_epochs=0",
        "callbacks.rich_progress_bar=null", "+callbacks.rank_report._target_=helpers.RankReport",
    ]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and 0.0 <= result["best_value"] <= 1.0
    assert {"model.optimizer.lr", "model.optimizer.weight_decay"} <= set(result["best_params"])
    submitted = sorted(p.name for p in (sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(submitted) == 2, submitted  # two submitit jobs, each finished with a result

    reports = [json.loads((sweep / str(j) / "rank0.json").read_text()) for j in (0, 1)]
    lrs = [r["epochs"][-1]["lr-AdamW"] for r in reports]
    assert lrs[0] != lrs[1]  # two different trials
    assert all(len(list((sweep / str(j) / "wandb").glob("offline-run-*"))) == 1 for j in (0, 1))
    ids = {r["wandb_id"] for r in reports}
    assert len(ids) == 2 and None not in ids  # one W&B run per job ...
    assert {r["wandb_group"] for r in reports} == {"train-sweep"}  # ... grouped by sweep


def test_wandb_group_of_a_single_run_is_the_task_name(tmp_path: Path) -> None:
    from helpers import compose_cfg

    from vidxai.pipelines._common import sweep_group

    cfg = compose_cfg("train", tmp_path, [])
    assert cfg.logger.wandb.group is None
    sweep_group(cfg)
    assert cfg.logger.wandb.group == "train"
    explicit = compose_cfg("train", tmp_path, ["logger.wandb.group=mine"])
    sweep_group(explicit)
    assert explicit.logger.wandb.group == "mine"
