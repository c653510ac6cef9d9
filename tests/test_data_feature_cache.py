"""Frozen-encoder feature cache: same logits as the uncached network, key sensitivity, refusals, reuse."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vidxai.data import VideoDataModule
from vidxai.data.feature_cache import (
    CachedFeatureDataset,
    FeatureStore,
    check_cacheable,
    feature_cache_key,
    fill_feature_cache,
    missing_indices,
)
from vidxai.errors import UserError
from vidxai.models import VideoClassifier, build_network

NETS = {
    "vgg16_lstm": {"hidden_size": 8, "batch_norm": True, "freeze_encoder": True},
    "convlstm": {"hidden_channels": [4], "stem_channels": 4, "freeze_encoder": True},
}


def _datamodule(root: Path, cache: Path, **kw) -> VideoDataModule:
    args = {"layout": "ucf11", "root": str(root), "num_frames": 4, "size": (36, 36), "crop_size": 32,
            "batch_size": 4, "num_workers": 0, "cache_dir": str(cache), "val_fraction": 0.25,
            "test_fraction": 0.25, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), **kw}
    dm = VideoDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("arch", sorted(NETS))
def test_cached_features_give_the_uncached_logits(arch: str, tiny_synthetic: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = _datamodule(tiny_synthetic, tmp_path)
    net = build_network(arch, dm.num_classes, **NETS[arch]).eval()
    clips = dm.dataset("val", train=False)
    store = FeatureStore(tmp_path, feature_cache_key(net, dm.preprocess))

    def encode(video: torch.Tensor) -> torch.Tensor:
        return net.features(dm.transform(video, train=False))

    n = 3  # a few clips are enough (VGG16 is slow on a CPU)
    assert len(missing_indices(clips, store)) == len(clips)
    assert fill_feature_cache(clips, store, encode, batch_size=2, indices=range(n)) == n
    assert missing_indices(clips, store) == list(range(n, len(clips)))
    assert fill_feature_cache(clips, store, encode, indices=range(n)) == 0  # nothing computed twice
    cached = CachedFeatureDataset(clips, store)
    with torch.no_grad():
        for i in range(n):
            sample, hit = clips[i], cached[i]
            assert int(hit["label"]) == int(sample["label"])
            assert torch.equal(hit["frame_indices"], sample["frame_indices"])
            direct = net(dm.transform(sample["video"][None], train=False))
            from_cache = net.classify(hit["features"][None])
            torch.testing.assert_close(from_cache, direct, atol=1e-5, rtol=0)


def test_key_changes_with_weights_frames_and_size(tiny_synthetic: Path, tmp_path: Path) -> None:
    dm = _datamodule(tiny_synthetic, tmp_path)
    torch.manual_seed(0)
    net = build_network("convlstm", 4, **NETS["convlstm"])
    base = feature_cache_key(net, dm.preprocess)
    assert feature_cache_key(net, dict(dm.preprocess)) == base  # deterministic
    net.cells[0].conv.weight.data.add_(1.0)  # the temporal part is not in the key: it is trained on the features
    assert feature_cache_key(net, dm.preprocess) == base
    changed = {
        "weights": (lambda n: n.encoder[0].weight.data.mul_(1.01), dm.preprocess),
        "frames": (None, {**dm.preprocess, "num_frames": 6}),
        "size": (None, {**dm.preprocess, "size": [48, 48]}),
        "crop": (None, {**dm.preprocess, "crop_size": [28, 28]}),
        "normalisation": (None, {**dm.preprocess, "mean": [0.4, 0.5, 0.5]}),
    }
    keys = set()
    for name, (edit, pre) in changed.items():
        other = build_network("convlstm", 4, **NETS["convlstm"])
        other.load_state_dict(net.state_dict())
        if edit is not None:
            edit(other)
        key = feature_cache_key(other, pre)
        assert key != base, name
        keys.add(key)
    assert len(keys) == len(changed)


def test_refuses_networks_without_a_frozen_per_frame_encoder() -> None:
    with pytest.raises(UserError, match="per-frame encoder.*R2Plus1D has none.*data.feature_cache=false"):
        check_cacheable(build_network("r2plus1d", 2, width=0.25))  # a 3D CNN: no per-frame encoder
    with pytest.raises(UserError, match="model.net.freeze_encoder=true"):
        check_cacheable(build_network("convlstm", 2, hidden_channels=[4], stem_channels=4))
    check_cacheable(build_network("convlstm", 2, hidden_channels=[4], stem_channels=4, freeze_encoder=True))


class _CountingFeatures(pl.Callback):
    """Counts calls of ``net.features`` (the encoder) from the start of fit."""

    def __init__(self) -> None:
        self.calls = 0
        self.batch_kinds: set[str] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        net = pl_module.net
        original = net.features

        def counted(x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return original(x)

        net.features = counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_kinds.update(k for k in ("video", "features") if k in batch)


def _fit(dm: VideoDataModule, model: VideoClassifier, epochs: int, root: Path) -> _CountingFeatures:
    counter = _CountingFeatures()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=[counter],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(root))
    trainer.fit(model, datamodule=dm)
    return counter


def test_training_reads_features_from_the_cache_after_computing_them_once(
    tiny_synthetic: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    dm = _datamodule(tiny_synthetic, tmp_path, feature_cache=True)
    model = VideoClassifier({"arch": "convlstm", **NETS["convlstm"]}, dm.num_classes, preprocess=dm.preprocess)
    n_batches = sum(-(-len(dm.records_for(s)) // dm.batch_size) for s in ("train", "val"))
    with caplog.at_level(logging.INFO, logger="vidxai.data.datamodule"):
        first = _fit(dm, model, 2, tmp_path / "a")
    assert first.batch_kinds == {"features"}
    assert first.calls == n_batches  # one encoder pass over train + val clips, none in the two epochs
    assert "random crop, flip and frame jitter are off" in caplog.text

    dm2 = _datamodule(tiny_synthetic, tmp_path, feature_cache=True)  # a new run: everything is on disk
    again = _fit(dm2, model, 1, tmp_path / "b")
    assert again.calls == 0 and again.batch_kinds == {"features"}


def test_feature_cache_refuses_an_unfrozen_encoder_at_fit(tiny_synthetic: Path, tmp_path: Path) -> None:
    dm = _datamodule(tiny_synthetic, tmp_path, feature_cache=True)
    model = VideoClassifier({"arch": "convlstm", "hidden_channels": [4], "stem_channels": 4}, dm.num_classes)
    with pytest.raises(UserError, match="freeze_encoder=true"):
        _fit(dm, model, 1, tmp_path)


def test_train_pipeline_with_the_feature_cache(tmp_path: Path) -> None:
    """``model.net.freeze_encoder=true data.feature_cache=true`` through the real configs: fit on cached
    features, explanations of the clips behind them, test on clips."""
    from helpers import TINY_DATA, TINY_TRAIN, compose_cfg

    from vidxai.pipelines.train import train

    cfg = compose_cfg(
        "train", tmp_path,
        TINY_DATA + TINY_TRAIN + ["model=convlstm", "model.net.hidden_channels=[4]", "model.net.stem_channels=4",
                                  "model.net.freeze_encoder=true", "data.feature_cache=true", "logger=csv",
                                  "callbacks.explanation.num_clips=1"],
        data_dir=tmp_path / "data",
    )
    assert train(cfg) is not None
    run = tmp_path / "run"
    assert list((tmp_path / "data" / ".cache" / "features").glob("*/*.npy"))
    assert list((run / "explanations").rglob("*heatmaps.png"))
    assert "test/acc" in (run / "csv" / "metrics.csv").read_text()
