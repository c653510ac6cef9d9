#!/usr/bin/env python
"""Train a video classifier: ``python train.py model=vgg16_lstm`` (configs in conf/, see train.yaml)."""

import os
import sys
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
    from vidxai.pipelines._common import check_group_overrides, quiet_warnings

    check_group_overrides(sys.argv[1:], ROOT / "conf")
    quiet_warnings()
    main()
