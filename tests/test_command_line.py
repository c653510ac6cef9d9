"""The command line of explain.py and train.py: conflicting, misplaced and unknown keys are refused with one
``error:`` line (exit 2) before any model is loaded, and before torch is imported."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from vidxai.errors import UserError
from vidxai.pipelines._common import EXPLAIN_ALIASES, TRAIN_ALIASES, prepare_command_line
from vidxai.pipelines.command_line import check_explain, given_keys

ROOT = Path(__file__).resolve().parents[1]


def _refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, entry: str, args: list[str]) -> str:
    """The one stderr line of ``entry``.py's command-line check on ``args`` (which must exit 2)."""
    from vidxai.pipelines.command_line import check_explain, check_train

    check = check_explain if entry == "explain" else check_train
    monkeypatch.setattr(sys, "argv", [f"{entry}.py", *args])
    with pytest.raises(SystemExit) as exc:
        prepare_command_line(ROOT / "conf", entry, EXPLAIN_ALIASES if entry == "explain" else TRAIN_ALIASES, check)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "+" + args[-1].lstrip("+").split("=")[0] not in lines[0], "never a hint to add a key with +"
    return lines[0]


#: every refused combination of explain.py keys: (arguments after ckpt=, a phrase of its one error line)
EXPLAIN_REFUSED = [
    (["evaluate=true", "compare=[z,epsilon]", "split=test", "limit=2"], "evaluate= and compare= together"),
    (["mode=evaluate", "compare=[z]"], "compare= does not apply to mode=evaluate"),
    (["mode=profile", "evaluate=true"], "evaluate=true asks for mode=evaluate, but mode=profile"),
    (["video=VIDEO", "split=test", "index=2"], "video= and split= together"),
    (["video=VIDEO", "index=2"], "video= and index= together"),
    (["video=VIDEO", "class=red_green_blue"], "video= and class= together"),
    (["evaluate=true", "split=test", "limit=4", "videos=[a.avi]"], "limit= and videos= together"),
    (["mode=evaluate", "video=VIDEO"], "does not apply to mode=evaluate"),
    (["split=val", "index=0", "limit=3"], "limit= does not apply to mode=single"),
    (["split=test", "methods=[epsilon]"], "methods= does not apply to mode=profile"),
    (["split=test", "baseline=blur"], "baseline= does not apply to mode=profile"),
    (["split=test", "mprt.final_videos=4"], "mprt= does not apply to mode=profile"),
    (["split=test", "index=1", "profile.n_bins=5"], "profile= does not apply to mode=single"),
    (["evaluate=true", "split=test", "top_k=5"], "top_k= does not apply to mode=evaluate"),
    (["mode=profile", "split=test", "class=red_green_blue"], "class= does not apply to mode=profile"),
    (["compare=[z,nope]"], "compare=: unknown LRP rule(s) ['nope']"),
    (["rule=nonsense"], "unknown LRP rule rule=nonsense"),
    (["mode=sideways"], "mode=sideways: choose one of auto"),
]

#: keys explain.py does not have: (argument, a phrase of its one error line)
EXPLAIN_UNKNOWN = [
    ("model.net.pretrained=/x", "model.net.pretrained belongs to train.py: to explain a pretrained network use "
                                "pretrained=<folder|torchvision:builder>"),
    ("+model.net.pretrained=/x", "model.net.pretrained belongs to train.py"),
    ("model=convlstm", "model belongs to train.py"),
    ("data=ucf11", "data belongs to train.py"),
    ("data.root=/videos", "data.root belongs to train.py"),
    ("trainer.max_epochs=3", None),  # the trainer group is explain.py's too (processes of profile/evaluate)
    ("ckpt_path=last", "ckpt_path belongs to train.py: explain.py takes the checkpoint as ckpt="),
    ("callbacks.explanation.every_n_epochs=2", "callbacks.explanation.every_n_epochs belongs to train.py"),
    ("seed_everything=1", "unknown key seed_everything"),
    ("+whatever=1", "unknown key whatever"),
    ("lrp.lstm_epsilon=2", "unknown key lrp.lstm_epsilon: did you mean lrp.lstm_eps?"),
]

#: keys train.py does not have
TRAIN_UNKNOWN = [
    ("ckpt=x.ckpt", "ckpt belongs to explain.py: to resume training use ckpt_path="),
    ("rule=z", "rule belongs to explain.py: the explanation callback's rule is lrp.rule=NAME"),
    ("video=a.mp4", "video belongs to explain.py"),
    ("evaluate=true", "evaluate belongs to explain.py"),
    ("evaluation=default", "evaluation belongs to explain.py: the evaluation of the methods runs in explain.py"),
    ("baseline=blur", "baseline belongs to explain.py"),
    ("+whatever=1", "unknown key whatever"),
    ("+model.net.nothing.deep=1", None),  # lands in the model's constructor, which refuses it itself
    ("trainer.max_epoch=2", "unknown key trainer.max_epoch: did you mean trainer.max_epochs?"),
    ("ckpt_path=/no/such/last.ckpt", "ckpt_path=/no/such/last.ckpt is not a file"),
]


