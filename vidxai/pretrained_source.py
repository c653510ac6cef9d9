"""What the file system alone says about a ``pretrained=`` source: no torch, no transformers.

``explain.py`` runs :func:`check_source` before its heavy imports (one ``error:`` line within about a second for a
folder that is not there, has no ``config.json`` or no weights, or a ``weights=`` file that is not there);
:func:`vidxai.pretrained.load_pretrained` raises the same errors from the same functions when called directly.
"""

from __future__ import annotations

from pathlib import Path

from vidxai.errors import ConfigError, MissingPathError

__all__ = ["HF_WEIGHT_FILES", "TORCHVISION_PREFIX", "cached_snapshot", "check_source", "hf_weights",
           "no_such_source"]

TORCHVISION_PREFIX = "torchvision:"
#: ``save_pretrained`` weight files, safetensors first (what transformers itself prefers)
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def no_such_source(source: str) -> MissingPathError:
    """The error for a source that is neither a folder nor a repo id in the local cache."""
    return MissingPathError(
        f"pretrained={source}: no such folder, and no such repo in the local Hugging Face cache (nothing is "
        "downloaded); pass a save_pretrained folder, a cache snapshot folder, a repo id fetched beforehand "
        "(huggingface-cli download ORG/NAME), or torchvision:<builder> weights=<file.pth>")


def hf_weights(source: str, folder: Path) -> Path:
    """The weights file of the model folder ``folder`` (holding ``config.json``); one error line otherwise."""
    if not (folder / "config.json").is_file():
        raise ConfigError(f"pretrained={source}: {folder} has no config.json, so it is not a save_pretrained folder or "
                          "cache snapshot; pass the folder that holds config.json and the weights")
    weights = next((folder / n for n in HF_WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise ConfigError(f"pretrained={source}: {folder} has a config.json but no weights "
                          f"({', '.join(HF_WEIGHT_FILES)}); pass a complete save_pretrained folder (or download the "
                          "repo again)")
    return weights


def cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache snapshot of ``repo_id`` (``org/name``), or ``None``; never downloads (only
    huggingface_hub is imported: a third of a second)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, malformed id, offline: all mean "not here"
        return None


def check_source(source: str, weights: str | None = None) -> None:
    """Refuse, from the file system alone, a source that cannot load: neither a folder nor a repo id in the local
    cache, a model folder without ``config.json`` or weights (a cache repo folder, with ``snapshots/``, is left to
    the loader), or a ``weights=`` file that is not there."""
    source = str(source)
    if source.startswith(TORCHVISION_PREFIX):
        if weights not in (None, "") and not Path(str(weights)).expanduser().is_file():
            raise MissingPathError(f"weights={weights}: no such file; pass the .pth state dict of torchvision's "
                                   f"{source[len(TORCHVISION_PREFIX):]}")
        return
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "snapshots").is_dir():
            hf_weights(source, path)
        return
    if cached_snapshot(source) is None:
        raise no_such_source(source)
