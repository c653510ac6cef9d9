"""Every command of the README's ```bash blocks runs, in a reduced form, or ends in its documented error.

The test reads README.md, joins continued lines, and matches each `python train.py`, `python explain.py`,
`make ...` and `benchmarks/...` command against :data:`COMMANDS`, a small table of (pattern, how it is
exercised). A README command no row matches fails the test: a new command needs a row (a reduction, an
expected error, or a reason it is not run here). Runs are in-process and tiny (the session's tiny data, one
batch per stage), on the session's trained checkpoint where a checkpoint is needed.

How a command is exercised (``kind``):

* ``train``: the command's overrides + :data:`TRAIN_REDUCTION`, through the command-line check and ``train()``;
* ``explain``: the command's overrides (``ckpt=`` -> the session checkpoint, class names -> its classes,
  ``video=`` -> one of its videos) + the row's reduction, through the command-line check and ``explain()``;
* ``error``: the command (reduced) must end in one ``error:`` line containing the row's text;
* ``sweep``: a multirun (``-m``): every job's overrides pass the command-line check (jobs are not run:
  multiruns are run by tests/test_sweeps.py and tests/test_distributed.py);
* ``not_run``: the reason (the suite itself, the benchmarks: tests/test_benchmarks.py, a cluster).
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, TINY_DATA, TINY_TRAIN, compose_cfg

README = ROOT / "README.md"

#: appended to every reduced train.py command: the tiny data, one batch of each stage, no figures
TRAIN_REDUCTION = [*TINY_DATA, *TINY_TRAIN, "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                   "trainer.max_epochs=1", "callbacks.explanation.every_n_epochs=0", "logger=csv",
                   "callbacks.test_figures=null"]
#: model sizes for the tiny data
TINY_NETS = {"model=convlstm": ["model.net.hidden_channels=[8]"], "model=r2plus1d": ["model.net.width=0.125"],
             "model=videomae": ["data.num_frames=4"], "model=timesformer": ["data.num_frames=4"]}
_EVAL_REDUCTION = ["mprt.videos=1", "mprt.final_videos=2", "mprt.steps=2", "n_boot=50", "region_size=16",
                   "ig_steps=2", "logger=none"]


@dataclass(frozen=True)
class Row:
    pattern: str  # regex on the command (after `python`/`make`)
    kind: str  # train | explain | pretrained | error | sweep | not_run
    extra: tuple[str, ...] = ()  # overrides appended (train, explain, error)
    text: str = ""  # error: a regex on the one error line; not_run: the reason
    replace: tuple[tuple[str, str], ...] = ()  # (regex, replacement) on the command's overrides


#: README command pattern -> how it is exercised; the first row that matches wins
COMMANDS: tuple[Row, ...] = (
    Row(r"^make test\b", "not_run", text="the test suite itself"),
    Row(r"^make (install|lint|rule-configs|clean)\b", "not_run", text="environment/housekeeping, no product code"),
    # full runs take minutes (measured: benchmarks/README.md); tests/test_benchmarks.py parses every recipe line and
    # documented benchmark command and runs each script's recipe line with --smoke
    Row(r"^make (bench|bench-data|bench-cache)\b", "not_run", text="run with --smoke by tests/test_benchmarks.py"),
    Row(r"^(\S*/)?benchmarks/", "not_run", text="parsed and run with --smoke by tests/test_benchmarks.py"),
    Row(r"^make results\b", "not_run", text="trains every recipe (hours); its steps are tested in test_results.py"),
    Row(r"^make train\b", "train"),
    Row(r"^make explain\b", "explain"),
    Row(r"\.py -m ", "sweep"),
    # the paper's set-up needs a GPU (trainer=gpu), ImageNet weights and UCF11: whichever is missing first
    Row(r"train\.py .*experiment=paper_\w+ data\.root=", "error",
        text="no CUDA GPU is visible|weights not found|is not a folder"),
    Row(r"train\.py .*trainer=ddp(\s|$)", "error", text="no CUDA GPU is visible here"),
    Row(r"train\.py .*trainer=ddp_cpu", "not_run", text="2 processes; covered by tests/test_distributed.py"),
    Row(r"train\.py .*ckpt_path=outputs/", "error", text="is not a file", replace=((r"<run>", "a_run"),)),
    Row(r"train\.py .*ckpt_path=last", "error", text="no checkpoint"),
    Row(r"train\.py", "train"),
    # a model the user already has: the hub id, the folder and `...` stand for a tiny save_pretrained VideoMAE the
    # test writes; torchvision's weights file for r2plus1d_18's random weights saved by the test; clips it writes
    Row(r"explain\.py pretrained=", "pretrained", extra=tuple(_EVAL_REDUCTION)),
    Row(r"explain\.py .*trainer=ddp_cpu", "not_run", text="2 processes; covered by tests/test_explain_sharded.py"),
    Row(r"explain\.py .*evaluate=true", "explain", extra=tuple(_EVAL_REDUCTION),
        replace=((r"^limit=\d+$", "limit=2"),)),
    Row(r"explain\.py .*split=test limit=", "explain", extra=("profile.n_boot=50", "logger=none"),
        replace=((r"^limit=\d+$", "limit=2"),)),
    # the tiny data's test split holds one video of each class
    Row(r"explain\.py", "explain", extra=("logger=none",), replace=((r"^index=\d+$", "index=0"),)),
)


def readme_commands(text: str) -> list[str]:
    """The train.py / explain.py / make / benchmarks commands of the ```bash blocks, continued lines joined,
    comments dropped, the interpreter path dropped (``.venv/bin/python train.py x=1`` -> ``train.py x=1``)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            line = re.sub(r"^(\S*/)?python[0-9.]*\s+", "", line)
            if re.match(r"^(train\.py|explain\.py|make\s|(\S*/)?benchmarks/)", line):
                out.append(" ".join(line.split()))
    return out


def row_for(command: str) -> Row | None:
    return next((r for r in COMMANDS if re.search(r.pattern, command)), None)


def test_every_readme_command_has_a_row() -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) >= 25, commands  # the blocks were found
    missing = [c for c in commands if row_for(c) is None]
    assert not missing, f"README commands without a row in COMMANDS (add a reduction or a reason): {missing}"


def _overrides(command: str, row: Row) -> list[str]:
    words = shlex.split(command)
    if words[0] == "make":
        args = [w.partition("=")[2] for w in words[1:] if w.startswith("ARGS=")]
        words = shlex.split(args[0]) if args else []
    else:
        words = words[1:]
    out = []
    for w in words:
        for pattern, new in row.replace:
            w = re.sub(pattern, new, w)
        out.append(w)
    return out


def _check(entry: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point's command-line check (what happens before Hydra runs the command)."""
    from vidxai.pipelines._common import EXPLAIN_ALIASES, TRAIN_ALIASES, prepare_command_line
    from vidxai.pipelines.command_line import check_explain, check_train

    monkeypatch.setattr(sys, "argv", [f"{entry}.py", *args])
    prepare_command_line(ROOT / "conf", entry, EXPLAIN_ALIASES if entry == "explain" else TRAIN_ALIASES,
                         check_explain if entry == "explain" else check_train)


def _explain_args(args: list[str], ckpt: Path, classes: list[str], video: Path) -> list[str]:
    out = []
    for a in args:
        key, _, value = a.partition("=")
        if key == "ckpt":
            a = f"ckpt={ckpt}"
        elif key == "video":
            a = f"video={video}"
        elif key in ("class", "target") and value not in classes:
            a = f"{key}={classes[-1]}"
        out.append(a)
    return out if any(a.startswith("ckpt=") for a in out) else [f"ckpt={ckpt}", *out]


def _run(command: str, row: Row, tmp: Path, ckpt: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture) -> str:
    """Exercise one command as its row says; returns what was done (for the failure message)."""
    import torch

    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.explain import explain
    from vidxai.pipelines.train import train

    (tmp / "run").mkdir(parents=True)  # the run folder, as Hydra makes it before the command runs
    args = _overrides(command, row)
    entry = "explain" if command.startswith("explain.py") or command.startswith("make explain") else "train"
    if row.kind == "sweep":
        sweeps = [a for a in args if a != "-m"]
        if entry == "explain":
            classes = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["class_names"]
            sweeps = _explain_args(sweeps, ckpt, classes, ckpt)
        for job in _jobs(sweeps):
            if not any(a.startswith(("hydra/launcher=", "hparams_search=")) or "=..." in a for a in job):
                _check(entry, job, monkeypatch)
        return "every job's command line checked"
    if entry == "train":
        if command.startswith("make train") or args == []:
            return "the session fixture trained_run is this command, reduced"
        net = [x for k, v in TINY_NETS.items() if k in args for x in v]
        overrides = [*args, *TRAIN_REDUCTION, *net, *row.extra]
        if row.kind == "error":
            try:  # these stop before any data is generated or model built
                _check("train", args, monkeypatch)
                cfg = compose_cfg("train", tmp, [*args, "logger=csv"], data_dir=data_dir)
                run_entry_point(train, cfg)
            except SystemExit as exc:
                assert exc.code == 2
                err = capsys.readouterr().err.strip().splitlines()
                assert err and err[-1].startswith("error:") and re.search(row.text, err[-1]), (command, err[-3:])
                return "ended in its one error line"
            raise AssertionError(f"{command}: expected the error {row.text!r}")
        _check("train", args, monkeypatch)
        capsys.readouterr()
        assert train(compose_cfg("train", tmp, overrides, data_dir=data_dir)) is not None
        # `make train` ends with its own measurement: the README's times come from this line
        assert re.search(r"trained in \d+ (s|min \d+ s) \(1 epochs\); test accuracy \d\.\d\d", capsys.readouterr().out)
        return "trained, reduced"
    if row.kind == "pretrained":
        args = _pretrained_args(args, tmp)
        _check("explain", args, monkeypatch)
        explain(compose_cfg("explain", tmp, [*args, *row.extra], data_dir=data_dir))
        return "explained a model written by the test, reduced"
    classes = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["class_names"]
    video = sorted(data_dir.rglob("*.avi"))[0]
    args = _explain_args(args, ckpt, classes, video)
    _check("explain", [a for a in args if not a.startswith("logger")], monkeypatch)
    explain(compose_cfg("explain", tmp, [*args, *row.extra], data_dir=data_dir))
    return "explained, reduced"


def _pretrained_args(args: list[str], tmp: Path) -> list[str]:
    """The README's ``pretrained=`` command with its sources and clips replaced by ones the test writes: a tiny
    VideoMAE ``save_pretrained`` folder (its labels, its processor config), torchvision's r2plus1d_18 with random
    weights in a ``.pth``, two short clips in a folder."""
    import json

    import torch
    import torchvision.models as tvm
    from helpers import make_video
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    labels = ["archery", "playing drums", "yoga"]
    clips = tmp / "my_clips"
    for i in range(2):
        make_video(clips / f"clip{i}.mp4", num_frames=8, size=(24, 32), seed=i)
    out = []
    for a in args:
        key, _, value = a.partition("=")
        if key == "pretrained" and value.startswith("torchvision:"):
            builder = value.split(":", 1)[1]
            torch.manual_seed(0)
            torch.save(tvm.get_model(builder, weights=None).state_dict(), tmp / f"{builder}.pth")
        elif key == "pretrained":
            folder = tmp / "hf_model"
            if not folder.exists():
                config = VideoMAEConfig(num_frames=4, image_size=16, patch_size=8, hidden_size=16,
                                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                        tubelet_size=2, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={n: i for i, n in enumerate(labels)})
                torch.manual_seed(0)
                VideoMAEForVideoClassification(config).save_pretrained(folder)
                (folder / "preprocessor_config.json").write_text(json.dumps(
                    {"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16},
                     "image_mean": [0.45] * 3, "image_std": [0.225] * 3}))
            a = f"pretrained={folder}"
        elif key == "weights":
            a = f"weights={tmp / value.split('-')[0]}.pth"
        elif key == "video":
            a = f"video={clips / 'clip0.mp4'}"
        elif key == "videos":
            a = f"videos={clips}" if "*" not in value else f"videos={clips}/*.mp4"
        out.append(a.replace('"', ""))
    return out


def _jobs(args: list[str]) -> list[list[str]]:
    """The first and last job of a simple comma sweep (``a=1,2 b=x,y`` -> ``[a=1 b=x], [a=2 b=y]``)."""
    first, last = [], []
    for a in args:
        key, sep, value = a.partition("=")
        parts = value.split(",") if sep and not any(c in value for c in "[]()'\"") else [value]
        first.append(f"{key}{sep}{parts[0]}" if sep else a)
        last.append(f"{key}{sep}{parts[-1]}" if sep else a)
    return [first, last]


#: the commands run in this many tests, every PARTS-th command in each: pytest-xdist spreads them over its workers
PARTS = 4


def _readme_commands() -> list[str]:
    return list(dict.fromkeys(readme_commands(README.read_text())))


def test_at_least_ten_readme_commands_run_reduced() -> None:
    kinds = {c: getattr(row_for(c), "kind", None) for c in _readme_commands()}
    runs = [c for c, kind in kinds.items() if kind in ("train", "explain", "pretrained")]
    assert len(runs) >= 10, runs


@pytest.mark.parametrize("part", range(PARTS))
def test_readme_commands_run_reduced(part: int, trained_run: Path, data_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    monkeypatch.chdir(tmp_path)  # `ckpt_path=last` looks for runs under outputs/ of the working folder
    done = {}
    for i, command in enumerate(_readme_commands()):
        if i % PARTS != part:
            continue
        row = row_for(command)
        assert row is not None, command
        if row.kind == "not_run":
            done[command] = f"not run: {row.text}"
            continue
        done[command] = _run(command, row, tmp_path / f"c{i}", ckpt, data_dir, monkeypatch, capsys)
    print("\n".join(f"{how}: {command}" for command, how in done.items()))
    assert done, f"no README command falls in part {part} of {PARTS}"


def test_wall_time_reads_like_the_readme() -> None:
    from vidxai.pipelines.train import wall_time

    assert [wall_time(x) for x in (42.4, 364, 3725)] == ["42 s", "6 min 4 s", "1 h 2 min"]
