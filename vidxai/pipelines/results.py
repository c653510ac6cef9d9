"""``make results``: train every recipe, evaluate and profile its explanations, write ``docs/results.md``.

Recipes are discovered from the config files, so a new model or events recipe is picked up without editing
this module: every ``conf/model/<name>.yaml`` on the default data (``model=<name>``) and every
``conf/experiment/events_*.yaml`` (``experiment=<name>``). For each recipe, in
``outputs/results/<set>/<recipe>/``:

* ``train/``: ``train.py <recipe> logger=csv`` (an interrupted run resumes with ``ckpt_path=last``);
* ``evaluate/``: ``explain.py ckpt=<best> evaluate=true split=test``;
* ``profile/``: ``explain.py ckpt=<best> split=test`` (the dataset's temporal relevance profile).

A step whose ``done.json`` exists is reused, so a re-run does only what is missing; a failed step is reported
in the document and the next recipe goes on. ``<set>`` is ``full`` for the plain command and
``custom-<hash>`` when extra overrides are given, so a reduced run never stands in for a full one.

    python -m vidxai.pipelines.results [--only PATTERN] [--steps train,evaluate,profile] [--report-only]
                                       [train overrides] [explain.<key>=<v> ...]

``explain.limit=4`` passes ``limit=4`` to both explain.py runs; every other ``key=value`` goes to train.py.
The page shows every recipe (those ``--only`` leaves out with the steps they already have), and a full run
also replaces the README's generated summary (between its ``results`` markers; ``--no-readme``: not).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidxai.errors import ConfigError, UserError
from vidxai.pipelines.results_report import (
    README_BEGIN,
    README_END,
    RunSummary,
    readme_block,
    summarise_run,
    update_readme,
    write_report,
)

log = logging.getLogger("vidxai.results")

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("train", "evaluate", "profile")


@dataclass(frozen=True)
class Recipe:
    """One training recipe: a name, its ``train.py`` overrides and the group it belongs to in the report."""

    name: str
    overrides: tuple[str, ...]
    group: str


@dataclass
class Plan:
    """What one ``make results`` does: recipes, extra overrides, where runs and the document go."""

    recipes: list[Recipe]
    train_args: list[str] = field(default_factory=list)
    explain_args: list[str] = field(default_factory=list)
    out_root: Path = ROOT / "outputs" / "results"
    doc: Path = ROOT / "docs" / "results.md"
    timeout: float = 3600.0
    # False: run nothing, write the document from the steps already done (the rest reported as not run)
    execute: bool = True
    # the steps that may run (e.g. ("train",): train every recipe now, evaluate later); the others are reused
    # when done and reported as not run otherwise
    steps: tuple[str, ...] = STEPS
    # every recipe the page shows (default: ``recipes``); those not in ``recipes`` are only read, never run
    all_recipes: list[Recipe] = field(default_factory=list)
    # the README whose generated results summary is replaced (full runs only); None: leave it alone
    readme: Path | None = None

    @property
    def set_name(self) -> str:
        extra = sorted(self.train_args) + sorted(f"explain.{a}" for a in self.explain_args)
        if not extra:
            return "full"
        return "custom-" + hashlib.sha1(" ".join(extra).encode()).hexdigest()[:8]


def discover(conf_dir: Path) -> list[Recipe]:
    """Default-data runs of every model config, then every events experiment, in file-name order."""
    recipes = [Recipe(f"default_{p.stem}", (f"model={p.stem}",), "default data (`data=synthetic`)")
               for p in sorted((conf_dir / "model").glob("*.yaml"))]
    recipes += [Recipe(p.stem, (f"experiment={p.stem}",), "events data (`data=synthetic_events`)")
                for p in sorted((conf_dir / "experiment").glob("events_*.yaml"))]
    return recipes


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """``explain.<key>=<value>`` -> explain.py's ``<key>=<value>``; everything else goes to train.py."""
    train, explain = [], []
    for arg in args:
        if arg.startswith("explain."):
            explain.append(arg[len("explain."):])
        else:
            train.append(arg)
    return train, explain


def step_commands(recipe: Recipe, run_dir: Path, plan: Plan) -> dict[str, list[str]]:
    """The command line of each step (the training resumes from ``last.ckpt`` when a killed run left one)."""
    py = sys.executable
    train = [py, str(ROOT / "train.py"), *recipe.overrides, *plan.train_args, "logger=csv",
             f"hydra.run.dir={run_dir / 'train'}"]
    if (run_dir / "train" / "checkpoints" / "last.ckpt").is_file():
        train.append("ckpt_path=last")
    ckpt = run_dir / "train" / "checkpoints" / "best.ckpt"
    explain = [py, str(ROOT / "explain.py"), f"ckpt={ckpt}", "split=test", "logger=none", *plan.explain_args]
    return {"train": train,
            "evaluate": [*explain, "evaluate=true", "methods=all", f"hydra.run.dir={run_dir / 'evaluate'}"],
            "profile": [*explain, f"hydra.run.dir={run_dir / 'profile'}"]}


