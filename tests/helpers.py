"""Plain test helpers (no fixtures: those live in conftest.py): tiny real videos and tiny Hydra configs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from vidxai.data.synthetic import write_video

#: A tiny synthetic set: 4 classes x 4 groups x 2 clips of 8 frames at 32x32.
TINY = {"num_classes": 4, "groups_per_class": 4, "clips_per_group": 2, "num_frames": 8, "size": (32, 32),
        "fps": 8, "seed": 0}


def make_video(path: Path, num_frames: int = 6, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """Write a small real video whose frame t has mean grey level ~ 20 * t (frames are tellable apart)."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t] = np.clip(20 * t + 20 + rng.integers(0, 8, size=(h, w, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=8)
    return path


def corrupt(path: Path, n_bytes: int = 500, seed: int = 1) -> None:
    """Overwrite ``path`` with random bytes (keeps the extension, breaks the container)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())


# ----------------------------------------------------------------------------- Hydra configs
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
    from vidxai.pipelines._common import EXPLAIN_ALIASES, TRAIN_ALIASES, legacy_overrides

    # the entry points rewrite the old spellings (lstm_eps= -> lrp.lstm_eps=) before Hydra: so does this
    overrides = legacy_overrides(overrides, EXPLAIN_ALIASES if config_name == "explain" else TRAIN_ALIASES)
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


def run_cli(script: str, *args: str) -> int:
    """Run ``python <script> <args>`` (``train.py`` / ``explain.py``) in this process and return its exit status.

    The script runs as ``__main__`` with these arguments, exactly as its command line does, minus a new
    interpreter (5-15 s of imports each): for the cases whose point is what the command says (one ``error:``
    line, exit code 2, the lines a run prints), read with ``capfd``. Cases whose point is the process itself
    (signals, several processes, a crash) start one. The logging, warning filters and Hydra state the run sets
    up are put back afterwards."""
    import logging
    import runpy
    import sys
    import warnings

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    argv = sys.argv
    sys.argv = [str(ROOT / script), *args]
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            runpy.run_path(str(ROOT / script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


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


class LastCkptSteps:
    """A callback that, before each training batch after the first of an epoch, appends the ``global_step``
    stored in ``<dirpath>/last.ckpt`` to the shared list ``STEPS_SEEN`` (step checkpoints under test)."""

    def __new__(cls, dirpath: str):
        import torch
        from pytorch_lightning.callbacks import Callback

        class _Probe(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                last = Path(dirpath) / "last.ckpt"
                if batch_idx > 0 and last.is_file():
                    ckpt = torch.load(last, map_location="cpu", weights_only=True)
                    STEPS_SEEN.append((trainer.global_step, ckpt["global_step"]))

        return _Probe()


STEPS_SEEN: list[tuple[int, int]] = []

#: A lock a thread of the test process holds while DataLoader workers start (tests/test_distributed.py).
HELD = threading.Lock()


class LockingDataset:
    """A dataset reading every item of ``inner`` under :data:`HELD`: what a library does that guards its state
    with a lock (decoders, allocators, logging). A worker forked while another thread of its parent holds the
    lock inherits it held, with no thread left to release it, and waits forever; a spawned worker imports
    this module afresh and takes a free lock."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):  # noqa: ANN204
        with HELD:
            return self.inner[index]


#: vidxai's composites named after zennit's, and the zennit class each equals (default parameters).
ZENNIT_NAMED = {
    "epsilon_gamma_box": "EpsilonGammaBox",
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
}


def _zennit_named(rule: str, canonizers: list):  # noqa: ANN202
    """zennit's own named composite; the box bounds are those of the default (ImageNet) normalisation."""
    import torch
    from zennit import composites

    from vidxai.xai import box_bounds

    cls = getattr(composites, ZENNIT_NAMED[rule])
    if rule != "epsilon_gamma_box":
        return cls(canonizers=canonizers)
    bounds = box_bounds()
    low = torch.tensor([bounds["low"]], dtype=torch.float64)  # (1, C): zennit appends the spatial dims
    high = torch.tensor([bounds["high"]], dtype=torch.float64)
    return cls(low=low, high=high, canonizers=canonizers)


