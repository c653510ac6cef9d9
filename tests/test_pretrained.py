"""Explaining a model the user already has (``pretrained=``; :mod:`vidxai.pretrained`), without downloads.

Tiny ``save_pretrained`` folders (VideoMAE, TimeSformer; ViViT, V-JEPA 2, VideoPrism loaded and explained) with
processor configs and ``id2label`` and torchvision builders with random weights saved to a ``.pth`` are written
here, as are the clips. Two command lines run whole
(one per kind of source); the modes, the Python API and the bad inputs run in-process. Of the torchvision zoo,
r2plus1d_18 (loaded, explained), mc3_18 (the command line), s3d and swin3d_t (loaded, one tiny forward) are loaded
here; the others share these loading paths (the MViTs: loading tried by hand, 20 s a model on this CPU).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_cfg, make_video
from transformers import (
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForPreTraining,
    VideoMAEForVideoClassification,
)

from vidxai.errors import ConfigError, MissingPathError, UserError
from vidxai.pretrained import Preprocess, load_for_explain, load_pretrained
from vidxai.xai import VideoLRP

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["archery", "bowling", "juggling balls", "playing drums", "yoga"]
TINY = dict(num_frames=4, image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32)
VIDEO_PROCESSOR = {"do_resize": True, "size": {"shortest_edge": 16}, "do_center_crop": True,
                   "crop_size": {"height": 16, "width": 16}, "do_rescale": True, "rescale_factor": 1 / 255,
                   "do_normalize": True, "image_mean": [0.45, 0.45, 0.45], "image_std": [0.225, 0.225, 0.225]}


def _videomae(folder: Path, processor: bool = True, cls: type = VideoMAEForVideoClassification) -> Path:
    config = VideoMAEConfig(**TINY, tubelet_size=2, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                            label2id={name: i for i, name in enumerate(LABELS)})
    torch.manual_seed(0)
    cls(config).save_pretrained(folder)
    if processor:
        (folder / "video_preprocessor_config.json").write_text(json.dumps(VIDEO_PROCESSOR))
    return folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _videomae(tmp_path_factory.mktemp("hf") / "tiny-videomae")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three unlabelled clips of 10 frames (24 x 32, 8 fps) and a two-frame clip, in one folder."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        make_video(root / f"clip{i}.mp4", num_frames=10, size=(24, 32), seed=i)
    make_video(root / "short" / "two.mp4", num_frames=2, size=(24, 32), seed=5)
    return root


@functools.cache
def _torchvision_weights(builder: str, folder: str) -> Path:
    """torchvision's ``builder`` with random weights, its state dict saved to ``<folder>/<builder>.pth``."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    path = Path(folder) / f"{builder}.pth"
    torch.save(tvm.get_model(builder, weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("weights"))


# ----------------------------------------------------------------------------------------- Hugging Face
def test_a_save_pretrained_folder_loads_as_it_is_and_explains_in_three_lines(hf_folder: Path, clips: Path) -> None:
    model, preprocess, labels, report = load_pretrained(hf_folder)
    saved = VideoMAEForVideoClassification.from_pretrained(hf_folder)
    assert type(model) is VideoMAEForVideoClassification and not model.training
    assert labels == LABELS  # its own head and label names, not replaced
    torch.testing.assert_close(model.classifier.weight, saved.classifier.weight, rtol=0, atol=0)
    assert (preprocess.num_frames, preprocess.resize, preprocess.crop_size, preprocess.frame_rate) == (4, 16, (16, 16),
                                                                                                       None)
    np.testing.assert_allclose(preprocess.mean, [0.45] * 3)
    block = report.block()
    assert "config.json id2label" in block and "video_preprocessor_config.json" in block
    assert "model.safetensors" in block
    # the three lines of the README
    x = preprocess.read(clips / "clip0.mp4")
    assert x.shape == (1, 4, 3, 16, 16)  # (B, T, C, H, W): the layout transformers takes
    lrp = VideoLRP(model)
    relevance = lrp.attribute(x)
    assert relevance.shape == x.shape and lrp.layout == "BTCHW" and float(relevance.abs().sum()) > 0
    e = lrp.explain(x)
    torch.testing.assert_close(e.logits, model(pixel_values=x).logits[0].detach(), rtol=1e-5, atol=1e-6)
    assert e.target == int(e.logits.argmax())


def test_a_timesformer_folder_with_its_own_rescale_and_a_cache_snapshot_by_repo_id(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """The rescale (here ViViT-style: x / 127.5 - 1) is folded into mean/std; a repo id is found in the local cache
    (refs/main -> its snapshot) and nothing is downloaded."""
    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny-timesformer"
    snapshot = repo / "snapshots" / "0123abc"
    config = TimesformerConfig(**TINY, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                               label2id={"a": 0, "b": 1, "c": 2})
    torch.manual_seed(1)
    TimesformerForVideoClassification(config).save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": 20, "width": 20}, "crop_size": 16, "rescale_factor": 1 / 127.5, "offset": True,
        "do_normalize": False}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    model, pre, labels, report = load_pretrained("org/tiny-timesformer")
    assert type(model) is TimesformerForVideoClassification and labels == ["a", "b", "c"]
    assert pre.resize == (20, 20) and pre.crop_size == (16, 16)
    video = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    expected = video[..., 2:18, 2:18].float() / 127.5 - 1.0  # what the processor computes: x * rescale - offset
    torch.testing.assert_close(pre.frames_to_input(video)[0], expected, rtol=1e-5, atol=1e-5)
    assert str(snapshot) in report.block()


def test_a_missing_processor_config_says_which_defaults_were_used(tmp_path: Path) -> None:
    folder = _videomae(tmp_path / "bare", processor=False)
    _, pre, _, report = load_pretrained(folder)
    assert pre.resize == 16 and pre.crop_size == (16, 16)
    np.testing.assert_allclose(pre.mean, [0.485, 0.456, 0.406])
    assert any("no video_preprocessor_config.json or preprocessor_config.json: used resize shortest_edge=16" in n
               and "ImageNet mean/std" in n for n in report.notes)


#: the other transformers classifiers vidxai explains, tiny: config class, model class, their own arguments
OTHER_HF = {
    "Vivit": ("VivitConfig", dict(num_frames=4, image_size=16, tubelet_size=[2, 8, 8])),
    "VJEPA2": ("VJEPA2Config", dict(frames_per_clip=4, crop_size=16, patch_size=8, tubelet_size=2, pred_hidden_size=16,
                                    pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1)),
    "VideoPrism": ("VideoPrismVisionConfig", dict(num_frames=4, image_size=16, tubelet_size=[1, 8, 8],
                                                  num_spatial_layers=1, num_temporal_layers=1)),
}


@pytest.mark.parametrize("name", sorted(OTHER_HF))
def test_vivit_vjepa2_and_videoprism_folders_are_explained_as_they_are(name: str, tmp_path: Path, clips: Path) -> None:
    """pretrained= takes every architecture vidxai explains, not only VideoMAE and TimeSformer: its labels, the
    frame count from its own config (V-JEPA 2: frames_per_clip), the clip in its layout, relevance shaped like it."""
    import transformers

    config_name, kwargs = OTHER_HF[name]
    config = getattr(transformers, config_name)(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=32, num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                                label2id={"a": 0, "b": 1, "c": 2}, **kwargs)
    torch.manual_seed(0)
    getattr(transformers, f"{name}ForVideoClassification")(config).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 16},
                                                                   "crop_size": {"height": 16, "width": 16}}))
    ck = load_for_explain(str(tmp_path))  # refused here if VideoLRP could not explain it
    assert ck.class_names == ["a", "b", "c"] and ck.transform.num_frames == 4
    x = ck.transform.read(clips / "clip0.mp4")
    lrp = VideoLRP(ck.model)
    relevance = lrp.attribute(x)
    assert x.shape == relevance.shape == (1, 4, 3, 16, 16) and float(relevance.abs().sum()) > 0
    e = lrp.explain(x)  # the model's own logits, its predicted class explained
    torch.testing.assert_close(e.logits, ck.model(**{_input_keyword(ck.model): x}).logits.reshape(-1).detach(),
                               rtol=1e-5, atol=1e-6)
    assert e.target == int(e.logits.argmax())


