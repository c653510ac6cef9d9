"""Explain modes, one LRP config from every spelling, and one `error:` line for each bad input."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from helpers import ROOT, compose_cfg

from vidxai.pipelines._common import EXPLAIN_ALIASES, legacy_overrides, lrp_config
from vidxai.pipelines.modes import choose_mode
from vidxai.xai.config import LRPConfig


# ----------------------------------------------------------------------------- modes
@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ([], "single"),
        (["video=/x/a.avi"], "single"),
        (["split=test", "index=2"], "single"),
        (["split=test", "class=walk"], "single"),
        (["split=test"], "profile"),
        (["split=test", "limit=5"], "profile"),
        (["compare=[z,epsilon]"], "compare"),
        (["evaluate=true", "split=test"], "evaluate"),
        (["mode=profile", "split=test", "index=2"], "profile"),  # explicit beats inferred
        (["mode=compare"], "compare"),
    ],
)
def test_mode_is_explicit_or_inferred_from_old_command_lines(tmp_path: Path, overrides: list[str], mode: str) -> None:
    assert choose_mode(compose_cfg("explain", tmp_path, overrides)) == mode


def test_unknown_mode_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"mode=sideways: choose one of auto, single, compare, profile, evaluate"):
        choose_mode(compose_cfg("explain", tmp_path, ["mode=sideways"]))


# ----------------------------------------------------------------------------- one LRP config
def test_old_explain_keys_reach_the_one_lrp_config(tmp_path: Path) -> None:
    old = ["rule=alpha_beta", "rule.params.epsilon=0.2", "lstm_eps=0.01", "bias_factor=1", "chunk_frames=4",
           "lstm_rule=half"]
    lrp = lrp_config(compose_cfg("explain", tmp_path, old))
    params = {"alpha": 2.0, "beta": 1.0, "epsilon": 0.2, "beta_sign": "standard"}
    assert lrp == LRPConfig(rule="alpha_beta", params=params, lstm_rule="half", lstm_eps=0.01, bias_factor=1,
                            chunk_frames=4)
    assert lrp_config(compose_cfg("explain", tmp_path, [])) == LRPConfig(params={"epsilon": 0.1})


def test_legacy_overrides_rewrite_only_the_old_keys() -> None:
    argv = ["lstm_eps=1e-3,1e-2", "+bias_factor=1", "~chunk_frames", "rule.params.epsilon=0.2", "lrp.lstm_rule=half",
            "video=/x/lstm_eps=1.avi", "-m"]
    assert legacy_overrides(argv, EXPLAIN_ALIASES) == [
        "lrp.lstm_eps=1e-3,1e-2", "+lrp.bias_factor=1", "~lrp.chunk_frames", "rule.params.epsilon=0.2",
        "lrp.lstm_rule=half", "video=/x/lstm_eps=1.avi", "-m"]


def test_callback_takes_the_lrp_group_and_its_old_rules_shape(tmp_path: Path) -> None:
    cfg = compose_cfg("train", tmp_path, ["callbacks.explanation.rules={epsilon: {}, z: {}}",
                                          "callbacks.explanation.lstm_eps=0.01", "lrp.bias_factor=1"])
    callback = hydra.utils.instantiate(cfg.callbacks.explanation)
    assert sorted(callback.configs) == ["epsilon", "z"]
    assert all((c.lstm_eps, c.bias_factor) == (0.01, 1) for c in callback.configs.values())
    default = hydra.utils.instantiate(compose_cfg("train", tmp_path, []).callbacks.explanation)
    assert list(default.configs) == ["epsilon"] and default.configs["epsilon"] == LRPConfig()


def test_pipelines_and_callbacks_build_explainers_only_through_lrp_config() -> None:
    for folder in ("pipelines", "callbacks"):
        for path in sorted((ROOT / "vidxai" / folder).rglob("*.py")):
            calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", getattr(n.func, "attr", None)) == "VideoLRP"]
            assert not calls, f"{path.relative_to(ROOT)} builds VideoLRP directly; use LRPConfig.build"


# ----------------------------------------------------------------------------- the command line
# The error cases run the command line in this process (the `cli` fixture, conftest.py); one case per script
# runs it as a new process, interpreter and all (here explain.py, tests/test_reliability.py train.py).
def _process(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), f"hydra.run.dir={cwd}/out", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, needle: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines[-5:]


def test_misspelled_key_names_the_closest_valid_key(tmp_path: Path, cli) -> None:
    _one_error_line(cli("train.py", "trainer.max_epoch=2", cwd=tmp_path),
                    "unknown key trainer.max_epoch: did you mean trainer.max_epochs?")
    _one_error_line(cli("explain.py", "ckpt=x.ckpt", "lrp.lstm_epsilon=2", cwd=tmp_path),
                    "unknown key lrp.lstm_epsilon: did you mean lrp.lstm_eps?")


@pytest.mark.slow
def test_explain_without_ckpt_is_one_line(tmp_path: Path) -> None:
    _one_error_line(_process("explain.py", "logger=none", cwd=tmp_path), "explain.py needs a checkpoint: pass ckpt=")


def _r2plus1d_checkpoint(trained: Path, out: Path) -> Path:
    """The tiny trained run's checkpoint with a random-weight R(2+1)D network in place of its own."""
    from vidxai.models import build_network

    ck = torch.load(trained, map_location="cpu", weights_only=True)
    net_cfg = {"arch": "r2plus1d", "width": 0.125}
    net = build_network("r2plus1d", num_classes=int(ck["hyper_parameters"]["num_classes"]), width=0.125)
    ck["hyper_parameters"]["net"] = net_cfg
    ck["state_dict"] = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save(ck, out)
    return out


