"""VideoMAE and TimeSformer as vidxai networks: the transformers forward, the clip geometry checks, and loading
pretrained folders offline (tiny random models written here with ``save_pretrained``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_DATA, compose_cfg
from transformers import (
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
)

from vidxai.errors import ConfigError, MissingPathError
from vidxai.models import TimeSformer, VideoClassifier, VideoMAE, build_network, check_network
from vidxai.models.hf_video import pretrained_folder
from vidxai.pipelines._common import run_entry_point
from vidxai.pipelines.train import train

#: The tiny architecture of each network (4 frames of 16x16, one block), as vidxai arguments.
TINY = {
    "videomae": dict(num_frames=4, image_size=16, patch_size=8, tubelet_size=2, hidden_size=16, num_layers=1,
                     num_heads=2, intermediate_size=32),
    "timesformer": dict(num_frames=4, image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2,
                        intermediate_size=32),
}
HF = {"videomae": (VideoMAEConfig, VideoMAEForVideoClassification, VideoMAE),
      "timesformer": (TimesformerConfig, TimesformerForVideoClassification, TimeSformer)}
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
#: The data config a tiny pretrained folder (4 frames of 16x16, ImageNet normalisation) fits.
FITTING_DATA = {"num_frames": 4, "size": [16, 16], "crop_size": 16, "mean": IMAGENET["image_mean"],
                "std": IMAGENET["image_std"]}


def _save_pretrained(folder: Path, arch: str, num_labels: int = 7, seed: int = 0, preprocessor: bool = True) -> Path:
    """A random tiny transformers classifier of ``arch`` saved with ``save_pretrained`` (plus a preprocessor)."""
    config_cls, model_cls, _ = HF[arch]
    kw = dict(TINY[arch])
    hf_kw = dict(num_frames=kw.pop("num_frames"), image_size=kw.pop("image_size"), patch_size=kw.pop("patch_size"),
                 hidden_size=kw.pop("hidden_size"), num_hidden_layers=kw.pop("num_layers"),
                 num_attention_heads=kw.pop("num_heads"), intermediate_size=kw.pop("intermediate_size"), **kw)
    torch.manual_seed(seed)
    model_cls(config_cls(**hf_kw, num_labels=num_labels)).save_pretrained(folder)
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, **IMAGENET}))
    return folder


def _clip(arch: str, batch: int = 2) -> torch.Tensor:
    t, s = TINY[arch]["num_frames"], TINY[arch]["image_size"]
    return torch.randn(batch, t, 3, s, s, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- built from arguments
@pytest.mark.parametrize("arch", sorted(TINY))
def test_forward_is_the_transformers_classifier(arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch, num_classes=3, **TINY[arch]).eval()
    assert isinstance(net, HF[arch][2]) and isinstance(net.hf, HF[arch][1])
    assert net.hf.config.num_hidden_layers == 1 and net.hf.config.hidden_size == 16 and net.hf.config.num_labels == 3
    x = _clip(arch)
    logits = net(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, net.hf(pixel_values=x).logits, rtol=0, atol=0)
    # the clips are seen as clips: reversing the frame order changes the logits
    assert not torch.allclose(logits, net(x.flip(1)), atol=1e-6)


def test_videomae_takes_non_square_clips() -> None:
    net = VideoMAE(3, **{**TINY["videomae"], "image_size": [16, 24]})
    assert net.image_size == (16, 24) and net(torch.zeros(1, 4, 3, 16, 24)).shape == (1, 3)


def test_videomae_sdpa_and_eager_give_the_same_logits() -> None:
    torch.manual_seed(0)
    sdpa = VideoMAE(3, **TINY["videomae"], attn_implementation="sdpa").eval()
    eager = VideoMAE(3, **TINY["videomae"], attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.hf.config._attn_implementation == "sdpa" and eager.hf.config._attn_implementation == "eager"
    torch.testing.assert_close(sdpa(_clip("videomae")), eager(_clip("videomae")), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("arch", "change", "needle"), [
    ("videomae", {"image_size": 20}, "data.crop_size=20 is not a multiple of model.net.patch_size=8"),
    ("videomae", {"num_frames": 3}, "data.num_frames=3 is not a multiple of model.net.tubelet_size=2"),
    ("timesformer", {"hidden_size": 18, "num_heads": 4}, "hidden_size=18 is not a multiple of model.net.num_heads=4"),
    ("timesformer", {"image_size": None}, "set data.crop_size"),
    ("timesformer", {"image_size": [16, 24]}, "takes square frames only"),
    ("timesformer", {"attn_implementation": "sdpa"}, "supports eager"),
    ("videomae", {"attn_implementation": "flash"}, "supports sdpa or eager"),
    ("videomae", {"dropout": 1.5}, "model.net.dropout must be in [0, 1)"),
])
def test_bad_geometry_is_one_clear_error(arch: str, change: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_network(arch, num_classes=3, **{**TINY[arch], **change})
    assert needle in str(err.value)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_a_clip_of_another_geometry_is_one_error_naming_the_keys(arch: str) -> None:
    net = build_network(arch, num_classes=3, **TINY[arch])
    for bad in (torch.zeros(1, 5, 3, 16, 16), torch.zeros(1, 4, 3, 24, 24)):
        with pytest.raises(ConfigError, match=r"make clips with data.num_frames=4 data.crop_size=16"):
            net(bad)


def test_the_model_configs_follow_the_data_config() -> None:
    """The yaml interpolates frames and size from data; an explicit override that disagrees is refused early."""
    data = {"num_frames": 4, "crop_size": 16, "size": [20, 20]}
    check_network("videomae", data=data, **TINY["videomae"])
    with pytest.raises(ConfigError, match=r"model.net.num_frames=4 but data.num_frames=8: .* set data.num_frames=4"):
        check_network("videomae", data={**data, "num_frames": 8}, **TINY["videomae"])
    with pytest.raises(ConfigError, match=r"model.net.image_size=16 but data.crop_size=\[12, 12\]"):
        check_network("timesformer", data={**data, "crop_size": [12, 12]}, **TINY["timesformer"])
    with pytest.raises(ConfigError, match="set data.crop_size"):
        check_network("timesformer", data={**data, "crop_size": None}, **TINY["timesformer"])
    cfg = compose_cfg("train", Path("/tmp"), ["model=videomae", "data.num_frames=6", "data.crop_size=24"])
    assert cfg.model.net.num_frames == 6 and cfg.model.net.image_size == 24


# ----------------------------------------------------------------------------- pretrained folders
@pytest.mark.parametrize("arch", sorted(TINY))
def test_pretrained_folder_loads_the_weights_and_replaces_the_classifier(arch: str, tmp_path: Path) -> None:
    folder = _save_pretrained(tmp_path / "ckpt", arch, num_labels=3)
    saved = HF[arch][1].from_pretrained(folder, local_files_only=True).state_dict()
    # the architecture comes from the folder: the (different) arguments are ignored
    net = build_network(arch, num_classes=3, hidden_size=64, num_layers=4, pretrained=str(folder))
    state = net.hf.state_dict()
    assert net.hf.config.hidden_size == 16 and net.hf.config.num_hidden_layers == 1
    body = [k for k in saved if not k.startswith(("classifier.", "fc_norm."))]
    assert len(body) > 10 and set(body) <= set(state)
    for key in body:
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0, msg=key)
    # a new classifier even with as many classes as the checkpoint
    assert net.hf.classifier.out_features == 3
    assert not torch.equal(state["classifier.weight"], saved["classifier.weight"])
    assert torch.count_nonzero(state["classifier.bias"]) == 0
    # from_pretrained hands back eval mode; fine-tuning must start with dropout on, like a fresh network
    assert all(m.training for m in net.modules())
    net2 = build_network(arch, num_classes=5, pretrained=str(folder))
    assert net2.hf.classifier.weight.shape == (5, 16) and net2(_clip(arch)).shape == (2, 5)


def test_hugging_face_cache_layouts_are_found_offline(tmp_path: Path, monkeypatch) -> None:
    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny-videomae"
    snapshot = _save_pretrained(repo / "snapshots" / "0123abc", "videomae")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert pretrained_folder(snapshot) == snapshot
    assert pretrained_folder(repo) == snapshot
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    assert pretrained_folder("org/tiny-videomae") == snapshot
    net = build_network("videomae", num_classes=2, pretrained="org/tiny-videomae")
    assert net.hf.config.hidden_size == 16
    with pytest.raises(MissingPathError, match="model.net.pretrained=org/not-cached: no such folder, and no such"):
        pretrained_folder("org/not-cached")


def _incompatible(tmp_path: Path) -> dict[str, tuple[Path, str, type]]:
    timesformer = _save_pretrained(tmp_path / "tsf", "timesformer")
    no_weights = _save_pretrained(tmp_path / "no_weights", "videomae")
    (no_weights / "model.safetensors").unlink()
    no_config = _save_pretrained(tmp_path / "no_config", "videomae")
    (no_config / "config.json").unlink()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return {
        "missing": (tmp_path / "nope", "no such folder", MissingPathError),
        "other_arch": (timesformer, "holds a 'timesformer' checkpoint, not 'videomae' (model=videomae): use "
                       "model=timesformer", ConfigError),
        "not_video": (bert, "holds a 'bert' checkpoint, not 'videomae'", ConfigError),
        "no_weights": (no_weights, "has a config.json but no weights", ConfigError),
        "no_config": (no_config, "has no config.json", ConfigError),
    }


def test_incompatible_folders_are_refused_before_the_model(tmp_path: Path) -> None:
    for case, (folder, needle, kind) in _incompatible(tmp_path).items():
        with pytest.raises(kind) as err:
            check_network("videomae", pretrained=str(folder), **TINY["videomae"])
        assert needle in str(err.value), case


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    corrupt = _save_pretrained(tmp_path / "corrupt", "videomae")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot load the VideoMAE weights"):
        VideoMAE(3, pretrained=str(corrupt))
    reshaped = _save_pretrained(tmp_path / "reshaped", "videomae")
    config = json.loads((reshaped / "config.json").read_text())
    (reshaped / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(ConfigError, match=r"does not fit VideoMAEForVideoClassification: .*shapes \[.*intermediate"):
        VideoMAE(3, pretrained=str(reshaped))


def test_the_data_config_is_checked_against_the_checkpoint(tmp_path: Path) -> None:
    folder = _save_pretrained(tmp_path / "ckpt", "timesformer")
    check_network("timesformer", data=FITTING_DATA, pretrained=str(folder))
    data = {"num_frames": 8, "size": [12, 12], "crop_size": 12, "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(ConfigError) as err:
        check_network("timesformer", data=data, pretrained=str(folder))
    assert ("set data.num_frames=4 data.crop_size=16 data.size=[16,16] (or larger) data.mean=[0.485,0.456,0.406] "
            "data.std=[0.229,0.224,0.225]") in str(err.value)
    # without a preprocessor file only the geometry can be checked
    (folder / "preprocessor_config.json").unlink()
    check_network("timesformer", data={**FITTING_DATA, "mean": [0.5] * 3}, pretrained=str(folder))


def test_a_fine_tuned_pretrained_model_rebuilds_without_its_folder(tmp_path: Path) -> None:
    folder = _save_pretrained(tmp_path / "ckpt", "videomae", num_labels=9)
    module = VideoClassifier(net={"arch": "videomae", **TINY["videomae"], "pretrained": str(folder)}, num_classes=2)
    net_hparams = module.hparams["net"]
    assert net_hparams["pretrained"] is None and net_hparams["hf_config"]["model_type"] == "videomae"
    shutil.rmtree(folder)
    rebuilt = VideoClassifier(net=net_hparams, num_classes=2)
    rebuilt.load_state_dict(module.state_dict())  # strict: the same architecture
    module.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(_clip("videomae")), module(_clip("videomae")), rtol=0, atol=0)


# ----------------------------------------------------------------------------- through train.py
def _refuse_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded a video or built a model before the config error was reported")

    monkeypatch.setattr("vidxai.data.manifest.probe_all", refuse)
    monkeypatch.setattr("vidxai.pipelines.train.build_model", refuse)


@pytest.mark.parametrize("case", ["missing", "other_arch", "no_weights", "data", "override"])
def test_pretrained_errors_are_one_line_exit_2_before_any_video(case: str, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    if case in ("data", "override"):
        folder = _save_pretrained(tmp_path / "ckpt", "videomae")
        extra, needle = {"data": ([f"model.net.pretrained={folder}"], "set data.crop_size=16 data.mean=[0.485"),
                         "override": (["model.net.num_frames=16"], "model.net.num_frames=16 but data.num_frames=4")
                         }[case]
    else:
        folder, needle, _ = _incompatible(tmp_path)[case]
        extra = [f"model.net.pretrained={folder}"]
    _refuse_decoding(monkeypatch)
    cfg = compose_cfg("train", tmp_path, [*TINY_DATA, "logger=csv", "model=videomae", *extra],
                      data_dir=tmp_path / "data")
    capsys.readouterr()  # save_pretrained's progress bar
    with pytest.raises(SystemExit) as exc:
        run_entry_point(train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_train_py_with_a_missing_folder_exits_2_with_one_line(tmp_path: Path, cli) -> None:
    proc = cli("train.py", "model=timesformer", "logger=none", f"paths.data_dir={tmp_path / 'data'}",
               f"model.net.pretrained={tmp_path / 'nope'}", cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith(f"error: model.net.pretrained={tmp_path / 'nope'}: no such folder")
    assert not (tmp_path / "data").exists()  # nothing generated or decoded


@pytest.mark.slow
def test_fine_tune_a_pretrained_folder_through_train(tmp_path: Path, data_dir: Path) -> None:
    """One tiny epoch from a saved folder; the best checkpoint reloads after the folder is gone."""
    folder = _save_pretrained(tmp_path / "ckpt", "timesformer")
    overrides = [*TINY_DATA, "data.size=[16,16]", "data.crop_size=16", "data.mean=[0.485,0.456,0.406]",
                 "data.std=[0.229,0.224,0.225]", "trainer=cpu", "trainer.max_epochs=1", "logger=csv",
                 "callbacks.explanation.every_n_epochs=0", "model=timesformer", f"model.net.pretrained={folder}"]
    cfg = compose_cfg("train", tmp_path, overrides, data_dir=data_dir)
    assert train(cfg) is not None
    shutil.rmtree(folder)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    restored = VideoClassifier.load_from_checkpoint(best, weights_only=True)
    assert isinstance(restored.net, TimeSformer) and restored.net.hf.config.num_labels == 2
    assert restored.hparams["net"]["hf_config"]["hidden_size"] == 16


# ----------------------------------------------------------------------------- ViViT, V-JEPA 2, VideoPrism
#: the three table-driven networks, tiny (4 frames of 16x16, one block), as vidxai arguments
TINY_NEW = {arch: dict(num_frames=4, image_size=16, patch_size=8, tubelet_size=1 if arch == "videoprism" else 2,
                       hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
            for arch in ("vivit", "vjepa2", "videoprism")}


@pytest.mark.parametrize("arch", sorted(TINY_NEW))
def test_new_networks_forward_is_the_transformers_classifier(arch: str) -> None:
    import transformers

    from vidxai.models import NETWORKS

    torch.manual_seed(0)
    net = build_network(arch, num_classes=3, **TINY_NEW[arch]).eval()
    name = {"vivit": "VivitForVideoClassification", "vjepa2": "VJEPA2ForVideoClassification",
            "videoprism": "VideoPrismForVideoClassification"}[arch]
    assert isinstance(net, NETWORKS[arch]) and isinstance(net.hf, getattr(transformers, name))
    x = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    logits = net(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, net.hf(**{net.input_name: x}).logits.reshape(2, 3), rtol=0, atol=0)
    assert not torch.allclose(logits, net(x.flip(1)), atol=1e-6)  # frame order matters
    with pytest.raises(ConfigError, match=r"make clips with data.num_frames=4 data.crop_size=16"):
        net(torch.zeros(1, 5, 3, 16, 16))


@pytest.mark.parametrize("arch", sorted(TINY_NEW))
def test_new_networks_load_a_pretrained_folder_offline(arch: str, tmp_path: Path) -> None:
    from vidxai.models import NETWORKS

    cls = NETWORKS[arch]
    config_cls, model_cls = cls._hf_classes()
    arch_kw = dict(TINY_NEW[arch])
    hf_kw = cls.hf_kwargs(dict(num_frames=arch_kw["num_frames"], image_size=arch_kw["image_size"],
                               patch_size=arch_kw["patch_size"], tubelet_size=arch_kw["tubelet_size"],
                               hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    torch.manual_seed(0)
    folder = tmp_path / arch
    model_cls(config_cls(**hf_kw, num_labels=7)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, **IMAGENET}))
    saved = model_cls.from_pretrained(folder, local_files_only=True).state_dict()
    check_network(arch, data=FITTING_DATA, pretrained=str(folder))
    with pytest.raises(ConfigError, match="set data.num_frames=4"):
        check_network(arch, data={**FITTING_DATA, "num_frames": 8}, pretrained=str(folder))
    net = build_network(arch, num_classes=3, hidden_size=64, pretrained=str(folder))
    state = net.hf.state_dict()
    body = [k for k in saved if not k.startswith(cls.new_head_prefixes)]
    assert len(body) > 10 and all(torch.equal(state[k], saved[k]) for k in body)
    assert net.hf.classifier.out_features == 3 and net(_clip("videomae")).shape == (2, 3)
    other = "videomae" if arch != "videomae" else "vivit"
    with pytest.raises(ConfigError, match=f"use model={arch}"):
        check_network(other, pretrained=str(folder))


@pytest.mark.parametrize("arch", ["timesformer", "vivit", "videoprism"])
def test_learned_position_tables_start_sinusoidal_from_scratch_only(arch: str, tmp_path: Path) -> None:
    """Trained from scratch, the learned position tables that transformers starts at (about) zero start as the
    sinusoidal table (without it ViViT reached 0.50 and VideoPrism 0.125 test accuracy on the embedded data); a
    network loaded from a pretrained folder keeps the weights it is given."""
    from vidxai.models import NETWORKS
    from vidxai.models.hf_video import sinusoid_table

    kw = {**TINY, **TINY_NEW}[arch]
    net = build_network(arch, num_classes=3, **kw)
    (name,) = NETWORKS[arch].sinusoid_init
    table = net.hf.get_parameter(name)
    assert table.requires_grad  # still learned
    torch.testing.assert_close(table.detach()[0], sinusoid_table(table.shape[1], table.shape[2]))
    with torch.no_grad():
        table.fill_(0.5)
    net.hf.save_pretrained(tmp_path / arch)
    loaded = build_network(arch, num_classes=3, pretrained=str(tmp_path / arch))
    assert bool((loaded.hf.get_parameter(name) == 0.5).all())