def _input_keyword(model: torch.nn.Module) -> str:
    """The forward keyword of a transformers video classifier (VideoPrism, V-JEPA 2: pixel_values_videos)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "pixel_values_videos" if "pixel_values_videos" in params else "pixel_values"


# ----------------------------------------------------------------------------------------- torchvision
def test_torchvision_r2plus1d_loads_with_kinetics_labels_and_preprocessing(weights_dir: str) -> None:
    import torchvision.models as tvm
    from torchvision.models.video import R2Plus1D_18_Weights

    path = _torchvision_weights("r2plus1d_18", weights_dir)
    model, pre, labels, report = load_pretrained("torchvision:r2plus1d_18", weights=path)
    enum = R2Plus1D_18_Weights.KINETICS400_V1
    assert labels == enum.meta["categories"] and len(labels) == 400
    torch.testing.assert_close(model.fc.weight, torch.load(path, weights_only=True)["fc.weight"], rtol=0, atol=0)
    assert (pre.num_frames, pre.frame_rate, pre.layout, pre.resize, pre.crop_size) == (16, 15.0, "BCTHW", (128, 171),
                                                                                     (112, 112))
    # the clip torchvision's own transforms make from the same frames (frames as floats: no rounding apart)
    video = torch.randint(0, 256, (4, 3, 90, 120), dtype=torch.uint8)
    torch.testing.assert_close(pre.frames_to_input(video)[0], enum.transforms()(video), rtol=1e-5, atol=1e-4)
    assert "R2Plus1D_18_Weights.KINETICS400_V1.meta['categories']" in report.block()
    # the raw model is explained in its own layout; the logits are the model's
    x = torch.randn(1, 3, 4, 16, 16)
    lrp = VideoLRP(model, "epsilon")
    e = lrp.explain(x)
    torch.testing.assert_close(e.logits, model(x)[0].detach(), rtol=1e-4, atol=1e-5)
    assert lrp.attribute(x).shape == x.shape
    assert isinstance(tvm.get_model_weights("r2plus1d_18").KINETICS400_V1.url, str)


def test_torchvision_sampling_at_its_frame_rate_from_the_middle() -> None:
    pre = Preprocess(16, frame_rate=15)
    idx, how = pre.frame_indices(300, 30.0)  # 10 s at 30 fps: 16 frames every second frame around the middle
    assert np.all(np.diff(idx) == 2) and idx[0] == (300 - 32) // 2 and "from the middle" in how
    idx, how = pre.frame_indices(5, 30.0)
    assert len(idx) == 16 and "frames repeated" in how and "spread uniformly" in how


@pytest.mark.parametrize("builder", ["s3d", "swin3d_t"])
def test_more_of_the_torchvision_zoo_loads(builder: str, weights_dir: str) -> None:
    path = _torchvision_weights(builder, weights_dir)
    model, pre, labels, _ = load_pretrained(f"torchvision:{builder}", weights=path)
    assert len(labels) == 400 and pre.layout == "BCTHW"
    assert pre.num_frames == {"s3d": 128, "swin3d_t": 32}[builder]  # clip_len of its docs
    if builder == "swin3d_t":  # one forward where affordable (s3d takes >= 14 x 224 x 224)
        assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 400)
    if builder != "s3d":  # the attention models load; explaining them is the transformer engine's
        try:
            load_for_explain(f"torchvision:{builder}", str(path))
        except ConfigError as err:
            assert "loads, but VideoLRP cannot explain" in str(err) and "\n" not in str(err)


# ----------------------------------------------------------------------------------------- bad input
def test_bad_sources_are_one_line_each(tmp_path: Path, hf_folder: Path, weights_dir: str) -> None:
    no_weights = _videomae(tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    no_config = _videomae(tmp_path / "no_config")
    (no_config / "config.json").unlink()
    backbone = _videomae(tmp_path / "backbone", cls=VideoMAEForPreTraining)
    r2p1d = _torchvision_weights("r2plus1d_18", weights_dir)
    cases = [
        ((str(tmp_path / "nope"),), MissingPathError, "no such folder, and no such repo in the local Hugging Face"),
        ((str(no_weights),), ConfigError, "has a config.json but no weights"),
        ((str(no_config),), ConfigError, "has no config.json"),
        ((str(backbone),), ConfigError, "a backbone without its trained classifier"),
        (("torchvision:r2plus1d_18",), ConfigError, "needs weights=<file.pth>: vidxai never downloads; fetch "
                                                    "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"),
        (("torchvision:r3d_18", str(r2p1d)), ConfigError, "do not fit torchvision's r3d_18: first mismatching key "
                                                          "'stem.0.weight' (shape"),
        (("torchvision:r2plus1d", str(r2p1d)), ConfigError, "did you mean r2plus1d_18?"),
        ((str(hf_folder), str(r2p1d)), ConfigError, "drop weights="),
    ]
    for args, kind, needle in cases:
        with pytest.raises(kind) as err:
            load_pretrained(*args)
        assert needle in str(err.value) and "\n" not in str(err.value), args
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ConfigError, match="cannot be read safely"):
        load_pretrained("torchvision:r2plus1d_18", weights=evil)


def test_an_architecture_vidxai_cannot_explain_is_named(weights_dir: str, monkeypatch) -> None:
    """Refused after loading, before any video: the model type, what it does not know and what vidxai explains."""
    from torchvision.models.video import VideoResNet

    from vidxai.models import foreign

    monkeypatch.delitem(foreign._TV_STAGES, VideoResNet)  # as if vidxai had no stages for it
    with pytest.raises(ConfigError, match=r"pretrained=torchvision:r2plus1d_18 loads, but VideoLRP cannot explain "
                                          r"VideoResNet yet: .*vidxai explains vidxai's networks"):
        load_for_explain("torchvision:r2plus1d_18", str(_torchvision_weights("r2plus1d_18", weights_dir)))


def _run(cfg) -> None:  # noqa: ANN001
    from vidxai.pipelines._common import run_entry_point
    from vidxai.pipelines.explain import explain_entry

    return run_entry_point(explain_entry, cfg)


def test_bad_command_lines_are_one_error_line_exit_2(tmp_path: Path, hf_folder: Path, clips: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    src = f"pretrained={hf_folder}"
    cases = {
        "both": ([src, "ckpt=x.ckpt", f"video={clips}/clip0.mp4"], "pass either ckpt= (a train.py checkpoint) or "
                                                                   "pretrained="),
        "target": ([src, f"video={clips}/clip0.mp4", "target=yogga"], "no such label (closest: 'yoga')"),
        "not_video": ([src, f"video={not_video}"], f"cannot decode video {not_video}"),
        "split": ([src, "split=test"], "a pretrained= model has none"),
        "no_videos": ([src, "mode=profile"], "pass videos=<folder or glob>"),
        "glob": ([src, "mode=evaluate", f"videos={tmp_path}/*.avi"], "no file matches"),
    }
    for name, (args, needle) in cases.items():
        cfg = compose_cfg("explain", tmp_path / name, ["logger=none", *args])
        with pytest.raises(SystemExit) as exc:
            _run(cfg)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2, name
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], (name, err)


def test_a_source_the_file_system_refuses_is_one_line_before_the_heavy_imports(
        tmp_path: Path, hf_folder: Path, clips: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """explain.py's command-line check (run before torch and transformers are imported) refuses a missing folder, a
    folder without config.json or weights, a repo id not in the local cache and a missing weights= file, as the
    loader would."""
    from vidxai.pipelines._common import EXPLAIN_ALIASES, prepare_command_line
    from vidxai.pipelines.command_line import check_explain

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    video = f"video={clips}/clip0.mp4"
    cases = [
        ([f"pretrained={tmp_path}/nope", video], "no such folder, and no such repo in the local Hugging Face cache"),
        ([f"pretrained={clips}", video], "has no config.json"),
        ([f"pretrained={no_weights}", video], "has a config.json but no weights"),
        (["pretrained=torchvision:r2plus1d_18", f"weights={tmp_path}/nope.pth", video], "nope.pth: no such file"),
    ]
    for args, needle in cases:
        monkeypatch.setattr(sys, "argv", ["explain.py", *args])
        with pytest.raises(SystemExit) as exc:
            prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES, check_explain)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(lines) == 1 and needle in lines[0], (args, lines)
    monkeypatch.setattr(sys, "argv", ["explain.py", "pretrained=org/not-cached", video])
    with pytest.raises(SystemExit):  # a repo id not in the local cache (huggingface_hub only; nothing downloaded)
        prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES, check_explain)
    assert "pretrained=org/not-cached: no such folder, and no such repo" in capsys.readouterr().err
    for source in (str(hf_folder),):
        monkeypatch.setattr(sys, "argv", ["explain.py", f"pretrained={source}", video])
        prepare_command_line(ROOT / "conf", "explain", EXPLAIN_ALIASES, check_explain)


def test_a_short_video_is_sampled_with_repeats_and_says_so(hf_folder: Path, clips: Path, caplog) -> None:
    _, pre, _, _ = load_pretrained(hf_folder)
    video, idx, _, how = pre.read_frames(clips / "short" / "two.mp4")
    assert video.shape[0] == 4 and idx.tolist() == [0, 0, 1, 1]
    assert "frames repeated" in how and "two.mp4" in caplog.text
    with pytest.raises(UserError, match="video not found"):
        pre.read_frames(clips / "missing.mp4")


# ----------------------------------------------------------------------------------------- the modes
def test_profile_and_evaluate_over_a_folder_of_unlabelled_clips(tmp_path: Path, hf_folder: Path, clips: Path) -> None:
    cfg = compose_cfg("explain", tmp_path / "profile", ["logger=none", f"pretrained={hf_folder}", f"videos={clips}",
                                                        "profile.n_boot=50"])
    prof = _run(cfg)
    assert prof["videos"] == 4 and prof["unlabelled"] == 4 and "accuracy" not in prof
    rows = json.loads((tmp_path / "profile" / "run" / "videos.json").read_text())
    assert {r["label"] for r in rows} == {None} and all(r["target"] == r["prediction"] for r in rows)
    assert all(r["prediction"] in LABELS for r in rows)
    cfg = compose_cfg("explain", tmp_path / "evaluate", [
        "logger=none", f"pretrained={hf_folder}", f"videos={clips}/clip*.mp4", "mode=evaluate",
        "methods=[epsilon,saliency]", "n_boot=50", "mprt.videos=0", "mprt.final_videos=0"])
    result = _run(cfg)
    assert sorted(result["settings"]["video_files"]) == [str(clips / f"clip{i}.mp4") for i in range(3)]
    assert set(result["methods"]) == {"epsilon", "saliency"}
    left_out = {k: m["left_out"] for k, m in result["metrics"].items() if m.get("left_out")}
    assert "no actor boxes" in left_out["mass_accuracy"] and "no temporal evidence" in left_out["temporal_accuracy"]
    assert "frame_aopc_morf" not in left_out


def test_compare_explains_the_target_by_label(tmp_path: Path, hf_folder: Path, clips: Path) -> None:
    cfg = compose_cfg("explain", tmp_path, ["logger=none", f"pretrained={hf_folder}", f"video={clips}/clip1.mp4",
                                            "compare=[z,epsilon]", "target=yoga"])
    summary = _run(cfg)
    assert summary["target"] == {"index": 4, "class": "yoga"} and summary["pretrained"] == str(hf_folder)
    assert summary["compare"]["rules"] == ["z", "epsilon"] and (tmp_path / "run" / "compare.png").is_file()
    assert set(summary["probabilities"]) == set(LABELS)


# ----------------------------------------------------------------------------------------- the command line
def _explain_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "explain.py"), f"hydra.run.dir={cwd}/out", "logger=none", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kind", ["huggingface", "torchvision"])
def test_the_command_line_on_each_kind_of_source(kind: str, tmp_path: Path, hf_folder: Path, clips: Path,
                                                 weights_dir: str) -> None:
    if kind == "huggingface":
        args = [f"pretrained={hf_folder}"]
    else:
        args = ["pretrained=torchvision:mc3_18", f"weights={_torchvision_weights('mc3_18', weights_dir)}"]
    proc = _explain_cli(*args, f"video={clips}/clip2.mp4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("pretrained ") == 1 and ("config.json id2label" if kind == "huggingface" else
                                             "MC3_18_Weights.KINETICS400_V1.meta['categories']") in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    pred = summary["prediction"]
    assert f"predicted {pred['class']} with probability {pred['probability']:.2f}" in out
    assert "top-5: " in out and "Loading weights" not in out + proc.stderr
    assert summary["true"] is None
