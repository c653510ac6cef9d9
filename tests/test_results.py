"""`make results`: recipe discovery, step reuse and the document written from (fake) run folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vidxai.errors import ConfigError
from vidxai.pipelines import results
from vidxai.pipelines.results_report import evaluation_table, summarise_run, write_report

ROOT = Path(__file__).resolve().parents[1]

FAKE_EVALUATION = {
    "settings": {"videos": 2},
    "methods": {
        "epsilon": {"frame_morf": 1.5, "temporal_accuracy": 0.96, "sem": {"frame_morf": 0.1}, "time_s": 2.0,
                    "mprt_spearman": [0.5, 0.1]},
        "occlusion": {"frame_morf": 1.25, "temporal_accuracy": None, "time_s": 3.0},
        "broken": {"error": "RuntimeError: no gradient", "skipped": True},
    },
}


def _fake_run(run: Path, with_md: bool) -> None:
    (run / "train" / "csv").mkdir(parents=True)
    (run / "train" / "csv" / "metrics.csv").write_text(
        "epoch,step,val/acc,val/acc_best,test/acc,test/f1\n0,4,0.5,0.5,,\n1,9,1.0,1.0,,\n1,10,,,0.9583,0.9571\n")
    ckpts = run / "train" / "checkpoints"
    ckpts.mkdir()
    (ckpts / "epoch_001-acc_1.000.ckpt").write_bytes(b"x")
    (ckpts / "best.ckpt").symlink_to("epoch_001-acc_1.000.ckpt")
    (run / "evaluate").mkdir()
    (run / "evaluate" / "evaluation.json").write_text(json.dumps(FAKE_EVALUATION))
    (run / "evaluate" / "evaluation.png").write_bytes(b"\x89PNG fake")
    if with_md:
        md = "# Verdict\n| method | frame MoRF |\n|---|---|\n| eps | 1.5 |\n"
        (run / "evaluate" / "evaluation.md").write_text(md)
    (run / "profile").mkdir()
    summary = {k: {"mean": m, "lo": m - 0.1, "hi": m + 0.1, "uniform": u}
               for k, m, u in (("first_half", 0.6, 0.5), ("second_half", 0.4, 0.5), ("last_frame", 0.2, 0.125))}
    (run / "profile" / "profile.json").write_text(json.dumps({"videos": 2, "rule": "epsilon", "accuracy": 1.0,
                                                               "overall": {"summary": summary}}))
    (run / "profile" / "profile.png").write_bytes(b"\x89PNG fake")


def test_table_from_evaluation_json_alone() -> None:
    table = evaluation_table(FAKE_EVALUATION)
    lines = table.splitlines()
    assert lines[0] == "| method | frame_morf | temporal_accuracy | time_s |"  # scalar numbers only (no sem, lists)
    assert "| epsilon | 1.500 | 0.960 | 2.000 |" in lines
    assert "| occlusion | 1.250 | – | 3.000 |" in lines
    assert "| broken | failed: RuntimeError: no gradient |" in lines
    assert evaluation_table({"settings": {}}) == "_evaluation.json has no methods._"


@pytest.mark.parametrize("with_md", [False, True])
def test_report_from_fake_runs(tmp_path: Path, with_md: bool) -> None:
    run = tmp_path / "outputs" / "r" / "events_x"
    _fake_run(run, with_md)
    steps = {"train": {"ok": True, "seconds": 100.0, "load": 3.0}, "evaluate": {"ok": True, "seconds": 50.0,
             "load": 2.0}, "profile": {"ok": False, "seconds": 1.0, "error": "exit status 1 (see profile.log)"}}
    s = summarise_run("events_x", "events data", "experiment=events_x", run, steps)
    assert s.metrics["test/acc"] == pytest.approx(0.9583) and s.epochs == 2
    assert s.best_checkpoint == "epoch_001-acc_1.000.ckpt"
    doc = write_report([s], tmp_path / "docs" / "results.md", tmp_path / "docs" / "results", extra=["limit=4"])
    text = doc.read_text()
    assert "| events_x (`experiment=events_x`) | events data | 0.96 | 0.96 | 1.00 | 2 | epoch_001-acc_1.000.ckpt " \
           "| 100 | 50 | – | profile: exit status 1 (see profile.log) |" in text
    assert "2.5 min" in text and "load average at the steps' starts 2.0-3.0" in text
    assert "Reduced or changed run" in text and "`limit=4`" in text
    assert "| first half | 0.600 | [0.500, 0.700] | 0.500 |" in text
    assert (tmp_path / "docs" / "results" / "events_x" / "evaluation.png").read_bytes() == b"\x89PNG fake"
    assert "![evaluation](results/events_x/evaluation.png)" in text
    if with_md:  # the evaluation's own Markdown is used as it is, its headings below the recipe's
        assert "### Verdict" in text and "| eps | 1.5 |" in text and "| epsilon | 1.500" not in text
    else:
        assert "| epsilon | 1.500 | 0.960 | 2.000 |" in text


def test_recipes_are_discovered_from_the_config_files(tmp_path: Path) -> None:
    for rel in ("model/b.yaml", "model/a.yaml", "experiment/events_a.yaml", "experiment/paper_a.yaml"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    found = [(r.name, r.overrides) for r in results.discover(tmp_path)]
    assert found == [("default_a", ("model=a",)), ("default_b", ("model=b",)),
                     ("events_a", ("experiment=events_a",))]
    shipped = {r.name for r in results.discover(ROOT / "conf")}
    assert {"default_vgg16_lstm", "events_vgg16_lstm", "events_convlstm", "events_r2plus1d"} <= shipped


def test_overrides_split_and_set_name() -> None:
    train, explain = results.split_args(["trainer.max_epochs=1", "explain.limit=4"])
    assert train == ["trainer.max_epochs=1"] and explain == ["limit=4"]
    full = results.Plan([])
    reduced = results.Plan([], train, explain)
    assert full.set_name == "full" and reduced.set_name.startswith("custom-") and reduced.set_name != "full"


def test_a_done_step_is_reused_and_a_failed_one_is_retried(tmp_path: Path) -> None:
    ok = [sys.executable, "-c", "print('hi')"]
    first = results.run_step("evaluate", ok, tmp_path / "evaluate", timeout=60)
    assert first["ok"] and (tmp_path / "evaluate" / "done.json").is_file() and "hi" in (
        tmp_path / "evaluate.log").read_text()
    again = results.run_step("evaluate", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "evaluate", 60)
    assert again["reused"] and again["ok"]  # not run again
    bad = results.run_step("profile", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "profile", 60)
    assert not bad["ok"] and "exit status 3" in bad["error"] and not (tmp_path / "profile" / "done.json").exists()
    slow = results.run_step("train", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "train", 1)
    assert not slow["ok"] and "stopped after 1 s" in slow["error"]


def test_train_step_resumes_a_killed_run_and_explain_uses_the_best_checkpoint(tmp_path: Path) -> None:
    plan = results.Plan([], ["trainer.max_epochs=1"], ["limit=4"])
    recipe = results.Recipe("events_x", ("experiment=events_x",), "events")
    cmds = results.step_commands(recipe, tmp_path, plan)
    assert "ckpt_path=last" not in cmds["train"] and "trainer.max_epochs=1" in cmds["train"]
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    (tmp_path / "train" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cmds = results.step_commands(recipe, tmp_path, plan)
    assert cmds["train"][-1] == "ckpt_path=last"
    assert f"ckpt={tmp_path / 'train' / 'checkpoints' / 'best.ckpt'}" in cmds["evaluate"]
    assert "evaluate=true" in cmds["evaluate"] and "evaluate=true" not in cmds["profile"]
    assert "limit=4" in cmds["profile"] and "trainer.max_epochs=1" not in cmds["profile"]


def test_no_matching_recipe_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no recipe matches"):
        results.run(results.Plan([], doc=tmp_path / "r.md"))


@pytest.mark.parametrize("arch", ["vgg16_lstm", "convlstm", "r2plus1d"])
def test_events_recipes_compose_on_the_events_data(arch: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment=events_{arch}"])
    assert cfg.model.net.arch == arch and cfg.data.root.endswith("/synthetic_events")
    assert cfg.data.synthetic.event_segments == cfg.data.num_frames
    assert cfg.model.scheduler.T_max == cfg.trainer.max_epochs > 8  # annealed over the run, longer than default
    assert cfg.callbacks.model_checkpoint.tie_break == "val/loss"


def test_report_only_runs_nothing_and_says_so(tmp_path: Path) -> None:
    recipe = results.Recipe("default_x", ("model=x",), "default data")
    plan = results.Plan([recipe], out_root=tmp_path / "out", doc=tmp_path / "docs" / "results.md", execute=False)
    results.run(plan)
    assert not (tmp_path / "out" / "full" / "default_x" / "train").exists()
    text = plan.doc.read_text()
    assert "| default_x (`model=x`) |" in text and "| train: not run (--report-only); evaluate: no trained" in text


def test_steps_limits_what_runs_and_an_unknown_step_is_one_error(tmp_path: Path, capsys) -> None:
    recipe = results.Recipe("default_x", ("model=x",), "default data")
    plan = results.Plan([recipe], out_root=tmp_path / "out", doc=tmp_path / "docs" / "results.md",
                        steps=("evaluate", "profile"))
    results.run(plan)  # train is not allowed to run: nothing is started, and the document says why
    assert not (tmp_path / "out" / "full" / "default_x" / "train").exists()
    assert "train: not run (--steps evaluate,profile)" in plan.doc.read_text()
    assert results.main(["--steps", "train,explain", "--out", str(tmp_path / "o")]) == 2
    assert "unknown step 'explain'" in capsys.readouterr().err


def test_readme_summary_is_generated_between_its_markers(tmp_path: Path) -> None:
    """A full run replaces only the README's marked block: recipes, profiles, and the events models' comparison."""
    from vidxai.pipelines.results_report import README_BEGIN, README_END

    evaluation = {
        "settings": {"videos": 12},
        "metrics": {"frame_aopc_morf": {"label": "frame MoRF", "direction": "higher", "best": "occlusion"},
                    "input_control": {"label": "control", "direction": "diagnostic"}},
        "methods": {"epsilon": {"frame_aopc_morf": 1.5, "input_control": 0.7},
                    "epsilon/cp": {"frame_aopc_morf": 1.2}, "occlusion": {"frame_aopc_morf": 1.75},
                    "random": {"frame_aopc_morf": 0.5}},
        "comparisons": {"frame_aopc_morf": {
            "epsilon": {"diff": -0.25, "ci_low": -0.5, "ci_high": 0.01, "tied_with_best": True},
            "epsilon/cp": {"diff": -0.55, "ci_low": -0.8, "ci_high": -0.3, "tied_with_best": False}}},
    }
    run = tmp_path / "out" / "full" / "events_videomae"
    _fake_run(run, with_md=False)
    (run / "evaluate" / "evaluation.json").write_text(json.dumps(evaluation))
    for step in ("train", "evaluate", "profile"):
        (run / step / "done.json").write_text(json.dumps({"ok": True, "seconds": 12.0, "load": 0.5}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{README_BEGIN}\nold numbers\n{README_END}\n\n## After\n")
    recipes = [results.Recipe("events_videomae", ("experiment=events_videomae",), "events data (x)"),
               results.Recipe("default_x", ("model=x",), "default data (y)")]
    plan = results.Plan(recipes[:1], out_root=tmp_path / "out", doc=tmp_path / "docs" / "results.md",
                        all_recipes=recipes, readme=readme, execute=False)
    results.run(plan)
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + README_BEGIN) and text.endswith(README_END + "\n\n## After\n")
    assert "old numbers" not in text and "(../docs/results.md)" not in text and "(docs/results.md)" in text
    assert "| events_videomae | events data | 0.96 | epsilon | 0.60 [0.50, 0.70] |" in text  # profile table
    row = next(line for line in text.splitlines() if line.startswith("| frame MoRF ↑"))
    assert row == ("| frame MoRF ↑ | occlusion 1.750 | **1.500 (-0.250 [-0.500, +0.010])** | "
                   "1.200 (-0.550 [-0.800, -0.300]) | **1.750** (best) |")  # bold = tied with the best
    assert "control" not in text.split(README_BEGIN)[1]  # a diagnostic ranks nothing
    assert "| `python train.py model=x` | – | – | – | train: not run (--report-only)" in text  # left out by --only
    doc = plan.doc.read_text()
    assert "## Temporal profiles of all recipes" in doc and "epsilon/cp (CP-LRP)" in doc
    custom = results.Plan(recipes[:1], ["trainer.max_epochs=1"], out_root=tmp_path / "out",
                          doc=tmp_path / "docs" / "r2.md", readme=readme, execute=False)
    before = readme.read_text()
    results.run(custom)  # a reduced run writes its own page but never the README
    assert readme.read_text() == before
