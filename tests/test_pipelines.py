"""The train and explain pipelines, composed through the real Hydra configs (tiny data, CPU)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONF, TINY_DATA, TINY_TRAIN, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image

from vidxai.pipelines.explain import explain
from vidxai.pipelines.train import train


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=convlstm"],
        ["model=r2plus1d"],
        ["data=ucf11", "data.root=/x"],
        ["data=ucf101", "data.root=/x"],
        ["data=folder", "data.root=/x"],
        ["trainer=gpu"],
        ["trainer=ddp"],
        ["experiment=paper_vgg16_lstm"],
        ["experiment=paper_convlstm"],
        ["debug=fast"],
        ["logger=csv", "callbacks=none"],
        ["data=synthetic_events"],
    ],
)
def test_train_configs_compose(overrides: list[str]) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert cfg.model._target_ == "vidxai.models.VideoClassifier"
    assert cfg.data._target_ == "vidxai.data.VideoDataModule"
    if "experiment=paper_vgg16_lstm" in overrides:
        assert cfg.data.layout == "ucf11" and cfg.data.batch_size == 32
        assert cfg.trainer.max_epochs == 100 and cfg.callbacks.early_stopping.patience == 15
        assert cfg.trainer.precision == "bf16-mixed" and cfg.model.net.pretrained is True
    if "data=synthetic_events" in overrides:  # its own folder; the flash fills one of num_frames segments
        assert cfg.data.synthetic.variant == "events" and cfg.data.root.endswith("/synthetic_events")
        assert cfg.data.synthetic.event_segments == cfg.data.num_frames
        assert cfg.lrp.lstm_rule == "signal_take_all" and cfg.callbacks.explanation.lrp.lstm_rule == "signal_take_all"


def test_default_train_config_matches_issue() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train")
    assert cfg.data.synthetic is not None and cfg.data.layout == "ucf11"
    assert cfg.model.net.arch == "vgg16_lstm"
    assert cfg.trainer.accelerator == "auto"
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.save_last
    assert cfg.logger.wandb.offline is True and "csv" in cfg.logger


def test_optuna_sweep_config_composes() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "maximize"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params


# ----------------------------------------------------------------------------- training
def test_train_vgg16_lstm_writes_checkpoints_metrics_figures_and_wandb(trained_run: Path) -> None:
    ckpts = trained_run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "best.ckpt").exists()
    ckpt = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["net"]["arch"] == "vgg16_lstm" and hp["class_names"] and hp["preprocess"]["num_frames"] == 4
    assert hp["data"]["layout"] == "ucf11"
    metrics = (trained_run / "csv" / "metrics.csv").read_text()
    for key in ("train/loss", "val/acc", "test/acc", "test/f1"):
        assert key in metrics
    figures = list(trained_run.rglob("confusion_matrix.png")) + list(trained_run.rglob("roc.png"))
    assert len(figures) >= 2
    for png in figures:
        with Image.open(png) as im:
            assert im.width > 100 and im.height > 100
    expl = list((trained_run / "explanations").rglob("*heatmaps.png"))
    assert expl, "explanation callback wrote no heatmaps"
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = list(runs[0].rglob("*.png")) + list(runs[0].rglob("*.gif"))
    assert media, "offline W&B run holds no logged media"


def test_train_convlstm_composed_through_hydra(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_cfg(
        "train", tmp_path,
        TINY_DATA + TINY_TRAIN + ["model=convlstm", "model.net.hidden_channels=[8]", "logger=csv",
                                  "callbacks.explanation.every_n_epochs=0"],
        data_dir=data_dir,
    )
    value = train(cfg)
    assert value is not None
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["arch"] == "convlstm"
    assert "test/acc" in (run / "csv" / "metrics.csv").read_text()


@pytest.mark.slow
def test_train_and_explain_r2plus1d_through_hydra(tmp_path: Path, data_dir: Path) -> None:
    """The 3D CNN goes through everything the other models do: training with the explanation callback,
    explain.py on one video (heatmaps, curve, peaks, GIF, rule comparison) and over a split (profile)."""
    cfg = compose_cfg(
        "train", tmp_path / "train",
        TINY_DATA + TINY_TRAIN + ["model=r2plus1d", "model.net.width=0.125", "logger=csv",
                                  "callbacks.explanation.num_clips=1"],
        data_dir=data_dir,
    )
    assert train(cfg) is not None
    run = tmp_path / "train" / "run"
    assert list((run / "explanations").rglob("*.png")), "the explanation callback wrote no figures"
    ckpt = run / "checkpoints" / "best.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["net"]["arch"] == "r2plus1d"

    cfg = _explain_cfg(tmp_path / "one", data_dir, ckpt, "rule=preset_b_flat", "compare=[z,alpha_beta]", "logger=none")
    summary = explain(cfg)
    out = tmp_path / "one" / "run"
    npz = np.load(out / "relevance.npz")
    assert npz["pixel"].shape == (4, 32, 32) and npz["frame"].shape == (4,)
    assert npz["feature"].shape == (1, 64)  # one time step of the last feature map, 64 channels at width 1/8
    assert np.abs(npz["pixel"]).sum() > 0 and summary["rule"] == "preset_b_flat"
    for name in ("heatmaps.png", "curve.png", "peaks.png", "compare.png", "overlay.gif"):
        assert (out / name).is_file(), name
    with pytest.raises(ValueError, match="chunk_frames=2 does not apply to R2Plus1D"):
        explain(_explain_cfg(tmp_path / "chunk", data_dir, ckpt, "chunk_frames=2", "logger=none"))

    cfg = _explain_cfg(tmp_path / "split", data_dir, ckpt, "split=test", "limit=2", "logger=none")
    profile = explain(cfg)
    assert profile["videos"] == 2 and (tmp_path / "split" / "run" / "profile.png").is_file()


# ----------------------------------------------------------------------------- explain
def _explain_cfg(tmp: Path, data_dir: Path, ckpt: Path, *extra: str):
    return compose_cfg("explain", tmp, [f"ckpt={ckpt}", *extra], data_dir=data_dir)


def test_explain_single_video_writes_all_files(
    trained_run: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cfg = _explain_cfg(tmp_path, data_dir, ckpt, "rule=alpha_beta", "compare=[z,epsilon]")
    summary = explain(cfg)
    printed = capsys.readouterr()
    assert "Symlinked" not in printed.err + printed.out  # W&B's note the user cannot act on
    out = tmp_path / "run"
    npz = np.load(out / "relevance.npz")
    t = 4
    assert npz["pixel"].shape == (t, 32, 32) and npz["frame"].shape == (t,)
    assert npz["feature"].shape[0] == t and npz["frames"].shape == (t, 32, 32, 3) and npz["frames"].dtype == np.uint8
    assert set(npz.files) >= {"logits", "target", "class_names", "frame_indices"}
    np.testing.assert_allclose(npz["pixel"].sum(axis=(1, 2)), npz["frame"], rtol=1e-4, atol=1e-6)
    for name in ("heatmaps.png", "curve.png", "peaks.png", "compare.png"):
        with Image.open(out / name) as im:
            assert im.width > 200 and im.height > 100, name
    with Image.open(out / "overlay.gif") as im:
        assert im.n_frames == t
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rule"] == "alpha_beta" and saved["target"] == summary["target"]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "explain.py must log to an offline W&B run"
    logged = {p.name.split("_")[0] for p in runs[0].rglob("media/images/explain/*.png")}
    assert {"heatmaps", "curve", "peaks", "compare"} <= logged, logged
    assert list(runs[0].rglob("media/videos/explain/*.gif")), "overlay GIF not logged"
    assert json.loads((runs[0] / "files" / "summary.json").read_text()) == saved  # among the run's files
    shares = saved["positive_share"]
    if shares["first_half"] is not None:
        assert abs(shares["first_half"] + shares["second_half"] - 1.0) < 1e-6


def test_explain_dataset_mode_writes_profile(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cfg = _explain_cfg(tmp_path, data_dir, ckpt, "split=test", "limit=3", "profile.n_boot=50")
    prof = explain(cfg)
    out = tmp_path / "run"
    assert (out / "profile.png").is_file()
    saved = json.loads((out / "profile.json").read_text())
    assert saved["videos"] == prof["videos"] <= 3


def test_explain_evaluate_writes_scores_figures_and_wandb(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    methods = ["epsilon", "occlusion", "grad_cam", "random"]
    cfg = _explain_cfg(tmp_path, data_dir, ckpt, "evaluate=true", "split=test", "limit=2",
                       f"methods=[{','.join(methods)}]", "mprt.videos=1", "mprt.steps=2", "region_size=16")
    result = explain(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "evaluation.json").read_text())
    assert set(saved) >= {"settings", "chance", "methods", "curves", "mprt"}
    assert saved["settings"]["baseline"] == "mean" and saved["settings"]["videos"] == 2
    assert saved["settings"]["split"] == "test" and saved["mprt"]["steps"] == ["head", "lstm"]
    assert list(saved["methods"]) == methods == list(result["methods"])
    for name in methods:
        m = saved["methods"][name]
        assert "error" not in m, m
        assert m["time_s"] >= 0 and len(m["mprt_spearman"]) == 2
        for key in ("frame_aopc_morf", "frame_aopc_lerf", "frame_aopc_random", "frame_aopc_last_first",
                    "frame_aopc_first_first", "region_aopc_morf", "region_aopc_random"):
            assert isinstance(m[key], float), (name, key)
        curves = saved["curves"][name]
        assert len(curves["frame_morf"]) == 4 + 1 and len(curves["region_morf"]) == 11
    # the synthetic videos carry boxes and evidence frames: ground-truth scores and their chance levels
    assert 0 < saved["chance"]["mass_accuracy"] < 1 and saved["methods"]["epsilon"]["mass_accuracy"] is not None
    rows = (out / "evaluation.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * len(methods) and "frame_aopc_morf" in rows[0]
    for name in ("evaluation.png", "mprt.png"):
        with Image.open(out / name) as im:
            assert im.width > 400 and im.height > 300, name
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("media/table/evaluate/table_*.table.json")), "evaluation table not logged"
    assert {p.name.split("_")[0] for p in runs[0].rglob("media/images/evaluate/*.png")} == {"evaluation", "mprt"}


def _error_cases(ckpt: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    cases = {
        "missing": ([f"ckpt={tmp_path}/nope.ckpt"], "checkpoint not found"),
        "class": ([f"ckpt={ckpt}", "target=no_such_class"], "unknown class"),
        "video": ([f"ckpt={ckpt}", f"video={tmp_path}/missing.avi"], "video not found"),
        "index": ([f"ckpt={ckpt}", "split=val", "index=999"], "out of range"),
        "eval_method": ([f"ckpt={ckpt}", "evaluate=true", "methods=[epsilon,nope]"], "unknown method(s) ['nope']"),
        "eval_baseline": ([f"ckpt={ckpt}", "evaluate=true", "baseline=noise"], "unknown baseline='noise'"),
        "eval_region": ([f"ckpt={ckpt}", "evaluate=true", "region_step=0.9"], "region_step <= region_max"),
        "eval_video_batch": ([f"ckpt={ckpt}", "evaluate=true", "video_batch=0"], "video_batch must be an integer"),
    }
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    cases["garbage"] = ([f"ckpt={garbage}"], "unreadable")
    bad_video = tmp_path / "bad.avi"
    bad_video.write_bytes(os.urandom(2048))
    cases["bad_video"] = ([f"ckpt={ckpt}", f"video={bad_video}"], "cannot decode")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hyper_parameters": {"lr": 1.0}}, other)
    cases["other_arch"] = ([f"ckpt={other}"], "not written by vidxai")
    wrong = tmp_path / "wrong_arch.ckpt"
    good = torch.load(ckpt, map_location="cpu", weights_only=True)
    good["hyper_parameters"]["net"] = {"arch": "convlstm"}
    torch.save(good, wrong)
    cases["mismatch"] = ([f"ckpt={wrong}"], "does not match architecture")
    cases["lstm_rule"] = ([f"ckpt={ckpt}", "lstm_rule=Half"], "lstm_rule='Half' is unknown")
    return cases


def test_explain_errors_are_one_line_exit_2(
    trained_run: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.explain import explain_entry

    for name, (args, needle) in _error_cases(trained_run / "checkpoints" / "best.ckpt", tmp_path).items():
        cfg = compose_cfg("explain", tmp_path / name, ["logger=csv", *args], data_dir=data_dir)
        with pytest.raises(SystemExit) as exc:
            run_entry_point(explain_entry, cfg)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2, name
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], (name, err)


def test_explain_cli_exit_code_2_without_traceback(trained_run: Path, tmp_path: Path, cli) -> None:
    """explain.py's command line (run in this process: the `cli` fixture)."""
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    for args, needle in (([f"ckpt={ckpt}", "rule=nonsense"], "unknown LRP rule"),
                         ([f"ckpt={tmp_path}/nope.ckpt"], "checkpoint not found")):
        proc = cli("explain.py", "logger=csv", *args, cwd=tmp_path)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert err and err[-1].startswith("error:") and needle in err[-1], err[-3:]
        assert "Traceback" not in proc.stderr


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_crafted_checkpoint_cannot_run_code(tmp_path: Path, cli) -> None:
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    evil = tmp_path / "evil.ckpt"
    # protocol 2, torch.save's: torch's safe unpickler reaches the os.system global and refuses it (a protocol-4
    # file is refused earlier, at its first FRAME opcode, as unreadable: no code runs either way)
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": {}, "hyper_parameters": {"net": {"arch": "vgg16_lstm"}}, "x": _Exploit()}, fh,
                    protocol=2)
    proc = cli("explain.py", "logger=csv", f"ckpt={evil}", cwd=tmp_path)  # unpickled here: the marker would show it
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused by safe loading (weights_only=True)" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert not marker.exists(), "unpickling the crafted checkpoint ran code"