def test_bad_inputs_on_a_checkpoint_are_one_line(trained_run: Path, tmp_path: Path, cli) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    r21 = _r2plus1d_checkpoint(ckpt, tmp_path / "r21.ckpt")
    _one_error_line(cli("explain.py", f"ckpt={r21}", "logger=none", "chunk_frames=4", cwd=tmp_path),
                    "chunk_frames=4 does not apply to R2Plus1D")
    text = tmp_path / "notes.avi"
    text.write_text("this is not a video\n" * 50)
    _one_error_line(cli("explain.py", f"ckpt={ckpt}", "logger=none", f"video={text}", cwd=tmp_path),
                    "cannot decode video")


def test_explain_says_what_it_took_and_compare_names_every_rule(
    trained_run: Path, data_dir: Path, tmp_path: Path, cli
) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    video = sorted(data_dir.rglob("*.avi"))[0]
    proc = cli("explain.py", f"ckpt={ckpt}", "logger=none", f"video={video}", "compare=[z,epsilon]",
               "rule=alpha_beta", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert re.fullmatch(rf"checkpoint {re.escape(str(ckpt))}: vgg16_lstm, 2 classes, epoch \d+, "
                        r"test accuracy \d\.\d\d, best val accuracy \d\.\d\d", out[0]), out[0]
    classes = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["class_names"]
    assert out[1] == f"  it knows 2 classes: {', '.join(classes)}"
    assert any(line.startswith("compared rules z, epsilon on ") and "with rule alpha_beta" in line for line in out)
    assert not any("with rule epsilon" in line for line in out), out


def test_a_prediction_near_chance_is_flagged() -> None:
    from vidxai.pipelines.modes.single import near_chance, relevance_summary, summary_lines

    assert near_chance(0.26, 4) and near_chance(0.55, 2) and not near_chance(0.9, 4) and not near_chance(0.7, 2)
    pixel = torch.ones(4, 2, 2).numpy()
    unsure = relevance_summary(pixel, [0.0, 0.05, 0.0, 0.0], 1, ["a", "b", "c", "d"])
    sure = relevance_summary(pixel, [0.0, 5.0, 0.0, 0.0], 1, ["a", "b", "c", "d"])
    for result in (unsure, sure):
        result.update(video="/x/v.avi", rule="epsilon")
    assert any("close to chance (0.25 for 4 classes)" in line for line in summary_lines(unsure))
    assert not any("chance" in line for line in summary_lines(sure))


def test_evaluate_mode_builds_no_explainer_it_does_not_use(
    trained_run: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidxai.pipelines.explain import explain
    from vidxai.xai.explainer import VideoLRP

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluate mode built a VideoLRP that none of its methods uses")

    monkeypatch.setattr(VideoLRP, "__init__", refuse)
    cfg = compose_cfg("explain", tmp_path, [f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "logger=none",
                                            "mode=evaluate", "split=test", "limit=1", "methods=[saliency,random]",
                                            "mprt.videos=0"], data_dir=data_dir)
    result = explain(cfg)
    assert list(result["methods"]) == ["saliency", "random"]
    assert (tmp_path / "run" / "evaluation.json").is_file()
