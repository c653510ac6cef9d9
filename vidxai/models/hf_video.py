"""Video transformers through Hugging Face ``transformers``: VideoMAE (Tong et al. 2022: joint space-time
attention over tubelet tokens, mean pooling) and TimeSformer (Bertasius et al. 2021: divided time/space
attention over per-frame patch tokens, CLS token).

Each network wraps the ``transformers`` classifier users already fine-tune (attribute ``.hf``:
``VideoMAEForVideoClassification`` / ``TimesformerForVideoClassification``), takes clips ``(B, T, 3, H, W)``
like every vidxai network and returns ``self.hf(pixel_values=x).logits``. It is built either from its
keyword arguments (random init, small configs train on a CPU) or from a pretrained folder
(``pretrained=``): a ``save_pretrained`` folder, a Hugging Face cache snapshot folder, a cache repo folder
(``models--org--name``) or a repo id already in the local cache; always ``local_files_only``, never a
download. The classifier is always replaced by a new one for our classes.

The input geometry is fixed at build time (VideoMAE's sinusoidal position table and TimeSformer's divided
attention both depend on it): ``num_frames`` and ``image_size`` must equal ``data.num_frames`` and
``data.crop_size`` (the model configs interpolate them from the data config). :meth:`check_config` and
:meth:`check_data` run before any video is decoded (``train.py`` preflight) and name the keys to set.
``transformers`` is imported lazily, so the other networks do not pay its import time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vidxai.errors import ConfigError, MissingPathError

__all__ = ["VJEPA2", "TimeSformer", "ViViT", "VideoMAE", "VideoPrism", "pretrained_folder", "pretrained_preprocess"]

log = logging.getLogger(__name__)

#: Weight files ``save_pretrained`` writes (single file or sharded index), safetensors first.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: Preprocessor files that may carry the normalisation (``image_mean`` / ``image_std``).
PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
#: Relative tolerance when comparing the data normalisation with a checkpoint's.
NORM_RTOL = 1e-3


def _arch(num_layers: int, num_heads: int, dropout: float, attention_dropout: float, **same: Any) -> dict[str, Any]:
    """The ``transformers`` config arguments of a network's constructor arguments: the keys spelled alike pass as
    they are (``same``), the others take ``transformers``' names."""
    return {**same, "num_hidden_layers": num_layers, "num_attention_heads": num_heads, "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": attention_dropout}


def _pair(value: int | Sequence[int] | None, key: str) -> tuple[int, int]:
    """``32`` or ``[32, 32]`` -> ``(32, 32)``; anything else is an error naming ``key``."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{key}={value!r}: a video transformer needs a fixed input size; set data.crop_size "
                          "(e.g. data.crop_size=32)")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ConfigError(f"{key}={value!r} must be a positive int or [height, width]")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------- pretrained folders
def pretrained_folder(pretrained: str | Path) -> Path:
    """The folder holding ``config.json`` for ``pretrained``, found without any network access.

    Accepts a ``save_pretrained`` folder, a snapshot folder of the Hugging Face cache
    (``.../models--org--name/snapshots/<revision>``), the cache's repo folder (``.../models--org--name``:
    the revision of ``refs/main``, else its only snapshot), or a repo id (``org/name``) already in the local
    cache. Raises :class:`MissingPathError` naming ``model.net.pretrained`` when none of these exists.
    """
    path = Path(str(pretrained)).expanduser()
    if path.is_dir():
        snapshots = path / "snapshots"
        if not (path / "config.json").is_file() and snapshots.is_dir():
            ref = path / "refs" / "main"
            if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
                return snapshots / ref.read_text().strip()
            found = sorted(p for p in snapshots.iterdir() if p.is_dir())
            if len(found) == 1:
                return found[0]
        return path
    from vidxai.pretrained_source import cached_snapshot

    cached = cached_snapshot(str(pretrained))
    if cached is not None:
        return cached
    raise MissingPathError(
        f"model.net.pretrained={pretrained}: no such folder, and no such repo in the local Hugging Face cache; "
        "pass a folder written by save_pretrained (or a cache snapshot folder), or set model.net.pretrained=null"
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.net.pretrained: cannot read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"model.net.pretrained: {what} {path} holds no JSON object")
    return data


def read_pretrained_config(folder: Path, model_type: str, label: str, model_name: str) -> dict[str, Any]:
    """``config.json`` of ``folder``, checked to be a ``model_type`` model with its weights present."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"model.net.pretrained={folder} has no config.json: it is not a transformers "
                          "save_pretrained folder or cache snapshot; pass such a folder or set "
                          "model.net.pretrained=null")
    config = _read_json(config_file, "config")
    found = config.get("model_type")
    if found != model_type:
        hint = {k: f"model={k}" for k in ("videomae", "timesformer", "vivit", "vjepa2", "videoprism")}
        hint = {**hint, "videoprism_vision_model": "model=videoprism"}.get(str(found))
        fix = f"use {hint}" if hint else f"pass a {label} checkpoint"
        raise ConfigError(f"model.net.pretrained={folder} holds a {found!r} checkpoint, not {model_type!r} "
                          f"(model={model_name}): {fix}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"model.net.pretrained={folder} has a config.json but no weights ({', '.join(WEIGHT_FILES)}):"
                          " copy the whole save_pretrained folder")
    return config