def test_interrupted_training_leaves_a_checkpoint_to_resume_from(tmp_path: Path, data_dir: Path) -> None:
    import signal

    base = TINY_DATA + TINY_TRAIN + ["model=convlstm", "model.net.hidden_channels=[8]", "logger=csv",
                                     "callbacks.explanation.every_n_epochs=0", "trainer.max_epochs=3"]
    cfg = compose_cfg("train", tmp_path / "a", base, data_dir=data_dir)
    with open_dict(cfg):
        cfg.callbacks.interrupt = {"_target_": "helpers.InterruptAt", "epoch": 1}
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C handling exits after saving
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    saved = tmp_path / "a" / "run" / "checkpoints" / "on_exception.ckpt"
    assert saved.is_file()
    ckpt = torch.load(saved, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["hyper_parameters"]["net"]["arch"] == "convlstm"

    resumed = compose_cfg("train", tmp_path / "b", base + [f"ckpt_path={saved}"], data_dir=data_dir)
    assert train(resumed) is not None
    import csv

    with open(tmp_path / "b" / "run" / "csv" / "metrics.csv") as fh:
        epochs = {int(row["epoch"]) for row in csv.DictReader(fh) if row.get("val/acc")}
    assert epochs == {1, 2}  # continued from the interrupted epoch 1 to the end, not from scratch


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.decode_device=cuda", "PyNvVideoCodec"),
        ("model.net.pretrained=true", "weights not found"),
        ("data.root=/nonexistent/videos", "is not a folder"),
    ],
)
def test_train_user_errors_are_one_line_exit_2(
    override: str, needle: str, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    from vidxai.pipelines._common import run_entry_point

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no ImageNet file there
    cfg = compose_cfg("train", tmp_path, [*TINY_DATA, "logger=csv", override], data_dir=data_dir)
    if override.startswith("data.root"):
        with open_dict(cfg):
            cfg.data.synthetic = None
            cfg.data.root = "/nonexistent/videos"
    with pytest.raises(SystemExit) as exc:
        run_entry_point(train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