#: vidxai's rules built from zennit's single rules here: the conv/linear rule of each (docs/design.md, "LRP rules").
ZENNIT_LAYER_RULES = ("z", "epsilon", "gamma", "alpha_beta", "preset_a_flat", "preset_b_flat")
#: every registered rule with a zennit oracle; a rule registered later is checked by the property tests over every
#: rule (tests/test_xai_rules.py) and gets an oracle here when zennit has one.
ZENNIT_ORACLES = (*ZENNIT_LAYER_RULES, *ZENNIT_NAMED)


def zennit_composite(rule: str, residual: bool = False, merge_batch_norm: bool = False):  # noqa: ANN201
    """The zennit 0.5.1 composite equal to vidxai's ``rule`` (docs/design.md, "LRP rules"): the oracle of the CNN rules.

    ``residual`` maps zennit's ``Sum`` layer to its ``Norm`` rule (vidxai's proportional residual rule);
    ``merge_batch_norm`` folds BatchNorm with zennit's own canonizer. ``rule`` must be one of
    :data:`ZENNIT_ORACLES`.
    """
    if rule not in ZENNIT_ORACLES:
        raise KeyError(f"no zennit oracle for rule {rule!r}; the oracles: {ZENNIT_ORACLES}")
    from torch import nn
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, ZPlus
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution
    from zennit.types import Linear as AnyLinear

    canonizers = [SequentialMergeBatchNorm()] if merge_batch_norm else []
    if rule in ZENNIT_NAMED:  # zennit's own composites (their layer maps include Sum -> Norm)
        return _zennit_named(rule, canonizers)
    base = [(Activation, Pass()), (AvgPool, Norm()), (BatchNorm, Pass())]
    if residual:
        base.append((Sum, Norm()))
    conv = {
        "z": Epsilon(1e-9),
        "epsilon": Epsilon(0.1),
        "gamma": Gamma(0.25),
        "alpha_beta": AlphaBeta(2.0, 1.0),
        "preset_a_flat": ZPlus(),
        "preset_b_flat": AlphaBeta(2.0, 1.0),
    }[rule]
    linear = Epsilon(1e-9) if rule == "z" else Epsilon(0.1)
    layer_map = base + [(Convolution, conv), (nn.Linear, linear)]
    if rule.endswith("_flat"):
        return SpecialFirstLayerMapComposite(layer_map, [(AnyLinear, Flat())], canonizers=canonizers)
    return LayerMapComposite(layer_map, canonizers=canonizers)


# ------------------------------------------------------------------ zennit's canonical form of torchvision blocks
def _zennit_sum():  # noqa: ANN202
    from zennit.layer import Sum

    return Sum()


class ZennitBlock(nn.Module):
    """A torchvision ``BasicBlock`` in zennit's canonical form: flat branches, ``Sum`` of the stacked outputs."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()

        def flat(module: nn.Module) -> list[nn.Module]:
            if isinstance(module, nn.Sequential):
                return [leaf for child in module for leaf in flat(child)]
            return [nn.ReLU() if isinstance(module, nn.ReLU) else module]  # no in-place ReLU under hooks

        self.branch = nn.Sequential(*flat(block.conv1), *flat(block.conv2))
        self.shortcut = nn.Sequential(*flat(block.downsample)) if block.downsample is not None else nn.Identity()
        self.sum = _zennit_sum()
        self.relu = nn.ReLU()

    def forward(self, x):  # noqa: ANN001, ANN201
        import torch

        return self.relu(self.sum(torch.stack([self.branch(x), self.shortcut(x)], dim=-1)))


def zennit_form(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every torchvision ``BasicBlock`` in zennit's form (its ``Sum`` layer) and no
    in-place ReLU (zennit's hooks need the inputs kept; other modules keep their own forward, their ReLUs are
    set to not in-place)."""
    from torchvision.models.video.resnet import BasicBlock

    if isinstance(module, BasicBlock):
        return ZennitBlock(module)
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*[zennit_form(child) for child in module])
    for m in module.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return module


def randomise_batch_norm(net: nn.Module, shifts: bool = True, eps: float | None = None) -> None:
    """Non-trivial BN statistics and scales (as after training); ``shifts=False``: BN adds nothing."""
    import torch

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1) if shifts else m.bias.zero_()
                m.running_mean.normal_(0, 0.1) if shifts else m.running_mean.zero_()
                if eps is not None:
                    m.eps = eps
