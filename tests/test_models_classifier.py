"""Tests of VideoClassifier (training, K-clip averaging, checkpoints) and the test-figures callback."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vidxai.callbacks import ClassificationFiguresCallback
from vidxai.models import VGG16LSTM, ConvLSTM, VideoClassifier

NUM_CLASSES, T, SIZE = 3, 4, 32
CLASS_NAMES = ["walk", "run", "jump"]
PREPROCESS = {
    "num_frames": T, "size": [SIZE, SIZE], "crop_size": None, "mean": [0.45] * 3, "std": [0.225] * 3
}  # fmt: skip
CONVLSTM = {"arch": "convlstm", "hidden_channels": [8], "stem_channels": 4, "dropout": 0.0}


class RandomVideos(Dataset):
    """Tiny random clips whose class is readable from the mean brightness (learnable in a few steps)."""

    def __init__(self, n: int = 12, clips: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % NUM_CLASSES
        shape = (n, T, 3, SIZE, SIZE) if clips is None else (n, clips, T, 3, SIZE, SIZE)
        self.videos = torch.randn(shape, generator=g) * 0.1
        self.videos += self.labels.view(-1, *[1] * (len(shape) - 1)).float() - 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"video": self.videos[i], "label": self.labels[i]}


def make_module(**kwargs) -> VideoClassifier:
    defaults = dict(
        net=dict(CONVLSTM),
        num_classes=NUM_CLASSES,
        class_names=CLASS_NAMES,
        preprocess=PREPROCESS,
        data={"name": "random", "root": None},
    )
    return VideoClassifier(**(defaults | kwargs))


def make_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    options = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )
    return pl.Trainer(**(options | kwargs))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_forward_and_net_submodule() -> None:
    module = make_module()
    assert isinstance(module.net, ConvLSTM)
    assert any(name == "net" for name, _ in module.named_children())
    assert module(torch.randn(2, T, 3, SIZE, SIZE)).shape == (2, NUM_CLASSES)
    assert module.class_names == CLASS_NAMES
    assert make_module(class_names=None).class_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="video must be"):
        module(torch.randn(T, 3, SIZE, SIZE))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="'arch'"):
        make_module(net={"hidden_size": 3})
    with pytest.raises(ValueError, match="unknown network arch"):
        make_module(net={"arch": "nope"})
    with pytest.raises(ValueError, match="class_names has 2 names"):
        make_module(class_names=["a", "b"])
    with pytest.raises(ValueError, match="at least 2"):
        make_module(num_classes=1, class_names=None)
    with pytest.raises(TypeError, match="hyper-parameter preprocess.mean"):
        make_module(preprocess={"mean": torch.zeros(3)})


def test_hparams_are_plain_python() -> None:
    """Hydra passes DictConfig/ListConfig (with interpolations): hparams must hold plain python types."""
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {"net": CONVLSTM, "preprocess": PREPROCESS | {"mean": [0.1, 0.2, 0.3], "crop_size": "${.num_frames}"}}
    )
    names = omegaconf.ListConfig(CLASS_NAMES)
    module = make_module(net=cfg.net, preprocess=cfg.preprocess, class_names=names)
    assert type(module.hparams["net"]) is dict and type(module.hparams["net"]["hidden_channels"]) is list
    assert module.hparams["preprocess"]["mean"] == [0.1, 0.2, 0.3]
    assert module.hparams["preprocess"]["crop_size"] == T  # interpolation resolved
    assert type(module.hparams["class_names"]) is list
    assert "optimizer" not in module.hparams and "scheduler" not in module.hparams


def test_training_steps_reduce_loss() -> None:
    module = make_module()
    batch = RandomVideos(n=6)[:]
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(batch["video"]), batch["label"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_training_step_with_vgg16_lstm_reduces_loss() -> None:
    module = make_module(net={"arch": "vgg16_lstm", "hidden_size": 8, "batch_norm": True, "dropout": 0.0})
    assert isinstance(module.net, VGG16LSTM)
    batch = RandomVideos(n=3)[:]
    batch = {"video": batch["video"][:, :2], "label": batch["label"]}
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.train()
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = module._shared_step(batch)[0]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_k_clip_logits_are_averaged() -> None:
    module = make_module().eval()
    clips = torch.randn(2, 3, T, 3, SIZE, SIZE)
    per_clip = torch.stack([module(clips[:, k]) for k in range(3)], dim=1)
    assert torch.allclose(module(clips), per_clip.mean(dim=1), atol=1e-6)
    probs = module.predict_step({"video": clips, "label": torch.zeros(2, dtype=torch.long)}, 0)
    assert probs.shape == (2, NUM_CLASSES) and torch.allclose(probs.sum(-1), torch.ones(2))


def test_batch_must_be_dict() -> None:
    with pytest.raises(ValueError, match="'video' .*and 'label'"):
        make_module().training_step((torch.randn(1, T, 3, SIZE, SIZE), torch.zeros(1)), 0)


def test_configure_optimizers() -> None:
    frozen = make_module(net={"arch": "vgg16_lstm", "hidden_size": 4, "freeze_encoder": True})
    optimizer = frozen.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 3e-4
    trainable = {id(p) for p in frozen.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable
    module = make_module(
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        scheduler=functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1),
        scheduler_monitor="val/acc",
    )
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["lr_scheduler"]["monitor"] == "val/acc"
    step = make_module(scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    assert "monitor" not in step.configure_optimizers()["lr_scheduler"]


def test_fit_test_checkpoint_roundtrip(tmp_path: Path) -> None:
    """fit + test through a Trainer, figures in the log dir, and a weights_only checkpoint roundtrip."""
    module = make_module(scheduler=functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=1))
    loader = DataLoader(RandomVideos(), batch_size=4)
    trainer = make_trainer(tmp_path, max_epochs=2, logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(module, loader, loader)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "val/acc_best"):
        assert key in metrics, key
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6

    clips_loader = DataLoader(RandomVideos(n=6, clips=2), batch_size=3)
    figures_callback = ClassificationFiguresCallback()
    trainer.callbacks.append(figures_callback)
    (results,) = trainer.test(module, clips_loader)
    for key in ("test/loss", "test/acc", "test/f1", "test/auroc"):
        assert 0.0 <= results[key] < 10.0, key
    assert int(module.test_results["confmat"].sum()) == 6  # the module computes, the callback draws
    figures = Path(trainer.default_root_dir) / "figures"
    assert figures_callback.artifacts["confusion_matrix"] == figures / "confusion_matrix.png"
    for name in ("confusion_matrix.png", "roc.png", "classification_report.png"):
        with Image.open(figures / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300
    report = json.loads((figures / "classification_report.json").read_text())
    assert set(CLASS_NAMES) <= set(report) and sum(report[c]["support"] for c in CLASS_NAMES) == 6
    assert report["accuracy"] == pytest.approx(results["test/acc"], abs=1e-5)
    assert "walk" in (figures / "classification_report.txt").read_text()

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = VideoClassifier.load_from_checkpoint(path, weights_only=True)
    assert restored.hparams == module.hparams
    assert restored.hparams["preprocess"] == PREPROCESS and restored.hparams["data"]["name"] == "random"
    video = RandomVideos(n=2)[:]["video"]
    module.eval(), restored.eval()
    assert torch.equal(module(video), restored(video))


def test_pretrained_checkpoint_loads_without_imagenet_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A model trained from ImageNet weights reloads on a machine without them (the checkpoint has them)."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    fake = VGG16LSTM(num_classes=2, hidden_size=4)
    weights = hub / "checkpoints" / "vgg16-397923af.pth"
    weights.parent.mkdir(parents=True)
    torch.save(torch.nn.Sequential(*fake.encoder[:-2]).state_dict(), weights)
    module = make_module(net={"arch": "vgg16_lstm", "hidden_size": 4, "pretrained": True})
    trainer = make_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, DataLoader(RandomVideos(n=2), batch_size=2))
    path = tmp_path / "vgg.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):  # a fresh build does need the file
        make_module(net={"arch": "vgg16_lstm", "hidden_size": 4, "pretrained": True})
    restored = VideoClassifier.load_from_checkpoint(path, weights_only=True)
    assert restored.hparams["net"]["pretrained"] is True
    video = RandomVideos(n=1)[:]["video"]
    module.eval(), restored.eval()
    assert torch.allclose(module(video), restored(video))


def test_test_figures_go_to_wandb(tmp_path: Path) -> None:
    """With an (offline) W&B logger the test figures and the report table are logged as media."""
    wandb = pytest.importorskip("wandb")
    logger = pl.loggers.WandbLogger(save_dir=str(tmp_path), project="vidxai-tests", offline=True)
    try:
        trainer = make_trainer(tmp_path, logger=logger, callbacks=[ClassificationFiguresCallback()])
        trainer.test(make_module(), DataLoader(RandomVideos(n=6), batch_size=3))
        run_dir = Path(logger.experiment.dir)
    finally:
        wandb.finish()
    images = {p.name.split("_")[0] for p in (run_dir / "media" / "images" / "test").glob("*.png")}
    assert images == {"confusion", "roc", "classification"}
    assert list((run_dir / "media" / "table" / "test").glob("classification_report_table*.table.json"))
    assert (tmp_path / "figures" / "roc.png").is_file()  # W&B has no log_dir: default_root_dir is used
