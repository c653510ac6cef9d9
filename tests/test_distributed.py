"""A real 2-process DDP run on the CPU (trainer=ddp_cpu), launched like a user would: python train.py ..."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TINY_DATA


def _train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    env.pop("LOCAL_RANK", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ddp_cpu_two_processes_sync_metrics_and_write_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _train(
        "trainer=ddp_cpu", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", *TINY_DATA,
        "data.batch_size=2", "model=convlstm", "model.net.hidden_channels=[4]", "model.net.stem_channels=4",
        # the feature cache too: each rank computes its share of the clips, then both read all of them
        "model.net.freeze_encoder=true", "data.feature_cache=true",
        "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.strategy.timeout.seconds=90",
        "callbacks.explanation.every_n_epochs=2", "callbacks.explanation.num_clips=1",
        "callbacks.rich_progress_bar=null", "+callbacks.rank_report._target_=helpers.RankReport",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    # both ranks ran the same epochs and saw the same (synchronised) metrics
    reports = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert len(reports[0]["epochs"]) == len(reports[1]["epochs"]) == 2
    for e0, e1 in zip(reports[0]["epochs"], reports[1]["epochs"]):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"):
            assert abs(e0[key] - e1[key]) < 1e-6, (key, e0[key], e1[key])

    # one value per epoch in the CSV (written by rank zero)
    with open(run / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/acc")) == [0, 1]
    assert sorted(int(r["epoch"]) for r in rows if r.get("train/loss")) == [0, 1]
    assert len([r for r in rows if r.get("test/acc")]) == 1

    # one set of checkpoints, one W&B run, explanations and test figures from rank zero only
    ckpts = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt"))
    assert {Path(c).name for c in ckpts} >= {"best.ckpt", "last.ckpt"} and len(ckpts) == 3, ckpts
    assert all(c.startswith("run/checkpoints/") for c in ckpts), ckpts
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1
    assert reports[0]["explained"] and not reports[1]["explained"]
    assert list((run / "explanations").rglob("*heatmaps.png"))
    assert (run / "figures" / "confusion_matrix.png").is_file()
    rank1_log = (run / "train_ddp_process_1.log").read_text()
    assert "GLOBAL_RANK: 1" in rank1_log and "figures" not in rank1_log
    assert "figures" in (run / "train.log").read_text()
    cached = list((tmp_path / "data" / ".cache" / "features").glob("*/*.npy"))
    computed = [line for log in ("train.log", "train_ddp_process_1.log")
                for line in (run / log).read_text().splitlines() if "clip(s) computed by rank" in line]
    assert len(computed) == 4  # train and val, on each rank
    assert sum(int(line.split("feature cache: ")[1].split()[0]) for line in computed) == len(cached) > 0


def test_ddp_launcher_inside_a_local_multirun_is_refused(tmp_path: Path) -> None:
    import hydra
    from helpers import compose_cfg
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from vidxai.errors import UserError
    from vidxai.pipelines._common import check_launch

    cfg = compose_cfg("train", tmp_path, ["trainer=ddp_cpu", "logger=none", "callbacks=none"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    check_launch(trainer)  # a single run is fine
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(UserError, match="hydra/launcher=slurm"):
            check_launch(trainer)
    finally:
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
