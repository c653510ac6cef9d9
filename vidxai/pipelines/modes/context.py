"""What every explain mode gets (:class:`ExplainContext`) and gives back (:class:`ModeResult`).

The context is built once by :func:`vidxai.pipelines.explain.explain`: the checkpoint, its transform, the
device, the target class, the output folder, the W&B run (rank 0 only), the :class:`~vidxai.xai.config.LRPConfig`
and, for the split-wide modes (profile, evaluate), the Trainer that splits the videos over processes.
Clips come from a file (``video=``) or from the checkpoint's own data (same layout, root, seed and split).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vidxai.checkpoint import LoadedCheckpoint
from vidxai.data import VideoDataModule, VideoDecodeError, read_clip
from vidxai.data.clips import prepare_clip
from vidxai.data.decoders import decord_available, nvdec_usable, open_video
from vidxai.errors import ConfigError, UserError
from vidxai.pipelines._common import to_plain
from vidxai.pipelines.sharded import run_in_process, run_sharded
from vidxai.pretrained import PretrainedCheckpoint, closest_labels, load_for_explain
from vidxai.xai.config import LRPConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    """One clip ready for the model, with where it came from."""

    video: torch.Tensor  # (T,3,h,w) float, normalised, on the device
    frames: np.ndarray  # (T,h,w,3) uint8, what the model saw
    frame_indices: list[int]
    fps: float
    label: int | None
    source: str


@dataclass
class ModeResult:
    """What a mode wrote: ``data`` (the JSON summary it saved) and ``lines`` (its terminal summary)."""

    mode: str
    data: dict[str, Any]
    lines: list[str]

    def summary(self, out_dir: str | Path) -> str:
        """The mode's own lines, then the files written under ``out_dir``."""
        return "\n".join([*self.lines, files_line(Path(out_dir))])


@dataclass
class ExplainContext:
    """Everything a mode needs; ``options`` holds the mode's own keys (split, index, top_k, compare...)."""

    options: DictConfig
    ck: LoadedCheckpoint
    transform: Any
    device: torch.device
    target: int | None
    out_dir: Path
    run: Any
    lrp: LRPConfig
    #: the Trainer whose strategy splits a split-wide mode's videos over processes (None: this process only)
    trainer: Any = None
    _datamodule: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0, or the only process)."""
        return self.trainer is None or bool(self.trainer.is_global_zero)

    def shard(self, n: int, step: Callable[[int], None], finish: Callable[[], Any]) -> list[Any] | None:
        """``step(i)`` for this process's share of the videos ``range(n)``, then ``finish()`` of every process,
        gathered on rank 0 (:func:`vidxai.pipelines.sharded.run_sharded`; ``None`` on the other ranks).
        Without a trainer, every video in this process."""
        if self.trainer is None:
            return run_in_process(n, step, finish)
        return run_sharded(self.trainer, self.ck.net, n, step, finish)

    @property
    def pretrained(self) -> bool:
        """Whether the model is a ``pretrained=`` one (no data splits: its clips are ``video=`` / ``videos=``)."""
        return is_pretrained(self.ck)

    def dataset(self, split: str) -> Any:
        """The checkpoint's own ``split`` (``train``/``val``/``test``), as the model saw it at validation; for a
        ``pretrained=`` model, the clips of ``videos=`` (whatever ``split``)."""
        if self.pretrained:
            if self._datamodule is None:
                self._datamodule = VideoFiles.from_option(self.options.get("videos"), self.ck.class_names)
            return self._datamodule
        if split not in SPLITS:
            raise UserError(f"split={split!r}; choose val, test or train")
        if self._datamodule is None:
            self._datamodule = checkpoint_datamodule(self.ck, self.options.paths.get("cache_dir"))
        return self._datamodule.dataset(split, train=False)

    def explainer(self, lrp: LRPConfig | None = None) -> Any:
        """The explainer of the checkpoint's network for ``lrp`` (default: the run's); a setting this network
        refuses (``chunk_frames`` on a 3D CNN) is one ``error:`` line."""
        try:
            return (lrp or self.lrp).build(self.ck.net, preprocess=self.ck.preprocess)
        except ValueError as exc:
            raise ConfigError(f"{exc} (checkpoint {self.ck.path}: {self.ck.arch})") from None

    def split_size(self, dataset: Any, split: str) -> int:
        """How many videos of ``split`` a split-wide mode takes (``limit=N`` caps it); never zero."""
        limit = self.options.get("limit")
        n = len(dataset) if limit is None else min(len(dataset), int(limit))
        if n == 0:
            raise UserError(f"split={split} of the checkpoint's data is empty; choose another split=")
        return n

    def clip(self, dataset: Any, i: int) -> Clip:
        """Clip ``i`` of ``dataset``, ready for the model; one clear error when it cannot be decoded (the data set
        would silently hand over the next video instead)."""
        if isinstance(dataset, VideoFiles):
            return self.clip_from_file(str(dataset.entries[i].record.path))
        sample = dataset[i]
        entry = dataset.entries[i]
        if int(sample["index"]) != int(i):
            raise UserError(f"cannot decode video {entry.record.path} (see the warning above); repair or remove the "
                            "file, or explain other videos (index=, videos=)")
        x, shown, idx = prepare_clip(sample["video"], sample["frame_indices"], self.transform, self.device)
        return Clip(x, shown, idx, float(entry.fps), int(sample["label"]), entry.record.path)

    def clip_from_file(self, path: str) -> Clip:
        """The clip of any video file, sampled and preprocessed as the checkpoint's training did."""
        p = Path(path).expanduser()
        pre = self.ck.preprocess
        backend = pre.get("backend", "auto")  # the training backend when it is installed here too
        if (backend == "decord" and not decord_available()) or (backend == "nvdec" and not nvdec_usable()):
            backend = "auto"
        if not p.is_file():
            raise UserError(f"video not found: {p}; pass video=path/to/file.avi")
        reader = getattr(self.transform, "read_frames", None)  # a pretrained model's own sampling
        if reader is not None:
            with quiet_decoders():
                video, idx, fps, _ = reader(p)
            x, shown, idx = prepare_clip(video, idx, self.transform, self.device)
            return Clip(x, shown, idx, fps, label_from_folder(p, self.ck.class_names), str(p))
        try:
            with quiet_decoders():
                video, idx, fps = read_clip(p, int(pre["num_frames"]), size=pre.get("size"), backend=backend)
        except VideoDecodeError as exc:
            raise UserError(
                f"cannot decode video {p}: {exc}; pass a readable video file (mp4/avi/mpg/mkv/webm/mov)"
            ) from None
        x, shown, idx = prepare_clip(video, idx, self.transform, self.device)
        return Clip(x, shown, idx, fps, label_from_folder(p, self.ck.class_names), str(p))


