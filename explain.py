#!/usr/bin/env python
"""Explain a trained video classifier with LRP: ``python explain.py ckpt=path/to/best.ckpt rule=alpha_beta``.

See conf/explain.yaml for every option (mode=, video=, split=, index=, class=, target=, compare=, limit=) and
conf/lrp/ for the explainer settings.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


def _resume_in_place(argv: list[str]) -> None:
    """`resume=RUN` continues the run in its own folder: Hydra's log and config go there too (unless
    `hydra.run.dir=` says otherwise)."""
    resume = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("resume=")), "")
    if resume not in ("", "null") and not any(a.startswith("hydra.run.dir=") for a in argv[1:]):
        argv.append(f"hydra.run.dir={resume}")


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.explain import explain_entry

    run_entry_point(explain_entry, cfg)


if __name__ == "__main__":
    from vidxai.pipelines._common import EXPLAIN_ALIASES, prepare_command_line, quiet_warnings
    from vidxai.pipelines.command_line import check_explain

    _resume_in_place(sys.argv)
    # every settings error before the heavy imports (torch, Lightning, W&B): one line within about a second
    prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES, check_explain)
    quiet_warnings()
    main()
