"""``python tests/explain_failing_rank.py <explain.py arguments>``: explain.py, except that the evaluation fails on
rank 1's first video (as a corrupt clip would). Lightning re-executes this script for rank 1, so the failure
happens there."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fail_on_rank_one() -> None:
    from vidxai.evaluation import runner

    add = runner.VideoScorer.add

    def failing_add(self, key, clip):  # noqa: ANN001, ANN202
        if os.environ.get("LOCAL_RANK") == "1":
            raise RuntimeError(f"corrupt clip {key} (test failure on rank 1)")
        return add(self, key, clip)

    runner.VideoScorer.add = failing_add


if __name__ == "__main__":
    _fail_on_rank_one()
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(ROOT / "explain.py"), run_name="__main__")