@pytest.fixture
def fake_files(tmp_path: Path) -> tuple[Path, Path]:
    ckpt, video = tmp_path / "model.ckpt", tmp_path / "clip.mp4"
    ckpt.write_bytes(b"x")
    video.write_bytes(b"x")
    return ckpt, video


@pytest.mark.parametrize(("args", "needle"), EXPLAIN_REFUSED, ids=[" ".join(a) for a, _ in EXPLAIN_REFUSED])
def test_explain_refuses_conflicting_options(args: list[str], needle: str, fake_files: tuple[Path, Path],
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    ckpt, video = fake_files
    args = [f"ckpt={ckpt}", *(a.replace("VIDEO", str(video)) for a in args)]
    if any(a.startswith(("rule=", "mode=")) for a in args):  # a config group / the whole command line
        assert needle in _refused(monkeypatch, capsys, "explain", args)
        return
    with pytest.raises(UserError) as exc:  # the composed config: the defaults with these keys set
        check_explain(_explain_cfg(args), given_keys(args))
    assert needle in str(exc.value)


@functools.lru_cache(maxsize=1)
def _explain_defaults() -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("explain")


def _explain_cfg(args: list[str]) -> DictConfig:
    """conf/explain.yaml with ``args`` (keys of explain.yaml itself, no groups) set, as Hydra composes them."""
    from hydra.core.global_hydra import GlobalHydra

    try:
        base = _explain_defaults()
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.merge(base, OmegaConf.from_dotlist(args))


@pytest.mark.parametrize(("arg", "needle"), EXPLAIN_UNKNOWN + TRAIN_UNKNOWN,
                         ids=[f"explain {a}" for a, _ in EXPLAIN_UNKNOWN] + [f"train {a}" for a, _ in TRAIN_UNKNOWN])
def test_unknown_and_misplaced_keys_name_the_key_and_the_way(arg: str, needle: str | None,
                                                             fake_files: tuple[Path, Path],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    entry = "explain" if (arg, needle) in EXPLAIN_UNKNOWN else "train"
    args = [f"ckpt={fake_files[0]}", arg] if entry == "explain" else [arg]
    if needle is None:  # accepted on the command line
        from vidxai.pipelines.command_line import check_explain, check_train

        monkeypatch.setattr(sys, "argv", [f"{entry}.py", *args])
        prepare_command_line(ROOT / "conf", entry, EXPLAIN_ALIASES if entry == "explain" else TRAIN_ALIASES,
                             check_explain if entry == "explain" else check_train)
        return
    assert needle in _refused(monkeypatch, capsys, entry, args)


def test_accepted_command_lines_pass(fake_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, video = fake_files
    for args in (["split=test", "class=red_green_blue", "index=2", "rule=alpha_beta"],
                 ["evaluate=true", "split=test", "limit=24", "methods=all", "baseline=blur"]):
        monkeypatch.setattr(sys, "argv", ["explain.py", f"ckpt={ckpt}", *args])
        prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES, check_explain)
    for args in (["split=test", "class=red_green_blue", "index=2", "rule=alpha_beta"],
                 [f"video={video}", "target=red_green_blue"], ["compare=[z,epsilon]"], ["split=test", "limit=50"],
                 ["evaluate=true", "split=test", "limit=24", "methods=all", "baseline=blur"],
                 ["evaluate=true", "split=test", "videos=[a.avi]"], ["evaluate=false", "split=val", "index=0"],
                 ["mode=compare", "split=test", "index=1"]):
        args = [f"ckpt={ckpt}", *args]
        check_explain(_explain_cfg(args), given_keys(args))


def test_the_check_runs_before_torch_is_imported(tmp_path: Path) -> None:
    """explain.py's and train.py's settings errors print before torch (and Lightning, W&B, transformers) load."""
    probe = ("import runpy, sys\n"
             "sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as exc:\n"
             "    heavy = [m for m in ('torch', 'pytorch_lightning', 'wandb', 'transformers') if m in sys.modules]\n"
             "    print('exit', exc.code, 'heavy', heavy)\n")
    for script, arg in (("explain.py", "evaluate=true compare=[z] ckpt=nope.ckpt"), ("train.py", "rule=z")):
        proc = subprocess.run([sys.executable, "-c", probe, str(ROOT / script), *arg.split()], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT),
                                                                                 "PATH": "/usr/bin:/bin"})
        assert proc.stdout.strip() == "exit 2 heavy []", (proc.stdout, proc.stderr[-2000:])
        assert proc.stderr.strip().startswith("error:"), proc.stderr[-500:]