@contextmanager
def quiet_decoders() -> Iterator[None]:
    """Hold back what the video decoders print on the process's stderr (decord's and FFmpeg's C++ ``ERROR`` lines)
    while reading one file: a file that cannot be decoded ends in our one ``error:`` line, not theirs before it.
    When the read succeeds, what they printed is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def checkpoint_datamodule(ck: LoadedCheckpoint, cache_dir: str | None) -> Any:
    """The checkpoint's own data module (same layout, root, seed and split), set up for all splits."""
    data = {k: v for k, v in ck.data.items() if not k.startswith("_")}
    if not data:
        raise UserError(f"checkpoint {ck.path} carries no data config; pass video=PATH to explain a file")
    data["num_workers"] = 0
    if data.get("decode_device") == "cuda" and not nvdec_usable():
        log.warning("the checkpoint decoded videos on the GPU (NVDEC), which is not available here: decoding on the "
                    "CPU (colours within a few levels of the GPU's)")
        data["decode_device"], data["backend"] = "cpu", "auto"
    if cache_dir:
        data["cache_dir"] = cache_dir
    try:
        dm = VideoDataModule(**data)
    except TypeError as exc:
        raise UserError(f"checkpoint {ck.path}: its data config does not fit this vidxai version ({exc})") from None
    if ck.datamodule_state:
        dm.load_state_dict(ck.datamodule_state)  # the checkpoint's own split, not a recomputed one
    dm.prepare_data()
    dm.setup(None)
    if list(dm.class_names) != list(ck.class_names):
        raise UserError(
            f"the data at {data.get('root')} has classes {list(dm.class_names)} but checkpoint {ck.path} "
            f"was trained on {ck.class_names}; pass video=PATH or restore the data set"
        )
    return dm


def label_from_folder(path: Path, class_names: list[str]) -> int | None:
    """The label of a video file when it sits in a folder named after a class, else ``None``."""
    return next((class_names.index(part) for part in reversed(path.parts[:-1]) if part in class_names), None)


def is_pretrained(ck: Any) -> bool:
    """Whether ``ck`` is a ``pretrained=`` model (:class:`vidxai.pretrained.PretrainedCheckpoint`)."""
    return isinstance(ck, PretrainedCheckpoint)


#: video file suffixes a ``videos=<folder>`` is searched for
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v")


@dataclass
class _Record:
    path: str
    label: int


@dataclass
class _Entry:
    record: _Record
    fps: float
    height: int
    width: int
    frames: int


