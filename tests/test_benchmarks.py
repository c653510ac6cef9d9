"""The benchmark commands the Makefile and the READMEs give: every one parses, and each script's `make bench*`
recipe line runs to the end with ``--smoke`` (every code path at the tiniest sizes, in this process, nothing
downloaded), printing its table rows and writing its JSON.

The full runs take minutes to hours; their measured tables live in benchmarks/README.md. ``gpu_check.py --device
cpu --quick`` is tested in tests/test_gpu_check.py.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import ROOT

SCRIPTS = ("bench_lrp", "bench_data", "bench_cache", "bench_pretrained", "gpu_check")
MAKE_TARGETS = ("bench", "bench-data", "bench-cache")
#: ``$(ARGS)`` or ``$(if $(DECORD2),--decord2-path $(DECORD2))`` in a recipe
MAKE_VARIABLE = re.compile(r"\$\((?:if [^()]*(?:\([^()]*\)[^()]*)*|[A-Z_0-9]+)\)")


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package; the scripts import each other by
    name, as they do when run)."""
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def make_recipes() -> dict[str, list[list[str]]]:
    """The ``benchmarks/*.py`` lines of the Makefile's bench targets as argument lists (``[script, *args]``), Make's
    variables left empty (``$(ARGS)``, ``$(if $(DECORD2),...)``: what a plain ``make bench`` runs)."""
    recipes: dict[str, list[list[str]]] = {}
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        head = re.match(r"^([\w-]+):", line)
        if head:
            target = head.group(1)
        elif line.startswith("\t") and target in MAKE_TARGETS:
            words = shlex.split(MAKE_VARIABLE.sub("", line.split("benchmarks/", 1)[1]))
            recipes.setdefault(target, []).append([words[0].removesuffix(".py"), *words[1:]])
    return recipes


def documented_commands() -> list[list[str]]:
    """Every ``python benchmarks/<script>.py ...`` command in README.md and benchmarks/README.md (indented or fenced
    code, continued lines joined, comments dropped) as ``[script, *args]``."""
    out = []
    for readme in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        text = readme.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            m = re.match(r"^\s*(?:\S*/)?python[0-9.]*\s+benchmarks/(\w+)\.py(.*)$", line)
            if m:
                args = m.group(2).split(" #")[0].replace("...", "")
                out.append([m.group(1), *shlex.split(args)])
    return out


def test_every_documented_benchmark_command_parses() -> None:
    recipes = make_recipes()
    assert set(recipes) == set(MAKE_TARGETS), recipes
    assert [c[0] for c in recipes["bench"]] == ["bench_lrp", "bench_data", "bench_cache"], recipes["bench"]
    commands = [c for cs in recipes.values() for c in cs] + documented_commands()
    assert len(commands) >= 20 and {c[0] for c in commands} == set(SCRIPTS), commands
    for script, *args in commands:
        try:
            benchmark_script(script).build_parser().parse_args(args)
        except SystemExit as exc:  # argparse's answer to an unknown flag or a bad value (exit 0: --help)
            if exc.code == 0 and "--help" in args:
                continue
            raise AssertionError(f"documented command does not parse: benchmarks/{script}.py {' '.join(args)}") \
                from exc


