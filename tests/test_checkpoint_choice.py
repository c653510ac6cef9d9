"""Which checkpoint is "best" when the validation accuracy ties (a small validation set saturates at 1.0)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from vidxai.callbacks import ModelCheckpoint
from vidxai.errors import ConfigError

# (val/acc, val/loss) logged at the end of epochs 0..5: accuracy saturates at epoch 2, the loss goes on falling
# until epoch 4, then rises again at the same accuracy
SCRIPT = [(0.5, 1.2), (0.75, 0.8), (1.0, 0.5), (1.0, 0.3), (1.0, 0.1), (1.0, 0.2)]


class Scripted(pl.LightningModule):
    def __init__(self, script: list[tuple[float, float]]) -> None:
        super().__init__()
        self.script = script
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.w - batch[0].mean()) ** 2

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        acc, loss = self.script[self.current_epoch]
        self.log("val/acc", acc)
        self.log("val/loss", loss)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, script: list[tuple[float, float]], **kwargs: object) -> ModelCheckpoint:
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="epoch_{epoch:03d}", monitor="val/acc", mode="max",
                           auto_insert_metric_name=False, **kwargs)
    data = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=len(script), callbacks=[ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(Scripted(script), train_dataloaders=data, val_dataloaders=data)
    return ckpt


def _epochs(paths: object) -> list[str]:
    return sorted(Path(p).stem for p in paths)  # type: ignore[union-attr]


def test_tie_on_accuracy_goes_to_the_lowest_validation_loss(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, SCRIPT, save_top_k=1, tie_break="val/loss")
    assert Path(ckpt.best_model_path).stem == "epoch_004"
    assert float(ckpt.best_model_score) == 1.0
    assert _epochs(tmp_path.glob("epoch_*.ckpt")) == ["epoch_004"]  # the others were replaced on the way


def test_without_tie_break_lightning_keeps_the_first_epoch_to_reach_the_best(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, SCRIPT, save_top_k=1)
    assert Path(ckpt.best_model_path).stem == "epoch_002"


def test_top_k_ranks_by_accuracy_then_loss(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, SCRIPT, save_top_k=2, tie_break="val/loss")
    assert Path(ckpt.best_model_path).stem == "epoch_004"
    assert _epochs(ckpt.best_k_models) == ["epoch_004", "epoch_005"]
    assert _epochs(tmp_path.glob("epoch_*.ckpt")) == ["epoch_004", "epoch_005"]
    assert ckpt.tie_values == {ckpt.best_model_path: pytest.approx(0.1), ckpt.kth_best_model_path: pytest.approx(0.2)}


def test_a_higher_accuracy_beats_a_lower_loss(tmp_path: Path) -> None:
    script = [(0.75, 0.1), (1.0, 0.9), (0.75, 0.05)]
    ckpt = _fit(tmp_path, script, save_top_k=1, tie_break="val/loss")
    assert Path(ckpt.best_model_path).stem == "epoch_001"


def test_tie_break_max_mode_and_state_round_trip(tmp_path: Path) -> None:
    ckpt = _fit(tmp_path, SCRIPT, save_top_k=1, tie_break="val/loss", tie_break_mode="max")
    assert Path(ckpt.best_model_path).stem == "epoch_002"  # highest loss among the ties (max mode)
    fresh = ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max", tie_break="val/loss",
                            tie_break_mode="max")
    fresh.load_state_dict(ckpt.state_dict())
    assert fresh.tie_values == ckpt.tie_values and fresh.best_model_path == ckpt.best_model_path


def test_bad_tie_break_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tie_break_mode must be 'min' or 'max'"):
        ModelCheckpoint(monitor="val/acc", tie_break="val/loss", tie_break_mode="lower")


def test_default_config_breaks_accuracy_ties_by_validation_loss() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train")
    ckpt = cfg.callbacks.model_checkpoint
    assert (ckpt.monitor, ckpt.mode, ckpt.tie_break, ckpt.tie_break_mode) == ("val/acc", "max", "val/loss", "min")
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == ("val/loss", "min")