def run_step(name: str, command: list[str], step_dir: Path, timeout: float) -> dict[str, Any]:
    """Run one step unless its ``done.json`` exists; returns that record (seconds, command, ok, error)."""
    done = step_dir / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        log.info("%s: reused (%s, %.0f s)", step_dir, "ok" if record.get("ok") else "failed", record["seconds"])
        return {**record, "reused": True}
    step_dir.mkdir(parents=True, exist_ok=True)
    log.info("%s: %s", name, " ".join(command[1:]))
    load = round(os.getloadavg()[0], 1)
    start = time.perf_counter()
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "WANDB_MODE": "disabled"}
    with open(step_dir.parent / f"{name}.log", "w") as out:
        try:
            proc = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            error = None if proc.returncode == 0 else f"exit status {proc.returncode} (see {name}.log)"
        except subprocess.TimeoutExpired:
            error = f"stopped after {timeout:.0f} s (results --timeout)"
    record = {"seconds": round(time.perf_counter() - start, 1), "command": " ".join(command[1:]),
              "ok": error is None, "error": error, "load": load, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if error is None:  # a failed step is tried again by the next run
        done.write_text(json.dumps(record, indent=2) + "\n")
    else:
        log.error("%s failed: %s", step_dir, error)
    return record


def run_recipe(recipe: Recipe, plan: Plan) -> RunSummary:
    """Train, evaluate and profile one recipe (each step skipped when done), then summarise its folder."""
    run_dir = plan.out_root / plan.set_name / recipe.name
    records: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        if step != "train" and not (run_dir / "train" / "checkpoints" / "best.ckpt").exists():
            records[step] = {"ok": False, "error": "no trained checkpoint", "seconds": 0.0}
            continue
        if not (plan.execute and step in plan.steps) and not (run_dir / step / "done.json").is_file():
            why = "--report-only" if not plan.execute else f"--steps {','.join(plan.steps)}"
            records[step] = {"ok": False, "error": f"not run ({why})", "seconds": 0.0}
            continue
        commands = step_commands(recipe, run_dir, plan)
        records[step] = run_step(step, commands[step], run_dir / step, plan.timeout)
    return summarise_run(recipe.name, recipe.group, " ".join(recipe.overrides), run_dir, records)


def run(plan: Plan) -> Path:
    """Every recipe of the plan, then the document (figures copied next to it)."""
    if not plan.recipes:
        raise ConfigError("results: no recipe matches; the recipes are conf/model/*.yaml (default_<model>) and "
                          "conf/experiment/events_*.yaml: check --only")
    selected = {r.name for r in plan.recipes}
    # the page shows every recipe: those --only left out with the steps they already have (nothing is run)
    others = replace(plan, execute=False)
    summaries = [run_recipe(r, plan if r.name in selected else others) for r in plan.all_recipes or plan.recipes]
    fig_dir = plan.doc.parent / "results"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)  # generated: figures of recipes no longer run do not linger
    write_report(summaries, plan.doc, fig_dir, extra=plan.train_args + [f"explain.{a}" for a in plan.explain_args],
                 run_root=plan.out_root / plan.set_name)
    log.info("wrote %s (figures in %s)", plan.doc, fig_dir)
    if plan.readme is not None and plan.set_name == "full":  # a reduced run never stands in for the recipes
        link = os.path.relpath(plan.doc, plan.readme.parent)
        if update_readme(plan.readme, readme_block(summaries, link)):
            log.info("updated the results summary in %s", plan.readme)
        else:
            log.warning("%s has no results markers (%s ... %s): its summary was not updated", plan.readme,
                        README_BEGIN, README_END)
    return plan.doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidxai.pipelines.results", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="*", help="recipe names to run (fnmatch pattern, e.g. 'events_*')")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one step may take")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the document from the steps already done")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="comma-separated steps that may run (train, evaluate, profile); e.g. --steps train "
                             "trains every recipe now and leaves the rest for a later run")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="README whose generated results summary (between its results markers) is replaced")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("overrides", nargs="*", help="train.py overrides; explain.<key>=<v> goes to explain.py")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[results] %(message)s")
    train_args, explain_args = split_args(args.overrides)
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    if unknown := [s for s in steps if s not in STEPS]:
        print(f"error: results --steps: unknown step {unknown[0]!r}; use a comma-separated subset of "
              f"{','.join(STEPS)}", file=sys.stderr)
        return 2
    every = discover(ROOT / "conf")
    recipes = [r for r in every if fnmatch.fnmatch(r.name, args.only)]
    plan = Plan(recipes, train_args, explain_args, args.out, args.doc, args.timeout, not args.report_only, steps,
                all_recipes=every if recipes else [], readme=None if args.no_readme else args.readme)
    try:
        run(plan)
    except Exception as exc:  # a UserError is one line; anything else keeps its traceback

        if isinstance(exc, UserError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
