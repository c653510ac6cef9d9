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


class KillAt:
    """A callback that SIGKILLs its own process after ``batch`` training batches of ``epoch`` (a hard kill:
    no handler, no on-exception checkpoint), as a pre-empted or out-of-memory cluster job dies."""

    def __new__(cls, epoch: int = 1, batch: int = 1):
        import os
        import signal

        from pytorch_lightning.callbacks import Callback

        class _Kill(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch_obj, batch_idx) -> None:
                if trainer.current_epoch == epoch and batch_idx + 1 >= batch:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


class RecordBatches:
    """A callback appending ``epoch batch indices video-checksum weight-checksum`` per training batch to ``path``."""

    def __new__(cls, path: str):
        from pytorch_lightning.callbacks import Callback

        class _Record(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                w = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
                idx = batch["index"].tolist()
                with open(path, "a") as fh:
                    fh.write(f"{trainer.current_epoch} {batch_idx} {idx} {float(batch['video'].double().sum()):.6f} "
                             f"{w:.10f}\n")

        return _Record()
