"""Compose the real Hydra configs for tiny, fast runs (shared by the pipeline tests)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# a tiny embedded data set: 2 classes x 4 groups x 1 clip, 8-frame 32x32 videos -> 4-frame 32x32 clips
TINY_DATA = [
    "data.synthetic.num_classes=2",
    "data.synthetic.groups_per_class=5",
    "data.synthetic.clips_per_group=1",
    "data.synthetic.num_frames=8",
    "data.synthetic.size=[32,32]",
    "data.num_frames=4",
    "data.size=[32,32]",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.persistent_workers=false",
]

TINY_TRAIN = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.explanation.every_n_epochs=1",
    "callbacks.explanation.num_clips=2",
]


def compose_cfg(config_name: str, tmp: Path, overrides: list[str], data_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with run folders under ``tmp`` (like a CLI run would)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp)
        cfg.paths.output_dir = str(tmp / "run")
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
        cfg.hydra.runtime.output_dir = str(tmp / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


class InterruptAt:
    """A callback that simulates Ctrl-C at the end of the first training batch of ``epoch``."""

    def __new__(cls, epoch: int = 1):
        from pytorch_lightning.callbacks import Callback

        class _Interrupt(Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
                if trainer.current_epoch == epoch:
                    raise KeyboardInterrupt

        return _Interrupt()


class RankReport:
    """A callback that writes what each process saw to ``<run folder>/rank<r>.json``: the epoch-end metrics,
    whether the explanation callback ran here, and the W&B group (for subprocess runs: DDP, sweeps)."""

    def __new__(cls):
        import json

        import torch
        from pytorch_lightning.callbacks import Callback

        class _RankReport(Callback):
            def __init__(self) -> None:
                self.epochs: list[dict[str, float]] = []

            def on_train_epoch_end(self, trainer, pl_module) -> None:  # after this epoch's validation
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                           if torch.is_tensor(v) and v.numel() == 1}
                self.epochs.append(metrics)

            def on_fit_end(self, trainer, pl_module) -> None:
                import wandb

                explained = [cb.last_duration_s is not None for cb in trainer.callbacks
                             if type(cb).__name__ == "ExplanationCallback"]
                report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "epochs": self.epochs,
                          "explained": any(explained),
                          "wandb_group": wandb.run.group if wandb.run is not None else None,
                          "wandb_id": wandb.run.id if wandb.run is not None else None}
                path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.json"
                path.write_text(json.dumps(report))

        return _RankReport()
