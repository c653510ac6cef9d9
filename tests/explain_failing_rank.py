"""``python tests/explain_failing_rank.py <explain.py arguments>``: explain.py, except that the evaluation fails on
rank 1's first video (as a corrupt clip would). Lightning re-executes this script for rank 1, so the failure
happens there."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def _fail_on_rank_one() -> None:
    from vidxai.evaluation import runner

    add = runner.VideoScorer.add

    def failing_add(self, key, clip):  # noqa: ANN001, ANN202
        if os.environ.get("LOCAL_RANK") == "1":
            raise RuntimeError(f"corrupt clip {key} (test failure on rank 1)")
        return add(self, key, clip)

    runner.VideoScorer.add = failing_add


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="explain")
def main(cfg: DictConfig) -> None:
    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.explain import explain_entry

    _fail_on_rank_one()
    run_entry_point(explain_entry, cfg)


if __name__ == "__main__":
    from vidxai.pipelines._common import EXPLAIN_ALIASES, prepare_command_line, quiet_warnings

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES)
    quiet_warnings()
    main()