def _smoke(script: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[dict, str, dict]:
    """The script's first `make bench*` recipe line (or its documented command) with ``--smoke``, in this process:
    (report, printed, JSON)."""
    commands = [c for cs in make_recipes().values() for c in cs] + documented_commands()
    args = next(c[1:] for c in commands if c[0] == script)
    extra = {"bench_data": ["--cache-dir", str(tmp_path / "cache")],
             "bench_pretrained": ["--root", str(tmp_path / "root")]}.get(script, [])
    if script == "bench_pretrained":  # --cli: a fresh explain.py process, many seconds (the README test runs it)
        args = [a for a in args if a != "--cli"]
    threads = torch.get_num_threads()
    report = benchmark_script(script).main([*args, "--smoke", "--out", str(tmp_path / "out"), *extra])
    assert torch.get_num_threads() == threads  # the script gives back the caller's thread count
    written = list((tmp_path / "out").glob(f"{script}-*.json"))
    assert len(written) == 1
    return report, capsys.readouterr().out, json.loads(written[0].read_text())


def test_bench_lrp_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidxai.models import NETWORKS

    bench_lrp = benchmark_script("bench_lrp")
    report, printed, saved = _smoke("bench_lrp", tmp_path, capsys)
    assert saved == json.loads(json.dumps(report))
    # every registered network (a new one needs its --model), and torchvision's Swin3D-T
    assert set(report["smoke"]) == set(NETWORKS) | {"swin3d_t"}
    rows = [line.split() for line in printed.splitlines()]
    for model, run in report["smoke"].items():
        for part, entries in run["speed"].items():
            for what, r in entries.items():
                assert not what.endswith("_error"), (model, what, r)  # Captum's and zennit's peers ran
                assert r["ratio"] > 0 and r["seconds"] > 0 and r["baseline_seconds"] > 0, (model, what)
                assert [model, part, what] in [row[:3] for row in rows], (model, part, what)  # its table row
        memory = run.get("memory", {})
        assert "error" not in memory and not any("error" in v for v in memory.values() if isinstance(v, dict))
    assert {"vidxai_epsilon", "vidxai_alpha_beta", "captum_lrp_epsilon", "zennit_epsilon", "split_floor"} <= set(
        report["smoke"]["vgg16_lstm"]["speed"]["encoder_only"])
    assert report["smoke"]["vgg16_lstm"]["memory"]["peak_rss_gib"] > 0
    for model in (*bench_lrp.TRANSFORMERS, "swin3d_t"):
        assert set(report["smoke"][model]["speed"]["full_model"]) == {"vidxai_epsilon_attnlrp", "vidxai_epsilon_cp"}
    for model in bench_lrp.TRANSFORMERS:
        assert report["smoke"][model]["memory"]["kept_ratio"] > 0, model


def test_bench_data_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidxai.models import NETWORKS

    report, printed, saved = _smoke("bench_data", tmp_path, capsys)
    assert saved["smoke"] is True and saved["sizes"]["clip_frames"] == 4
    decoders = report["decoding"]["decoders"]
    assert "pyav" in decoders
    for name, r in decoders.items():
        for fmt in ("mpg", "mp4"):
            assert r[fmt]["full_decode_fps"] > 0 and r[fmt]["clip_ms"] > 0, (name, fmt)
            assert re.search(rf"^{name}\s+{fmt}\s+\d+\s+[\d.]+$", printed, flags=re.M), (name, fmt)
    for name, files in report["decoding"]["robustness"].items():  # each broken file in its own subprocess
        assert len(files) == 4 and {f["outcome"] for f in files.values()} <= {"raised", "returned"}, (name, files)
    dm = report["datamodule"]
    assert dm["workers"]["0"]["clips_per_s"] > 0 and dm["profile"]["total_s"] > 0
    assert "0 workers:" in printed and "not measured (no run with workers" in printed
    # every registered network, in both the synthetic and the paper code path, built for the clips it is fed
    assert set(report["training"]) == {f"{a}/{s}/fp32" for a in NETWORKS for s in ("synthetic", "paper")}
    for key, r in report["training"].items():
        assert r["clips_per_s"] > 0 and r["built_for"].startswith("4 frames of 32x32"), (key, r)
        assert re.search(rf"^{re.escape(key)}\s+2x4x32\^2\s+[\d.]+\s+[\d.]+$", printed, flags=re.M), key


def test_bench_cache_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report, printed, saved = _smoke("bench_cache", tmp_path, capsys)
    assert saved["smoke"] is True and saved["settings"]["epochs"] == 2
    for run in ("uncached", "cached"):
        assert len(report[run]["epoch_s"]) == 2 and report[run]["epoch_after_first_s"] > 0, report[run]
        assert re.search(rf"^{run}\s+[\d.]+ s\s+[\d.]+ s", printed, flags=re.M), run
    assert report["cached"]["cache_fill_s"] > 0 and report["feature_cache_speedup"] > 0
    printed_speedup = re.search(r"^feature_cache_speedup = ([\d.]+)x$", printed, flags=re.M)
    assert printed_speedup and abs(float(printed_speedup.group(1)) - report["feature_cache_speedup"]) <= 0.06


def test_bench_pretrained_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report, printed, saved = _smoke("bench_pretrained", tmp_path, capsys)
    assert saved == json.loads(json.dumps(report)) and report["smoke"] is True
    assert report["clip"][0] == 4  # the tiny model's frames, read from its own processor/config
    for part in ("load", "decode", "forward", "lrp", "input_gradient"):
        assert report["seconds"][part] > 0, part
        assert re.search(rf"^{part}\s+[\d.]+$", printed, flags=re.M), part
    assert report["lrp_over_gradient"] > 0 and "LRP / gradient" in printed