def pretrained_preprocess(folder: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """What the checkpoint expects: ``num_frames``, ``image_size`` (h, w) and, when a preprocessor file is
    there, ``mean`` / ``std`` (``[0, 0, 0]`` / ``[1, 1, 1]`` when it does not normalise)."""
    out: dict[str, Any] = {"num_frames": int(config.get("num_frames", 0)),
                           "image_size": _pair(config.get("image_size"), "config.json image_size")}
    for name in PREPROCESSOR_FILES:
        if (folder / name).is_file():
            pre = _read_json(folder / name, "preprocessor config")
            if pre.get("do_normalize", True) is False:
                out["mean"], out["std"] = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
            elif "image_mean" in pre and "image_std" in pre:
                out["mean"], out["std"] = [float(v) for v in pre["image_mean"]], [float(v) for v in pre["image_std"]]
            break
    return out


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= NORM_RTOL * max(abs(y), 1e-6) for x, y in zip(a, b))


def _fmt(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:g}" for v in values) + "]"


def check_data_against_pretrained(expected: Mapping[str, Any], data: Mapping[str, Any], where: str) -> None:
    """One error naming every ``data.*`` key to set when the data config differs from the checkpoint's."""
    fixes: list[str] = []
    if int(data.get("num_frames", 0)) != expected["num_frames"]:
        fixes.append(f"data.num_frames={expected['num_frames']}")
    h, w = expected["image_size"]
    crop = data.get("crop_size")
    if crop is None or _pair(crop, "data.crop_size") != (h, w):
        fixes.append(f"data.crop_size={h}" if h == w else f"data.crop_size=[{h},{w}]")
        size = data.get("size")
        if size is not None and (int(size[0]) < h or int(size[1]) < w):
            fixes.append(f"data.size=[{h},{w}] (or larger)")
    for key in ("mean", "std"):
        if key in expected and not _close([float(v) for v in data.get(key) or []], expected[key]):
            fixes.append(f"data.{key}={_fmt(expected[key])}")
    if fixes:
        raise ConfigError(f"model.net.pretrained={where} was trained on {expected['num_frames']} frames of {h}x{w}"
                          f"{' with its own normalisation' if 'mean' in expected else ''}, which the data config "
                          f"differs from: set {' '.join(fixes)}")


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """The sinusoidal position table ``(positions, dim)`` of Vaswani et al. (sin on even, cos on odd dims)."""
    pos = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
    rate = torch.pow(10000.0, -2 * (torch.arange(dim) // 2).double() / dim)
    angles = pos * rate
    return torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos()).float()


# ----------------------------------------------------------------------------- the networks
class _HFVideoNet(nn.Module):
    """Shared by :class:`VideoMAE` and :class:`TimeSformer`: build or load ``.hf``, check inputs, forward."""

    #: ``model=`` name (registry key) and ``config.json`` ``model_type`` of the wrapped class.
    name: ClassVar[str]
    model_type: ClassVar[str]
    label: ClassVar[str]
    #: ``attn_implementation`` values the wrapped ``transformers`` class supports.
    attn_implementations: ClassVar[tuple[str, ...]]
    #: State-dict prefixes a pretrained folder may lack (new for the classification head).
    new_head_prefixes: ClassVar[tuple[str, ...]] = ("classifier.",)
    #: The keyword of the clips in the ``transformers`` forward, and the config keys of frames and frame size.
    input_name: ClassVar[str] = "pixel_values"
    frames_key: ClassVar[str] = "num_frames"
    size_key: ClassVar[str] = "image_size"
    #: Learned position tables (``(1, positions, hidden)`` parameters of ``.hf``) that a network trained from
    #: scratch starts as the sinusoidal table instead of transformers' init (zeros, or a small random draw made
    #: for fine-tuning a pretrained model): with them at ~0 every token looks the same wherever it is, so the
    #: order of the frames, which the embedded data's classes are, stays unseen until the tables drift.
    sinusoid_init: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def hf_kwargs(cls, arch: dict[str, Any]) -> dict[str, Any]:
        """The ``transformers`` config arguments of vidxai's architecture arguments ``arch``."""
        h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
        return {**arch, "image_size": h if h == w else [h, w]}

    @classmethod
    def geometry_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config.json`` with the clip geometry under the common keys ``num_frames`` and ``image_size``."""
        return {**config, "num_frames": config.get(cls.frames_key, 0), "image_size": config.get(cls.size_key)}

    @staticmethod
    def _hf_classes() -> tuple[Any, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _build(self, num_classes: int, arch: dict[str, Any], attn_implementation: str,
               pretrained: str | None, hf_config: Mapping[str, Any] | None) -> None:
        """``self.hf`` from a pretrained folder, a stored full config (restoring a checkpoint) or ``arch``."""
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ConfigError(f"{self.label} needs num_classes >= 1, got {num_classes}")
        self._check_attn(attn_implementation)
        attn_implementation = attn_implementation or self.attn_implementations[0]
        config_cls, model_cls = self._hf_classes()
        self._from_folder = bool(pretrained)
        if pretrained:
            folder = pretrained_folder(pretrained)
            read_pretrained_config(folder, self.model_type, self.label, self.name)
            known = config_cls().to_dict()  # V-JEPA 2 has no hidden_dropout_prob
            dropout = {k: arch[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if k in known}
            self.hf = self._load_pretrained(folder, num_classes, attn_implementation, dropout)
        else:
            if hf_config is not None:  # a checkpoint of a fine-tuned pretrained model: its full config
                config = config_cls.from_dict({**hf_config, "num_labels": num_classes})
            else:
                self._check_arch(arch)
                config = config_cls(**self.hf_kwargs(arch), num_labels=num_classes)
            self.hf = model_cls._from_config(config, attn_implementation=attn_implementation)
            if hf_config is None:
                self._init_positions()
        self.num_classes = int(num_classes)
        self.num_frames = int(getattr(self.hf.config, self.frames_key))
        self.image_size = _pair(getattr(self.hf.config, self.size_key), "image_size")

    def _init_positions(self) -> None:
        """The tables of :attr:`sinusoid_init` start as the sinusoidal table (still learned)."""
        for name in self.sinusoid_init:
            table = self.hf.get_parameter(name)
            with torch.no_grad():
                table.copy_(sinusoid_table(table.shape[1], table.shape[2]).unsqueeze(0))

    @classmethod
    def _check_attn(cls, attn_implementation: str | None) -> None:
        if attn_implementation is not None and attn_implementation not in cls.attn_implementations:
            raise ConfigError(f"model.net.attn_implementation={attn_implementation!r}: {cls.label} in transformers "
                              f"supports {' or '.join(cls.attn_implementations)}")

    @classmethod
    def _check_arch(cls, arch: Mapping[str, Any]) -> None:
        """Geometry errors that transformers would report late or not at all (border pixels silently dropped)."""
        h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
        p = int(arch["patch_size"])
        if p < 1 or h % p or w % p:
            raise ConfigError(f"data.crop_size={h if h == w else [h, w]} is not a multiple of model.net.patch_size={p}:"
                              " set data.crop_size to a multiple of it (or change the patch size)")
        if int(arch["num_frames"]) < 1:
            raise ConfigError(f"model.net.num_frames must be >= 1 (data.num_frames), got {arch['num_frames']}")
        d, heads = int(arch["hidden_size"]), int(arch["num_attention_heads"])
        if heads < 1 or d % heads:
            raise ConfigError(f"model.net.hidden_size={d} is not a multiple of model.net.num_heads={heads}")
        for key, rate in (("dropout", arch["hidden_dropout_prob"]), ("attention_dropout",
                                                                    arch["attention_probs_dropout_prob"])):
            if not 0 <= float(rate) < 1:
                raise ConfigError(f"model.net.{key} must be in [0, 1), got {rate}")

    def _load_pretrained(self, folder: Path, num_classes: int, attn_implementation: str,
                         overrides: dict[str, Any]) -> nn.Module:
        """Weights of ``folder`` (offline, float32); every weight but the new head must be there and fit."""
        _, model_cls = self._hf_classes()
        try:
            hf, info = model_cls.from_pretrained(
                folder, local_files_only=True, output_loading_info=True, num_labels=num_classes,
                ignore_mismatched_sizes=True, dtype=torch.float32, attn_implementation=attn_implementation,
                **overrides)
        except Exception as err:  # a corrupt or foreign file: safetensors, torch and transformers raise many types
            detail = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            raise ConfigError(f"model.net.pretrained={folder}: cannot load the {self.label} weights ({detail}); "
                              "pass an intact save_pretrained folder") from err
        missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(self.new_head_prefixes))
        mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
        mismatched = [k for k in mismatched if not k.startswith(self.new_head_prefixes)]
        if missing or mismatched:
            raise ConfigError(f"model.net.pretrained={folder} does not fit {model_cls.__name__}: missing weights "
                              f"{missing[:3]}, wrong shapes {mismatched[:3]}; pass a {self.label} checkpoint")
        self._new_classifier(hf, num_classes)
        hf.train()  # from_pretrained returns eval mode; a network is built in train mode like any nn.Module
        log.info("loaded %s weights from %s; new %d-class classifier", self.label, folder, num_classes)
        return hf

    @staticmethod
    def _new_classifier(hf: nn.Module, num_classes: int) -> None:
        """A freshly initialised classifier for our classes (also when the checkpoint had as many classes)."""
        old = hf.classifier
        hf.classifier = nn.Linear(hf.config.hidden_size, num_classes).to(dtype=torch.float32, device=old.weight.device)
        nn.init.trunc_normal_(hf.classifier.weight, std=hf.config.initializer_range)
        nn.init.zeros_(hf.classifier.bias)
        hf.config.num_labels = num_classes

    def rebuild_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this network without its pretrained folder (for checkpoints):
        the full ``transformers`` config when it came from a folder, nothing otherwise."""
        if not self._from_folder:
            return {}
        return {"pretrained": None, "hf_config": self.hf.config.to_dict()}

    # --------------------------------------------------------------------- checks before data and model
    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        import inspect

        return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}

    @classmethod
    def check_config(cls, **kwargs: Any) -> None:
        """Before any data: the attention implementation, and the pretrained folder (exists, is a checkpoint of
        this architecture, has weights)."""
        values = {**cls._defaults(), **kwargs}
        cls._check_attn(values["attn_implementation"])
        if values.get("pretrained"):
            folder = pretrained_folder(values["pretrained"])
            read_pretrained_config(folder, cls.model_type, cls.label, cls.name)

    @classmethod
    def check_data(cls, data: Mapping[str, Any], **kwargs: Any) -> None:
        """Before any video is decoded: the clip the data config makes is the one the network takes (frames,
        crop size and, for a pretrained folder, its normalisation); the error names the keys to set."""
        values = {**cls._defaults(), **kwargs}
        if values.get("pretrained"):
            folder = pretrained_folder(values["pretrained"])
            config = read_pretrained_config(folder, cls.model_type, cls.label, cls.name)
            check_data_against_pretrained(pretrained_preprocess(folder, cls.geometry_config(config)), data,
                                          str(values["pretrained"]))
            return
        if values.get("hf_config") is not None:
            return
        frames, size = values["num_frames"], _pair(values["image_size"], "model.net.image_size (data.crop_size)")
        crop = _pair(data.get("crop_size"), "data.crop_size")
        if int(data.get("num_frames", 0)) != int(frames):
            raise ConfigError(f"model.net.num_frames={frames} but data.num_frames={data.get('num_frames')}: the "
                              f"{cls.label} takes exactly the clips the data makes; set data.num_frames={frames} "
                              "or drop the model.net.num_frames override (the model config follows the data)")
        if crop != size:
            raise ConfigError(f"model.net.image_size={values['image_size']} but data.crop_size={data.get('crop_size')}:"
                              f" set data.crop_size={values['image_size']} or drop the model.net.image_size "
                              "override (the model config follows the data)")

    # --------------------------------------------------------------------- forward and the explainer contract
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of clips ``(B, T, 3, H, W)`` (T, H, W as built)."""
        h, w = self.image_size
        if x.ndim != 5 or tuple(x.shape[1:]) != (self.num_frames, 3, h, w):
            crop = h if h == w else f"[{h},{w}]"
            raise ConfigError(f"{self.label} was built for clips (B, {self.num_frames}, 3, {h}, {w}), got "
                              f"{tuple(x.shape)}: make clips with data.num_frames={self.num_frames} "
                              f"data.crop_size={crop}")
        logits = self.hf(**{self.input_name: x}).logits
        return logits.reshape(x.shape[0], -1)  # VideoPrism's classifier keeps its pooling query: (B, 1, C)

    def explain_stages(self) -> Any:
        """The explainer contract (:mod:`vidxai.models.contract`), defined in :mod:`vidxai.models.hf_stages`."""
        from vidxai.models.hf_stages import transformer_stages

        return transformer_stages(self)


class _TubeletNet(_HFVideoNet):
    """The networks over tubelet tokens (VideoMAE, ViViT, V-JEPA 2, VideoPrism): one constructor; the differences
    are class attributes (ViViT, V-JEPA 2 and VideoPrism from :data:`_TABLE`: config arguments, classes, what a
    pretrained folder may lack). Args as :class:`VideoMAE`; ``tubelet_size`` frames by ``patch_size`` pixels per
    token; ``attn_implementation=None``: the class's first (``sdpa`` where transformers has it)."""

    def __init__(self, num_classes: int, num_frames: int = 16, image_size: int | Sequence[int] = 224,
                 patch_size: int = 16, tubelet_size: int = 2, hidden_size: int = 768, num_layers: int = 12,
                 num_heads: int = 12, intermediate_size: int = 3072, dropout: float = 0.0,
                 attention_dropout: float = 0.0, attn_implementation: str | None = None, pretrained: str | None = None,
                 hf_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        arch = _arch(num_layers, num_heads, dropout, attention_dropout, num_frames=num_frames, image_size=image_size,
                     patch_size=patch_size, tubelet_size=tubelet_size, hidden_size=hidden_size,
                     intermediate_size=intermediate_size)
        self._build(num_classes, arch, attn_implementation, pretrained, hf_config)

    @classmethod
    def _check_arch(cls, arch: Mapping[str, Any]) -> None:
        super()._check_arch(arch)
        t, frames = int(arch["tubelet_size"]), int(arch["num_frames"])
        if t < 1 or frames % t:
            raise ConfigError(f"data.num_frames={frames} is not a multiple of model.net.tubelet_size={t}: set "
                              "data.num_frames to a multiple of it (or change the tubelet size)")



class VideoMAE(_TubeletNet):
    """VideoMAE: tubelet embedding (``Conv3d``, ``tubelet_size`` x ``patch_size``^2), fixed sinusoidal
    positions, joint space-time self-attention, mean pooling + ``fc_norm``, linear classifier.

    Args:
        num_classes: classes of the new classifier.
        num_frames, image_size: the clip geometry (``data.num_frames``, ``data.crop_size``); frames must be a
            multiple of ``tubelet_size``, each side a multiple of ``patch_size``.
        patch_size, tubelet_size, hidden_size, num_layers, num_heads, intermediate_size: the architecture
            (defaults: VideoMAE-Base, 16 frames of 224x224).
        dropout, attention_dropout: ``hidden_dropout_prob`` / ``attention_probs_dropout_prob``.
        attn_implementation: ``sdpa`` (fast, the default) or ``eager``; both give the same logits.
        pretrained: a pretrained folder or cached repo id (see :func:`pretrained_folder`); the architecture
            then comes from its ``config.json`` (the arguments above are ignored except the dropouts).
        hf_config: the full ``transformers`` config, written into checkpoints of fine-tuned pretrained models
            so they rebuild without the folder; not set by hand.
    """

    name = "videomae"
    model_type = "videomae"
    label = "VideoMAE"
    attn_implementations = ("sdpa", "eager")
    new_head_prefixes = ("classifier.", "fc_norm.")

    @staticmethod
    def _hf_classes() -> tuple[Any, Any]:
        from transformers import VideoMAEConfig, VideoMAEForVideoClassification

        return VideoMAEConfig, VideoMAEForVideoClassification


class TimeSformer(_HFVideoNet):
    """TimeSformer: per-frame patch embedding (``Conv2d``), learned space and time embeddings, a CLS token,
    divided attention (temporal, then spatial) in every block, linear classifier on the CLS token.

    Args: as :class:`VideoMAE` without ``tubelet_size`` (defaults: TimeSformer-Base, 8 frames of 224x224).
    ``attn_implementation`` must be ``eager``: transformers' TimeSformer has no other.
    """

    name = "timesformer"
    model_type = "timesformer"
    label = "TimeSformer"
    attn_implementations = ("eager",)
    # transformers starts the time embeddings at zero (made for fine-tuning an image ViT)
    sinusoid_init = ("timesformer.embeddings.time_embeddings",)

    @staticmethod
    def _hf_classes() -> tuple[Any, Any]:
        from transformers import TimesformerConfig, TimesformerForVideoClassification

        return TimesformerConfig, TimesformerForVideoClassification

    def __init__(self, num_classes: int, num_frames: int = 8, image_size: int | Sequence[int] = 224,
                 patch_size: int = 16, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 intermediate_size: int = 3072, dropout: float = 0.0, attention_dropout: float = 0.0,
                 attn_implementation: str = "eager", pretrained: str | None = None,
                 hf_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        arch = _arch(num_layers, num_heads, dropout, attention_dropout, num_frames=num_frames, image_size=image_size,
                     patch_size=patch_size, hidden_size=hidden_size, intermediate_size=intermediate_size)
        self._build(num_classes, arch, attn_implementation, pretrained, hf_config)

    @classmethod
    def _check_arch(cls, arch: Mapping[str, Any]) -> None:
        super()._check_arch(arch)
        h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
        if h != w:
            raise ConfigError(f"data.crop_size=[{h}, {w}]: transformers' TimeSformer takes square frames only; set "
                              "data.crop_size to one number")



# ----------------------------------------------------------------------------- ViViT, V-JEPA 2, VideoPrism
def _vivit_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
    if h != w:
        raise ConfigError(f"data.crop_size=[{h}, {w}]: transformers' ViViT takes square frames only")
    p = int(arch["patch_size"])
    rest = {k: v for k, v in arch.items() if k not in ("image_size", "patch_size", "tubelet_size")}
    return {**rest, "image_size": h, "tubelet_size": [int(arch["tubelet_size"]), p, p]}


def _vjepa2_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
    if h != w:
        raise ConfigError(f"data.crop_size=[{h}, {w}]: transformers' V-JEPA 2 takes square frames only")
    d = int(arch["hidden_size"])
    # the masked-prediction predictor is part of VJEPA2Model but unused by the classifier: kept minimal
    return dict(crop_size=h, frames_per_clip=int(arch["num_frames"]), patch_size=int(arch["patch_size"]),
                tubelet_size=int(arch["tubelet_size"]), hidden_size=d, num_hidden_layers=arch["num_hidden_layers"],
                num_attention_heads=arch["num_attention_heads"], mlp_ratio=int(arch["intermediate_size"]) / d,
                attention_probs_dropout_prob=arch["attention_probs_dropout_prob"], num_pooler_layers=1,
                pred_hidden_size=d, pred_num_attention_heads=arch["num_attention_heads"], pred_num_hidden_layers=1)


def _videoprism_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    h, w = _pair(arch["image_size"], "model.net.image_size (data.crop_size)")
    p = int(arch["patch_size"])
    if int(arch["tubelet_size"]) != 1:
        raise ConfigError(f"model.net.tubelet_size={arch['tubelet_size']}: VideoPrism embeds every frame on its own "
                          "(its temporal position table has one row per frame); set model.net.tubelet_size=1")
    layers = int(arch["num_hidden_layers"])
    rest = {k: v for k, v in arch.items() if k not in ("image_size", "patch_size", "tubelet_size",
                                                      "num_hidden_layers")}
    # factorised encoder: the spatial and the temporal stacks both num_layers deep
    return {**rest, "image_size": h if h == w else [h, w], "tubelet_size": [int(arch["tubelet_size"]), p, p],
            "num_spatial_layers": layers, "num_temporal_layers": layers}


#: name -> (label, transformers config / model class names, attention implementations, config arguments of
#: vidxai's, state-dict prefixes a pretrained folder may lack, forward keyword, frames key, size key, position
#: tables started as the sinusoidal table when trained from scratch)
_TABLE: dict[str, tuple] = {
    # transformers starts ViViT's position table at zero
    "vivit": ("ViViT", "VivitConfig", "VivitForVideoClassification", ("sdpa", "eager"), _vivit_kwargs,
              ("classifier.",), "pixel_values", "num_frames", "image_size", ("vivit.embeddings.position_embeddings",)),
    # no table: 3D rotary positions
    "vjepa2": ("V-JEPA 2", "VJEPA2Config", "VJEPA2ForVideoClassification", ("sdpa", "eager"), _vjepa2_kwargs,
               ("classifier.", "pooler."), "pixel_values_videos", "frames_per_clip", "crop_size", ()),
    # transformers draws VideoPrism's time table with LeCun's normal init over all its entries (std 0.036 at
    # hidden 96), added right after a LayerNorm (unit scale): the frame order is a ~4% signal
    "videoprism": ("VideoPrism", "VideoPrismVisionConfig", "VideoPrismForVideoClassification", ("eager",),
                   _videoprism_kwargs, ("classifier.", "head.", "head_layernorm."), "pixel_values_videos",
                   "num_frames", "image_size", ("vision_model.temporal_embeddings.position_embeddings",)),
}


def _table_net(name: str, class_name: str, doc: str) -> type[_TubeletNet]:
    label, config_name, model_name, attns, kwargs_fn, prefixes, input_name, frames, size, tables = _TABLE[name]

    def hf_classes() -> tuple[Any, Any]:
        import transformers

        return getattr(transformers, config_name), getattr(transformers, model_name)

    model_type = "videoprism_vision_model" if name == "videoprism" else name  # config.json's model_type
    attrs = dict(name=name, model_type=model_type, label=label, attn_implementations=attns, new_head_prefixes=prefixes,
                 input_name=input_name, frames_key=frames, size_key=size, sinusoid_init=tables,
                 _hf_classes=staticmethod(hf_classes),
                 hf_kwargs=classmethod(lambda cls, arch: kwargs_fn(dict(arch))), __doc__=doc,
                 __module__=__name__, __qualname__=class_name)
    return type(class_name, (_TubeletNet,), attrs)


ViViT = _table_net("vivit", "ViViT", """ViViT (Arnab et al. 2021, model 1: joint space-time attention) through
``VivitForVideoClassification``: tubelet embedding (``Conv3d``), CLS token, learned position table, fast-GELU MLPs,
classifier on the CLS token. Args as :class:`VideoMAE` (square frames).""")
VJEPA2 = _table_net("vjepa2", "VJEPA2", """V-JEPA 2 (Assran et al. 2025) through ``VJEPA2ForVideoClassification``:
tubelet embedding (``Conv3d``), 3D rotary positions on queries and keys (no position table), joint attention,
an attentive pooler (a learned query token, self-attention and cross-attention blocks), linear classifier.
Args as :class:`VideoMAE` (square frames; ``intermediate_size / hidden_size`` is the MLP ratio).""")
VideoPrism = _table_net("videoprism", "VideoPrism", """VideoPrism (Zhao et al. 2024) through
``VideoPrismForVideoClassification``: per-frame tubelets (``tubelet_size`` frames), learned spatial and temporal
position tables, a factorised encoder (``num_layers`` spatial blocks per frame, then ``num_layers`` temporal
blocks per patch), attention logits soft-capped by ``tanh`` (50), LayerNorm with ``weight + 1``, a multi-head
attention pooling head (a learned query) and a linear classifier. Args as :class:`VideoMAE`; eager attention
only.""")
