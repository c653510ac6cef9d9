"""Explain a video classifier you already have: load it as it is, with its own head, labels and preprocessing.

One call, :func:`load_pretrained`, for every source:

* a Hugging Face folder written by ``save_pretrained``, a Hugging Face cache snapshot folder, the cache's repo
  folder (``models--org--name``) or a repo id already in the local cache (``org/name``): read offline
  (``local_files_only``), never ``trust_remote_code``, safetensors where the folder has them. Labels from
  ``config.json``'s ``id2label``; the clip geometry from ``video_preprocessor_config.json`` /
  ``preprocessor_config.json`` (resize, centre crop, rescale, mean/std) and the frame count from there or
  ``config.json``;
* ``torchvision:<builder>`` with ``weights=<file.pth>`` (the state dict downloaded from the URL in torchvision's
  weights enum): ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``, ``mvit_v1_b``, ``mvit_v2_s``, ``swin3d_t``,
  ``swin3d_s``, ``swin3d_b``, read with ``torch.load(weights_only=True)``. Labels and preprocessing from
  torchvision's own weights metadata (``<Builder>_Weights.KINETICS400_V1.meta["categories"]``, ``.transforms()``
  and the ``clip_len`` / ``frame_rate`` its docs give), which is part of its code and works offline.

It returns ``(model, preprocess, labels, report)``: the model in eval mode exactly as it was saved (its own
classifier and label names kept), a :class:`Preprocess` that turns a video file or frames into the input the
model takes (in its own layout: ``(1, T, C, H, W)`` for ``transformers``, ``(1, C, T, H, W)`` for torchvision), the
labels, and a :class:`Report` of what was taken from where. Three lines explain a clip::

    model, preprocess, labels, _ = load_pretrained("MCG-NJU/videomae-base-finetuned-kinetics")
    x = preprocess.read("my_clip.mp4")
    relevance = VideoLRP(model).attribute(x, target=None)  # the predicted class; shaped like x

``explain.py pretrained=<source> [weights=<file>]`` uses :func:`load_for_explain`, which also wraps the model for
vidxai's clip layout (:mod:`vidxai.models.foreign`) and refuses, before any video is decoded, a model VideoLRP
cannot explain.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vidxai.checkpoint import LoadedCheckpoint
from vidxai.data.decoders import VideoDecodeError, open_video
from vidxai.data.sampling import uniform_indices
from vidxai.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform
from vidxai.errors import ConfigError, MissingPathError, UserError
from vidxai.pretrained_source import TORCHVISION_PREFIX, hf_weights, no_such_source

__all__ = [
    "TORCHVISION_BUILDERS",
    "Pretrained",
    "PretrainedCheckpoint",
    "Preprocess",
    "Report",
    "load_for_explain",
    "load_pretrained",
]

log = logging.getLogger(__name__)

#: torchvision video builders -> the state-dict key of their classifier weight (its rows: the classes)
TORCHVISION_BUILDERS: dict[str, str] = {
    "r3d_18": "fc.weight", "mc3_18": "fc.weight", "r2plus1d_18": "fc.weight", "s3d": "classifier.1.weight",
    "mvit_v1_b": "head.1.weight", "mvit_v2_s": "head.1.weight",
    "swin3d_t": "head.weight", "swin3d_s": "head.weight", "swin3d_b": "head.weight",
}
HF_PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


# ----------------------------------------------------------------------------------------- preprocessing
class Preprocess(VideoTransform):
    """A pretrained model's clip preparation: which frames, resize, centre crop, rescale and normalisation.

    Args:
        num_frames: frames per clip.
        mean, std: the normalisation of pixels in ``[0, 1]`` (a processor's ``rescale_factor`` / ``offset`` are
            folded in: ``(x * rescale - offset - m) / s`` is ``(x / 255 - mean) / std``).
        crop_size: the centre crop ``(H, W)`` (``None``: none).
        resize: the resize before the crop: an int (the shorter side, aspect kept) or ``(H, W)`` (exact);
            ``None``: none. On the uint8 frames (uint8 out), as both torchvision's and transformers' do.
        antialias: whether the resize antialiases (``False`` for torchvision's video models: their
            ``VideoClassification`` transform resizes without; ``True`` for Hugging Face processors).
        interpolation: the resize's interpolation, a ``torchvision`` ``InterpolationMode`` value (``"bilinear"``,
            ``"bicubic"``, ``"nearest-exact"``, ...; a Hugging Face processor's ``resample``).
        transforms_v2: resize with ``torchvision.transforms.v2.functional.resize`` (what transformers' processors
            call: its uint8 kernel rounds otherwise than ``torchvision.transforms.functional.resize``, which
            torchvision's ``VideoClassification`` preset calls, by up to one level in about 15 % of the pixels).
        round_crop: the centre crop starts at ``round((size - crop) / 2)`` (torchvision's ``center_crop``) rather
            than ``(size - crop) // 2`` (Hugging Face's and vidxai's).
        frame_rate: sample ``num_frames`` consecutive frames at this rate (frames per second) from the middle of
            the video, as torchvision's video models were trained and evaluated; ``None``: spread uniformly over
            the whole video (vidxai's default, and what a Hugging Face folder does not say otherwise).
        sample_frames: sample as transformers' video processors do when their config sets ``do_sample_frames``
            (``BaseVideoProcessor.sample_frames``): frame ``i * n // num_frames`` for ``i < num_frames`` of a video
            of ``n`` frames, rather than vidxai's segment centres.
        sample_fps: with ``sample_frames``, the processor's ``fps``: transformers takes
            ``c = max(1, int(n / video_fps * sample_fps))`` frames ``i * n // c``; vidxai keeps ``num_frames``
            (the count the model was trained on): all of them when ``c == num_frames``, the middle ``num_frames``
            of them when ``c`` is larger, and ``i * n // num_frames`` when the video is too short for
            ``num_frames`` frames at that rate (or its frame rate is unknown).
        layout: the layout the model takes (``"BTCHW"`` or ``"BCTHW"``), for :meth:`read`.
    """

    def __init__(self, num_frames: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 crop_size: int | Sequence[int] | None = None, resize: int | Sequence[int] | None = None,
                 frame_rate: float | None = None, layout: str = "BTCHW", antialias: bool = True,
                 round_crop: bool = False, interpolation: str = "bilinear", transforms_v2: bool = False,
                 sample_frames: bool = False, sample_fps: float | None = None) -> None:
        super().__init__(mean=mean, std=std, crop_size=crop_size, flip=False)
        if int(num_frames) < 1:
            raise ConfigError(f"a clip needs at least one frame, got num_frames={num_frames}")
        self.num_frames = int(num_frames)
        if resize is not None and not isinstance(resize, int):
            resize = tuple(int(v) for v in resize)
            resize = resize[0] if len(resize) == 1 else resize  # torchvision's (256,): the shorter side
        self.resize = resize
        self.frame_rate = None if frame_rate is None else float(frame_rate)
        self.layout = layout
        self.antialias = bool(antialias)
        self.round_crop = bool(round_crop)
        from torchvision.transforms import InterpolationMode

        try:
            self.interpolation = InterpolationMode(str(interpolation)).value
        except ValueError:
            raise ConfigError(f"unknown resize interpolation {interpolation!r}; use one of "
                              f"{', '.join(m.value for m in InterpolationMode)}") from None
        self.transforms_v2 = bool(transforms_v2)
        self.sample_frames = bool(sample_frames)
        self.sample_fps = None if sample_fps is None else float(sample_fps)
        if self.sample_fps is not None and self.sample_fps <= 0:
            raise ConfigError(f"the frame sampling rate must be positive, got fps={sample_fps}")

    # ------------------------------------------------------------------ geometry
    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The frame size after the resize, for source frames ``height x width``."""
        if self.resize is None:
            return int(height), int(width)
        if isinstance(self.resize, int):  # the shorter side, aspect kept (torchvision's F.resize rounding)
            short, long = (height, width) if height <= width else (width, height)
            new_long = int(self.resize * long / short)
            return (self.resize, new_long) if height <= width else (new_long, self.resize)
        return int(self.resize[0]), int(self.resize[1])

    def __call__(self, video: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """uint8 clips ``(B, T, 3, H, W)`` -> resized, centre-cropped, normalised float clips (vidxai's layout)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"Preprocess expects clips (B, T, 3, H, W), got {tuple(video.shape)}")
        size = self.resized_size(*video.shape[-2:])
        if size != tuple(video.shape[-2:]):
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as tf
            from torchvision.transforms.v2 import functional as tf2

            b, t = video.shape[:2]
            resize = tf2.resize if self.transforms_v2 else tf.resize
            flat = resize(video.reshape(b * t, *video.shape[2:]), list(size),
                          interpolation=InterpolationMode(self.interpolation), antialias=self.antialias)
            video = flat.reshape(b, t, 3, *size)
        if self.crop_size is not None and (self.crop_size[0] > size[0] or self.crop_size[1] > size[1]):
            # a crop larger than the frame: zeros around it (before the normalisation), as transformers' and
            # torchvision's centre crops pad
            ph, pw = max(self.crop_size[0] - size[0], 0), max(self.crop_size[1] - size[1], 0)
            video = torch.nn.functional.pad(video, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().__call__(video, train=False)

    def centre_offset(self, size: int, crop: int) -> int:
        if crop > size:  # padded (see __call__): the frame starts this far inside the crop
            return -((crop - size) // 2)
        return int(round((size - crop) / 2.0)) if self.round_crop else (size - crop) // 2

    def may_pad(self) -> bool:
        """Whether some frames may be smaller than the crop (then padded): no resize, or one below the crop."""
        if self.crop_size is None:
            return False
        if self.resize is None:
            return True
        if isinstance(self.resize, int):
            return max(self.crop_size) > self.resize
        return self.crop_size[0] > self.resize[0] or self.crop_size[1] > self.resize[1]

    def eval_boxes(self, boxes: Any, source_size: Sequence[int], decoded_size: Sequence[int] | None) -> Any:
        """Boxes in source pixels -> clip pixels: this resize (frames are decoded at their own size), then the crop."""
        resized = self.resized_size(*source_size) if decoded_size is None else decoded_size
        return super().eval_boxes(boxes, source_size, resized)

    # ------------------------------------------------------------------ frames
    def frame_indices(self, n_video: int, fps: float) -> tuple[np.ndarray, str]:
        """Which frames of a video of ``n_video`` frames at ``fps`` make the clip, and how they were chosen."""
        t = self.num_frames
        if self.sample_frames:
            idx, how = self._transformers_indices(n_video, fps)
        elif self.frame_rate and fps > 0:
            step = fps / self.frame_rate
            span = step * t
            if span <= n_video:
                start = (n_video - span) / 2
                idx = np.clip(np.floor(start + np.arange(t) * step).astype(np.int64), 0, n_video - 1)
                how = f"{t} frames at {self.frame_rate:g} fps from the middle of the video"
            else:
                idx = uniform_indices(n_video, t)
                how = (f"{t} frames at {self.frame_rate:g} fps need {span:.0f} frames of this {fps:g} fps video, "
                       f"which has {n_video}: {t} frames spread uniformly over all of it")
        else:
            idx = uniform_indices(n_video, t)
            how = f"{t} frames spread uniformly over the video"
        if len(set(idx.tolist())) < t:
            how += (f" (the video has {n_video} frames" + (f" at {fps:g} fps" if fps > 0 else "")
                    + f": frames repeated, indices {idx.tolist()})")
        return idx, how

    def _transformers_indices(self, n_video: int, fps: float) -> tuple[np.ndarray, str]:
        """``BaseVideoProcessor.sample_frames`` (``default_sample_indices_fn``) with ``num_frames`` kept."""
        t = self.num_frames
        if self.sample_fps is not None and fps > 0:
            count = max(1, int(n_video / fps * self.sample_fps))  # transformers' count at sample_fps
            if count >= t:
                grid = np.arange(count, dtype=np.int64) * n_video // count
                start = (count - t) // 2
                how = (f"{t} frames at {self.sample_fps:g} fps as transformers samples them (frame i * {n_video} // "
                       f"{count})" + ("" if count == t else f", the middle {t} of its {count}"))
                return grid[start:start + t], how
            why = f"this {fps:g} fps video gives {count} frame{'s' if count != 1 else ''} at {self.sample_fps:g} fps"
        elif self.sample_fps is not None:
            why = f"the video's frame rate is unknown, so fps={self.sample_fps:g} cannot be applied"
        else:
            why = ""
        idx = np.arange(t, dtype=np.int64) * n_video // t
        how = f"{t} frames i * {n_video} // {t}, as transformers samples num_frames={t}"
        return idx, how + (f" ({why}; the model takes {t})" if why else "")

    def read_frames(self, path: str | Path, backend: str = "auto") -> tuple[torch.Tensor, np.ndarray, float, str]:
        """The clip's frames of the video file ``path`` at their own size: uint8 ``(T, 3, H, W)``, their indices,
        the video's frame rate (0.0 when unknown) and how they were sampled.

        Raises:
            UserError: the file does not exist or is not a video (one line naming it).
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingPathError(f"video not found: {p}; pass video=path/to/clip.mp4")
        try:
            with open_video(str(p), backend=backend) as dec:
                n, fps = int(dec.num_frames), float(dec.fps or 0.0)
                if n < 1:
                    raise VideoDecodeError(f"{p}: no decodable frames")
                idx, how = self.frame_indices(n, fps)
                frames = dec.get_frames(idx)
        except VideoDecodeError as exc:
            raise UserError(f"cannot decode video {p}: {exc}; pass a readable video file "
                            "(mp4/avi/mpg/mkv/webm/mov)") from None
        if "repeated" in how:
            log.warning("%s: %s", p.name, how)
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        return video, idx, fps, how

    def read(self, path: str | Path) -> torch.Tensor:
        """The model input of the video file ``path``: ``(1, T, C, H, W)``, or ``(1, C, T, H, W)`` for a model that
        takes that layout (torchvision)."""
        video, _, _, _ = self.read_frames(path)
        return self.frames_to_input(video)

    def frames_to_input(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(T, 3, H, W)`` (or ``(T, H, W, 3)``) -> the model input, batch of one, its layout."""
        if video.ndim == 4 and video.shape[-1] == 3 and video.shape[1] != 3:
            video = video.permute(0, 3, 1, 2)
        x = self(video.unsqueeze(0))
        return x.transpose(1, 2) if self.layout == "BCTHW" else x

    # ------------------------------------------------------------------ description
    def to_dict(self) -> dict[str, Any]:
        """The ``preprocess`` dict of vidxai's checkpoints (num_frames, mean, std, crop_size) and its own keys."""
        return {**self.preprocess, "num_frames": self.num_frames,
                "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                "antialias": self.antialias, "interpolation": self.interpolation, "transforms_v2": self.transforms_v2,
                "round_crop": self.round_crop, "frame_rate": self.frame_rate, "sample_frames": self.sample_frames,
                "sample_fps": self.sample_fps, "layout": self.layout}

    def describe(self) -> str:
        """One line: frames, sampling, resize, crop, normalisation."""
        sampling = self.sampling_rule()
        resize = ("none" if self.resize is None else f"shorter side {self.resize}" if isinstance(self.resize, int)
                  else f"{self.resize[0]}x{self.resize[1]}")
        if self.resize is not None:
            resize += f" ({self.interpolation})"
        crop = "none" if self.crop_size is None else f"{self.crop_size[0]}x{self.crop_size[1]} centre"
        if self.may_pad():
            crop += " (zero-padded where the frame is smaller)"
        return (f"{self.num_frames} frames {sampling}, resize {resize}, crop {crop}, pixels / 255 then "
                f"mean {_fmt(self.mean)} std {_fmt(self.std)}")

    def sampling_rule(self) -> str:
        """How the frames of a video are chosen, in words."""
        t = self.num_frames
        if self.sample_frames and self.sample_fps is not None:
            return (f"as transformers samples at {self.sample_fps:g} fps (frame i * n // c, c = n / video fps * "
                    f"{self.sample_fps:g}; the middle {t} when c > {t}, frame i * n // {t} when c < {t})")
        if self.sample_frames:
            return f"as transformers samples num_frames={t} (frame i * n // {t} of n)"
        if self.frame_rate:
            return f"at {self.frame_rate:g} fps from the middle"
        return "spread uniformly (segment centres)"

    def __repr__(self) -> str:
        return f"Preprocess({self.describe()})"


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# ----------------------------------------------------------------------------------------- report
@dataclass
class Report:
    """What was loaded and what was taken from where (:meth:`block`: the lines ``explain.py`` prints once)."""

    source: str
    arch: str
    kind: str  # "huggingface" | "torchvision"
    weights: str
    taken: list[tuple[str, str]] = field(default_factory=list)  # (what, where from)
    notes: list[str] = field(default_factory=list)

    def block(self) -> str:
        """The short block: the model, then one line per setting and where it came from, then the notes."""
        width = max((len(w) for w, _ in self.taken), default=0)
        lines = [f"pretrained {self.source}: {self.arch}, weights {self.weights}"]
        lines += [f"  {what.ljust(width)}  {where}" for what, where in self.taken]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.block()


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns (a 4-tuple: ``model, preprocess, labels, report = ...``)."""

    model: nn.Module
    preprocess: Preprocess
    labels: list[str]
    report: Report


# ----------------------------------------------------------------------------------------- loading
def load_pretrained(source: str | Path, weights: str | Path | None = None, device: str | torch.device = "cpu"
                    ) -> Pretrained:
    """The classifier of ``source`` as it is (eval mode, float32, on ``device``), its preprocessing, labels and a
    report of what was taken from where; nothing is downloaded and no code from the source runs.

    Args:
        source: a ``save_pretrained`` folder, a Hugging Face cache snapshot (or repo) folder, a repo id in the
            local cache, or ``torchvision:<builder>`` (:data:`TORCHVISION_BUILDERS`).
        weights: the ``.pth`` state dict of a torchvision builder (required there; not for Hugging Face).

    Raises:
        UserError: one line naming what is wrong and the fix (a missing folder or file, no ``config.json`` or no
            weights, an architecture without a video classifier, weights that do not fit the builder).
    """
    text = str(source)
    if text.startswith(TORCHVISION_PREFIX):
        loaded = _load_torchvision(text[len(TORCHVISION_PREFIX):], weights)
    else:
        if weights is not None:
            raise ConfigError(f"weights={weights} is for pretrained=torchvision:<builder>; a Hugging Face folder "
                              f"({text}) carries its own weights: drop weights=")
        loaded = _load_hf(text)
    loaded.model.to(device).eval()
    return loaded


def _torchvision_weights_enum(builder: str) -> Any:
    import torchvision.models as tvm

    options = list(tvm.get_model_weights(builder))
    return next((w for w in options if w.name == "KINETICS400_V1"), options[0])


def _load_torchvision(builder: str, weights: str | Path | None) -> Pretrained:
    import torchvision.models as tvm

    if builder not in TORCHVISION_BUILDERS:
        close = difflib.get_close_matches(builder, list(TORCHVISION_BUILDERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"pretrained=torchvision:{builder}: not a torchvision video classifier{hint}; choose one "
                          f"of {', '.join(TORCHVISION_BUILDERS)}")
    enum = _torchvision_weights_enum(builder)
    if weights is None:
        raise ConfigError(f"pretrained=torchvision:{builder} needs weights=<file.pth>: vidxai never downloads; fetch "
                          f"{enum.url} on a machine with internet and pass weights=path/to/{Path(enum.url).name}")
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise MissingPathError(f"weights={path}: no such file; pass the .pth state dict of {builder} "
                               f"(downloaded from {enum.url})")
    state = _read_state_dict(path, builder, enum.url)
    head = TORCHVISION_BUILDERS[builder]
    if head not in state:
        raise ConfigError(f"weights={path} do not fit torchvision's {builder}: first mismatching key {head!r} "
                          f"(missing); pass the {builder} weights ({enum.url})")
    num_classes = int(state[head].shape[0])
    model = tvm.get_model(builder, weights=None, num_classes=num_classes)
    _check_state(model, state, path, builder, enum.url)
    model.load_state_dict(state, strict=True)
    categories = list(enum.meta.get("categories") or [])
    report = Report(f"torchvision:{builder}", f"torchvision {builder} ({type(model).__name__})", "torchvision",
                    str(path))
    if num_classes == len(categories):
        labels = categories
        report.taken.append((f"labels ({num_classes})", f"{type(enum).__name__}.{enum.name}.meta['categories']"))
    else:
        labels = [f"class_{i}" for i in range(num_classes)]
        report.taken.append((f"labels ({num_classes})", "class_0 ..: the weights have their own head, not the "
                                                        f"{len(categories)} Kinetics classes"))
    preprocess = _torchvision_preprocess(builder, enum, report)
    return Pretrained(model, preprocess, labels, report)


def _read_state_dict(path: Path, builder: str, url: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refused, garbage bytes, truncated file: one line each
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"weights={path} cannot be read safely (torch.load weights_only=True: {detail[:160]}); "
                          f"pass the plain state dict of {builder} ({url})") from None
    for key in ("state_dict", "model", "model_state"):  # a training checkpoint around the state dict
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights={path} hold a {type(state).__name__}, not a state dict of tensors; pass the "
                          f"{builder} weights file ({url})")
    prefix = "module."  # saved from DataParallel / DDP
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, builder: str, url: str) -> None:
    """One line naming the first key (in the model's order) that is missing, unexpected or of another shape."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            problem = f"{key!r} (missing)"
        elif tuple(state[key].shape) != tuple(value.shape):
            problem = f"{key!r} (shape {tuple(state[key].shape)} in the file, {tuple(value.shape)} in {builder})"
        else:
            continue
        raise ConfigError(f"weights={path} do not fit torchvision's {builder}: first mismatching key {problem}; "
                          f"pass the {builder} weights ({url})")
    extra = [k for k in state if k not in own]
    if extra:
        raise ConfigError(f"weights={path} do not fit torchvision's {builder}: first mismatching key {extra[0]!r} "
                          f"(not in {builder}); pass the {builder} weights ({url})")


def _torchvision_preprocess(builder: str, enum: Any, report: Report) -> Preprocess:
    tf = enum.transforms()
    docs = str(enum.meta.get("_docs", ""))
    where = f"{type(enum).__name__}.{enum.name}"
    clip_len = re.search(r"clip_len=(\d+)", docs)
    rate = re.search(r"frame_rate=([\d.]+)", docs)
    frames = int(clip_len.group(1)) if clip_len else 16
    pre = Preprocess(frames, mean=tf.mean, std=tf.std, crop_size=list(tf.crop_size), resize=list(tf.resize_size),
                     frame_rate=float(rate.group(1)) if rate else None, layout="BCTHW", antialias=False,
                     round_crop=True)
    report.taken.append(("frames, sampling", f"{where}.meta['_docs'] (clip_len={frames}"
                         + (f", frame_rate={rate.group(1)})" if rate else ")")))
    report.taken.append(("resize, crop, mean/std", f"{where}.transforms() (VideoClassification)"))
    report.taken.append(("clip", pre.describe()))
    return pre


# ----------------------------------------------------------------------------------------- Hugging Face
def _hf_folder(source: str) -> Path:
    from vidxai.models.hf_video import pretrained_folder

    try:
        return pretrained_folder(source)
    except MissingPathError:
        raise no_such_source(source) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pretrained: cannot read {path} ({type(exc).__name__}: {str(exc)[:120]}); pass an intact "
                          "save_pretrained folder") from None
    if not isinstance(data, dict):
        raise ConfigError(f"pretrained: {path} holds no JSON object; pass an intact save_pretrained folder")
    return data


def _load_hf(source: str) -> Pretrained:
    from transformers import AutoModelForVideoClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES as VIDEO

    folder = _hf_folder(source)
    weights = hf_weights(source, folder)
    config = _read_json(folder / "config.json")
    model_type = str(config.get("model_type"))
    if model_type not in VIDEO:
        raise ConfigError(f"pretrained={source} holds a {model_type!r} model, which transformers has no video "
                          f"classifier for; vidxai explains {', '.join(_hf_explained())} ...ForVideoClassification "
                          "folders and torchvision:<builder>")
    if config.get("auto_map"):
        log.info("pretrained=%s names custom code (auto_map); it is not run: transformers' own %s is used", source,
                 VIDEO[model_type])
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one block of what was loaded, not a progress bar
    try:
        model, info = AutoModelForVideoClassification.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, output_loading_info=True, dtype=torch.float32)
    except Exception as exc:  # corrupt files: safetensors, torch and transformers raise many types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"pretrained={source}: cannot load the {VIDEO[model_type]} weights of {folder} "
                          f"({type(exc).__name__}: {detail[:160]}); pass an intact save_pretrained folder") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or ())
    mismatched = [str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys") or ()]
    if missing or mismatched:
        first = (missing or mismatched)[0]
        head = any(k.startswith(("classifier", "fc_norm")) for k in missing)
        why = (" a backbone without its trained classifier: fine-tune it with train.py model.net.pretrained="
               f"{source}" if head else " weights that do not fit its config.json")
        raise ConfigError(f"pretrained={source}: {weights.name} lacks {first!r} ({len(missing) + len(mismatched)} "
                          f"weights missing or of another shape):{why}")
    report = Report(source, f"transformers {type(model).__name__}", "huggingface", str(weights))
    if folder != Path(source).expanduser():
        report.taken.append(("folder", str(folder)))
    labels = _hf_labels(model.config, report)
    preprocess = _hf_preprocess(folder, model.config, report)
    return Pretrained(model, preprocess, labels, report)


def _hf_explained() -> tuple[str, ...]:
    from vidxai.models.foreign import hf_explained

    return hf_explained()


def _hf_labels(config: Any, report: Report) -> list[str]:
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(n)]
    generic = all(label == f"LABEL_{i}" for i, label in enumerate(labels))
    report.taken.append((f"labels ({n})", "config.json id2label" + (" (generic LABEL_i names: the folder has no "
                                                                     "label names)" if generic else "")))
    return labels


def _hf_frames(pre: Mapping[str, Any], config: Any, report: Report) -> tuple[int | None, str]:
    """The clip's frame count: the model's own (``config.json``'s ``num_frames`` / ``frames_per_clip``: what it was
    trained on, and what VideoMAE's position embeddings fix) before the processor config's ``num_frames``."""
    own = next(((key, int(getattr(config, key))) for key in ("num_frames", "frames_per_clip")
                if getattr(config, key, None)), None)
    theirs = next(((key, int(pre[key])) for key in ("num_frames", "frames_per_clip") if pre.get(key)), None)
    if own is not None:
        if theirs is not None and theirs[1] != own[1]:
            report.notes.append(f"the preprocessor config's {theirs[0]}={theirs[1]} differs from config.json's "
                                f"{own[0]}={own[1]}; the model's {own[1]} are taken")
        return own[1], f"config.json {own[0]}"
    if theirs is not None:
        return theirs[1], f"preprocessor {theirs[0]}"
    return None, ""


def _size_of(value: Any, int_is_shortest: bool = False) -> tuple[int | tuple[int, int] | None, str]:
    """A processor's ``size`` / ``crop_size``: an int side (``shortest_edge``) or ``(H, W)``. A bare int is the
    shorter side for ``size`` (``int_is_shortest``: how transformers' video processors read it) and a square for
    ``crop_size``."""
    if value is None:
        return None, "none"
    if isinstance(value, int):
        return (value, f"shortest_edge={value}") if int_is_shortest else ((value, value), f"{value}x{value}")
    if isinstance(value, Mapping):
        if value.get("longest_edge") or value.get("max_height") or value.get("max_width"):
            raise ConfigError(f"pretrained: the preprocessor config's size {dict(value)} also bounds the longer side, "
                              "which vidxai's resize does not do; set size to {\"shortest_edge\": N} or "
                              "{\"height\": H, \"width\": W}")
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), f"shortest_edge={value['shortest_edge']}"
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"])), f"{value['height']}x{value['width']}"
    if isinstance(value, Sequence) and len(value) == 2:
        return (int(value[0]), int(value[1])), f"{value[0]}x{value[1]}"
    raise ConfigError(f"pretrained: cannot read the size {value!r} of the preprocessor config; set size to "
                      "{\"shortest_edge\": N} or {\"height\": H, \"width\": W}")


#: a processor's ``resample`` (PIL's codes) -> torchvision's interpolation, as transformers' torchvision backend maps it
PIL_RESAMPLE = {0: "nearest-exact", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
#: processors that shift the rescaled pixels by -1 in their code, without an ``offset`` key in their config
OFFSET_PROCESSORS = ("VivitVideoProcessor",)


def _resample(value: Any) -> str:
    """A processor config's ``resample`` (PIL code or interpolation name; absent: bilinear) -> interpolation."""
    if value is None:
        return "bilinear"
    if isinstance(value, int) and value in PIL_RESAMPLE:
        return PIL_RESAMPLE[value]
    if isinstance(value, str) and value.lower() in PIL_RESAMPLE.values():
        return value.lower()
    raise ConfigError(f"pretrained: unknown resample {value!r} in the preprocessor config; set resample to one of "
                      f"{sorted(PIL_RESAMPLE)} (PIL's codes: {', '.join(f'{k} {v}' for k, v in PIL_RESAMPLE.items())})")


def _hf_preprocess(folder: Path, config: Any, report: Report) -> Preprocess:
    found = next((folder / n for n in HF_PREPROCESSOR_FILES if (folder / n).is_file()), None)
    pre = _read_json(found) if found is not None else {}
    image = getattr(config, "image_size", None) or getattr(config, "crop_size", None)
    side = image if isinstance(image, int) else (image[0] if image else None)
    frames, frames_from = _hf_frames(pre, config, report)
    if frames is None:
        raise ConfigError(f"pretrained={folder}: neither the preprocessor config nor config.json says how many "
                          "frames the model takes; set num_frames in video_preprocessor_config.json")
    if found is None:
        defaults = (f"resize shortest_edge={side}, centre crop {side}x{side}, rescale 1/255, ImageNet mean/std "
                    "(transformers' VideoMAE processor defaults)")
        report.notes.append(f"{folder} has no {' or '.join(HF_PREPROCESSOR_FILES)}: used {defaults}; write the "
                            "model's own preprocessor_config.json there (image_processor.save_pretrained) if it "
                            "was trained otherwise")
        pre = {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}
        where = "defaults (no preprocessor config)"
    else:
        where = found.name
    resize, resize_text = _size_of(pre.get("size"), True) if pre.get("do_resize", True) else (None, "none")
    crop, crop_text = _size_of(pre.get("crop_size")) if pre.get("do_center_crop", True) else (None, "none")
    if isinstance(crop, int):
        crop = (crop, crop)
    if crop is None and side is not None and resize != (side, side):
        report.notes.append(f"no centre crop in {where}; the frames are resized only")
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    kind = str(pre.get("video_processor_type") or pre.get("image_processor_type") or "")
    offset = 1.0 if pre.get("do_rescale", True) and pre.get("offset", kind in OFFSET_PROCESSORS) else 0.0
    if pre.get("do_normalize", True):
        m = [float(v) for v in pre.get("image_mean", IMAGENET_MEAN)]
        s = [float(v) for v in pre.get("image_std", IMAGENET_STD)]
    else:
        m, s = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    # (x * scale - offset - m) / s for uint8 x, written for pixels v = x / 255 in [0, 1]
    k = 255.0 * scale
    mean = [(offset + mi) / k for mi in m]
    std = [si / k for si in s]
    # resized as transformers' processors do: v2's resize of the uint8 frames, antialiased (its PIL-backend
    # processors give the same pixels: tests/test_pretrained_processor.py; only a crop larger than the frame by an
    # odd number of pixels is padded with the extra row/column above/left there, below/right in its default backend)
    sample = bool(pre.get("do_sample_frames"))
    fps = pre.get("fps") if sample and not pre.get("num_frames") else None  # transformers: num_frames before fps
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0):
        raise ConfigError(f"pretrained: {where} has do_sample_frames=true with fps={fps!r}; set fps to a positive "
                          "number of frames per second (or num_frames)")
    out = Preprocess(frames, mean=mean, std=std, crop_size=crop, resize=resize, frame_rate=None, layout="BTCHW",
                     antialias=True, interpolation=_resample(pre.get("resample")), transforms_v2=True,
                     sample_frames=sample, sample_fps=fps)
    if resize is not None and out.may_pad():
        report.notes.append(f"{where}'s crop_size ({crop_text}) is larger than its resize ({resize_text}): where the "
                            "resized frame is smaller, it is padded with zeros to the crop, as transformers' "
                            "processors do")
    if sample:
        rule = (f"{where} do_sample_frames=true" + (f", fps={fps:g}" if fps is not None else "")
                + " (transformers' sample_frames; the clip line below says how)")
    else:
        rule = ((f"{where} has no do_sample_frames=true" if found is not None else "no preprocessor config")
                + ", so the folder does not say how it was trained to sample (transformers takes every frame it is "
                "given): spread uniformly over the video")
    report.taken.append(("frames", f"{frames_from} ({frames}); sampling: {rule}"))
    report.taken.append(("resize, crop, rescale, mean/std",
                         f"{where} (size {resize_text}, crop {crop_text}, rescale {scale:.6g}"
                         + (", offset 1" if offset else "") + f", mean {_fmt(m)}, std {_fmt(s)})"))
    report.taken.append(("clip", out.describe()))
    return out


# ----------------------------------------------------------------------------------------- explain.py
@dataclass
class PretrainedCheckpoint(LoadedCheckpoint):
    """A pretrained model standing where ``explain.py`` expects a ``train.py`` checkpoint: ``net`` is the model in
    vidxai's clip layout (:mod:`vidxai.models.foreign`), ``class_names`` its labels, ``transform`` its
    :class:`Preprocess`; no data splits (``videos=`` names the clips)."""

    source: str = ""
    report: Report | None = None
    transform: Preprocess | None = None
    model: nn.Module | None = None

    def test_accuracy(self) -> float | None:
        return None

    def describe(self) -> str:
        return self.report.block() if self.report is not None else f"pretrained {self.source}"


def load_for_explain(source: str, weights: str | None = None, device: str | torch.device = "cpu"
                     ) -> PretrainedCheckpoint:
    """:func:`load_pretrained` for ``explain.py``: the model wrapped for vidxai's clip layout, refused (one line,
    before any video is decoded) when VideoLRP cannot explain it."""
    from vidxai.models.contract import explain_stages
    from vidxai.models.foreign import as_video_net

    model, preprocess, labels, report = load_pretrained(source, weights, device)
    try:
        net, _ = as_video_net(model)
        explain_stages(net)
    except (TypeError, ValueError) as exc:
        msg = str(exc).removeprefix("VideoLRP ")
        raise ConfigError(f"pretrained={source} loads, but VideoLRP {msg}") from None
    return PretrainedCheckpoint(
        path=Path(str(weights) if weights is not None else report.weights), net=net, arch=report.arch,
        class_names=list(labels), preprocess=preprocess.to_dict(), data={}, hparams={}, source=str(source),
        report=report, transform=preprocess, model=model,
    )


def closest_labels(value: str, labels: Sequence[str], n: int = 3) -> list[str]:
    """The labels closest to ``value`` (difflib; case-insensitive), best first."""
    lowered = {label.lower(): label for label in labels}
    return [lowered[m] for m in difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.4)]