@dataclass
class VideoFiles:
    """The clips of ``videos=`` for a ``pretrained=`` model, in the shape the split-wide modes read a data set in
    (``entries[i].record.path`` / ``.label``, ``.fps``, ``.height``, ``.width``; ``size`` ``None``: each video is
    decoded at its own size and resized by the model's preprocessing). Every file is opened once when the list is
    made (frame count, rate, size), so a file that is not a video is one error line before anything is decoded.
    ``label``: the class of the folder a file sits in when it is named like one of the model's labels, else -1."""

    entries: list[_Entry]
    size: Any = None

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_option(cls, videos: Any, class_names: list[str]) -> VideoFiles:
        """From ``videos=``: a folder (its video files, recursively), a glob, or a list of files."""
        value = to_plain(videos)
        if value in (None, "", []):
            raise UserError("a pretrained= model has no data splits: pass videos=<folder or glob> (your clips) for "
                            "mode=profile / mode=evaluate, or video=FILE for one clip")
        paths = _video_paths([value] if isinstance(value, str) else [str(v) for v in value])
        entries = []
        for p in paths:
            try:
                with quiet_decoders(), open_video(str(p)) as dec:
                    n, fps, h, w = int(dec.num_frames), float(dec.fps or 0.0), int(dec.height), int(dec.width)
            except VideoDecodeError as exc:
                raise UserError(f"videos=: {p} is not a readable video ({exc}); remove it or name the clips with a "
                                "glob (videos='clips/*.mp4')") from None
            if n < 1:
                raise UserError(f"videos=: {p} has no decodable frames; remove it or name the clips with a glob")
            label = label_from_folder(p, class_names)
            entries.append(_Entry(_Record(str(p), -1 if label is None else label), fps, h, w, n))
        return cls(entries)


def _video_paths(patterns: list[str]) -> list[Path]:
    """The video files of folders, globs and plain file names, sorted, each once."""
    found: list[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if p.is_dir():
            hits = [q for q in sorted(p.rglob("*")) if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES]
            what = f"folder {p} holds no video files ({', '.join(VIDEO_SUFFIXES)})"
        elif p.is_file():
            hits, what = [p], ""
        else:
            hits = [Path(q) for q in sorted(glob.glob(str(p), recursive=True)) if Path(q).is_file()]
            what = f"no file matches {pattern}"
        if not hits:
            raise UserError(f"videos={pattern}: {what}; pass a folder of clips, a glob or a list of files")
        found += [q for q in hits if q not in found]
    return found


def check_pretrained_options(options: DictConfig, mode: str) -> None:
    """Before the model is loaded: what a ``pretrained=`` run cannot do (data splits) and that ``video=`` is a video."""
    used = [k for k in ("split", "index", "class") if options.get(k) is not None]
    if used:
        raise UserError(f"{used[0]}= picks videos of a train.py checkpoint's data; a pretrained= model has none: "
                        "pass video=FILE, or videos=<folder or glob> for mode=profile / mode=evaluate")
    if mode in ("profile", "evaluate"):
        videos = to_plain(options.get("videos"))
        if videos in (None, "", []):
            raise UserError(f"mode={mode} with pretrained= explains your clips: pass videos=<folder or glob>")
        _video_paths([videos] if isinstance(videos, str) else [str(v) for v in videos])  # they exist
    if mode in ("single", "compare") and options.get("video") is None:
        raise UserError("pass video=FILE (one clip) to explain it with the pretrained= model, or videos=<folder or "
                        "glob> with mode=profile / mode=evaluate")
    video = options.get("video")
    if video is not None:
        p = Path(str(video)).expanduser()
        if not p.is_file():
            raise UserError(f"video not found: {p}; pass video=path/to/clip.mp4")
        try:
            with quiet_decoders(), open_video(str(p)) as dec:
                n = int(dec.num_frames)
        except VideoDecodeError as exc:
            raise UserError(f"cannot decode video {p}: {exc}; pass a readable video file (mp4/avi/mpg/mkv/webm/mov)"
                            ) from None
        if n < 1:
            raise UserError(f"cannot decode video {p}: no decodable frames; pass a readable video file")


def load_pretrained_model(options: DictConfig, device: torch.device) -> Any:
    """The ``pretrained=`` model for ``explain.py`` (:func:`vidxai.pretrained.load_for_explain`)."""
    weights = options.get("weights")
    return load_for_explain(str(options.pretrained), None if weights in (None, "") else str(weights), device)


def class_index(value: Any, class_names: list[str], key: str = "target") -> int | None:
    """A class given by name or index (``target=``, ``class=``) as an index; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        idx = int(value)
        if not 0 <= idx < len(class_names):
            raise UserError(f"{key}={idx} is out of range; the model has {len(class_names)} classes "
                            f"(0..{len(class_names) - 1})")
        return idx
    if value not in class_names:
        close = closest_labels(str(value), class_names)
        hint = f" (closest: {', '.join(repr(c) for c in close)})" if close else ""
        known = (f"its classes are {class_names}" if len(class_names) <= 20 else
                 f"pass one of its {len(class_names)} labels or an index 0..{len(class_names) - 1}")
        raise UserError(f"unknown class {value!r} for {key}=: the model has no such label{hint}; {known}")
    return class_names.index(value)


def files_line(out: Path) -> str:
    """``files in <out>: a, b, ...``: what a run wrote (no hidden files, W&B internals or logs)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not any(part.startswith(".") or part in ("wandb", "journal")
                               for part in p.relative_to(out).parts[:-1])
                   and p.suffix != ".log")
    return f"  files in {out}: " + (", ".join(str(p.relative_to(out)) for p in files) or "none")


def pct(value: Any) -> str:
    """A share as a whole percentage; ``n/a`` for a missing or undefined one."""
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * float(value):.0f}%"
