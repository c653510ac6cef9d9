#!/usr/bin/env python
"""Train a video classifier: ``python train.py model=vgg16_lstm`` (configs in conf/, see train.yaml)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.train import train

    return run_entry_point(train, cfg)


if __name__ == "__main__":
    from vidxai.pipelines._common import TRAIN_ALIASES, prepare_command_line, quiet_warnings
    from vidxai.pipelines.command_line import check_train

    # settings errors before the heavy imports (torch, Lightning, W&B): one line within about a second
    prepare_command_line(ROOT / "conf", "train", TRAIN_ALIASES, check_train)
    quiet_warnings()
    main()
