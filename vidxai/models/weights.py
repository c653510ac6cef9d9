"""Pretrained torchvision weights from the local torch hub cache: where they are expected, and reading them.

Nothing here downloads: a missing file is one clear error that names the file, where it is expected and
the URL to fetch it from (the same message for every architecture).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidxai.errors import ConfigError, MissingPathError

__all__ = ["hub_weights_file", "load_state_file"]


def hub_weights_file(url: str) -> Path:
    """Where ``torch.hub`` keeps the weights file of ``url``: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_state_file(path: Path, url: str, label: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read the state dict of ``label`` weights (e.g. ``"VGG16"``) from ``path``.

    Args:
        path: the weights file (``hub_weights_file(url)`` or an explicit ``weights_path``).
        url: where the file can be downloaded from (named in the messages; never fetched).
        label: the weights' name in messages.
        prefix: when the file holds keys starting with ``prefix`` (e.g. ``"features."`` of a full VGG16),
            keep only those keys, with the prefix stripped.

    Raises:
        MissingPathError: ``path`` does not exist (the message says where to put which file).
        ConfigError: the file cannot be read or is not a state dict.
    """
    if not path.is_file():
        raise MissingPathError(
            f"pretrained {label} weights not found at {path}: download {url} "
            f"into {path.parent} (or pass weights_path=...), or set pretrained=False"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt / not a state dict
        raise ConfigError(f"cannot read {label} weights {path}: {err}; re-download {url}") from err
    if not isinstance(state, dict):
        raise ConfigError(f"{label} weights {path} hold a {type(state).__name__}, expected a state dict")
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def check_weights_file(pretrained: bool, weights_path: str | None, default: Path, url: str, label: str) -> None:
    """Before data or model: the weights file that ``pretrained`` / ``weights_path`` would load must exist."""
    if weights_path is not None:
        if not Path(weights_path).expanduser().is_file():
            raise MissingPathError(f"model.net.weights_path={weights_path}: {label} weights not found there; pass "
                                   "the path of the weights file or set model.net.weights_path=null")
    elif pretrained and not default.is_file():
        raise MissingPathError(f"pretrained {label} weights not found at {default}: download {url} into "
                               f"{default.parent} (or pass model.net.weights_path=...), or set "
                               "model.net.pretrained=false")
