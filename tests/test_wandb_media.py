"""The one W&B media helper: which loggers get media, and what is sent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pytorch_lightning.loggers import CSVLogger

from vidxai.wandb_media import Image, Table, Video, log_media, wandb_sinks


class FakeRun:
    """Stands in for a ``wandb`` run: records what ``log`` receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, dict]] = []

    def log(self, payload: dict, **kwargs) -> None:
        self.calls.append((payload, kwargs))


def _files(tmp_path: Path) -> tuple[Path, Path]:
    png, gif = tmp_path / "a.png", tmp_path / "a.gif"
    PILImage.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(png)
    frames = [PILImage.fromarray(np.full((8, 8, 3), v, dtype=np.uint8)) for v in (0, 255)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    return png, gif


def test_only_wandb_destinations_are_sinks(tmp_path: Path) -> None:
    run = FakeRun()
    csv = CSVLogger(tmp_path)
    assert wandb_sinks(None) == [] and wandb_sinks(csv) == [] and wandb_sinks([]) == []
    assert wandb_sinks(run) == [run] and wandb_sinks([csv, run]) == [run]
    assert log_media([csv], {"x": Image(tmp_path / "missing.png")}) == 0  # nothing to log to: no error


def test_media_are_converted_and_logged_once(tmp_path: Path) -> None:
    wandb = pytest.importorskip("wandb")
    png, gif = _files(tmp_path)
    run = FakeRun()
    n = log_media(
        run,
        {
            "img": Image(png, "cap"),
            "imgs": [Image(png), Image(png)],
            "vid": [Video(gif, "moving")],
            "none": [],  # empty groups are left out
            "table": Table(["class", "f1"], [["a", 0.5], ["b", 1.0]]),
        },
        step=3,
    )
    assert n == 1 and len(run.calls) == 1
    payload, kwargs = run.calls[0]
    assert kwargs == {"step": 3} and set(payload) == {"img", "imgs", "vid", "table"}
    assert isinstance(payload["img"], wandb.Image) and payload["img"]._caption == "cap"
    assert [type(i) for i in payload["imgs"]] == [wandb.Image, wandb.Image]
    assert isinstance(payload["vid"][0], wandb.Video)
    assert isinstance(payload["table"], wandb.Table) and payload["table"].columns == ["class", "f1"]
    with pytest.raises(TypeError, match="cannot log a int"):
        log_media(run, {"bad": 3})
