"""LightningDataModule tying layouts, scan, splits, clip datasets and the device-side transform."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from vidxai.data.dataset import EpochSampler, VideoClipDataset, check_on_bad_video, seed_worker
from vidxai.data.decoders import VideoDecodeError, resolve_backend
from vidxai.data.feature_cache import (
    CACHED_SAMPLING,
    CachedFeatureDataset,
    FeatureStore,
    check_cacheable,
    feature_cache_key,
    fill_feature_cache,
)
from vidxai.data.layouts import LAYOUTS, VideoRecord, discover, split_lists
from vidxai.data.manifest import VideoEntry, default_cache_dir, manifest_paths, scan, write_report
from vidxai.data.splits import SPLITS, group_split, leave_one_group_out
from vidxai.data.synthetic import make_synthetic_ucf11
from vidxai.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform
from vidxai.errors import ConfigError

log = logging.getLogger(__name__)


def _check_settings(layout: str, root: Any, synthetic: Any, size: Sequence[int], num_frames: int, timeout: float,
                    min_frames: int, batch_size: int, num_workers: int) -> None:
    """One clear ``ConfigError`` naming the first bad data setting (called before anything is read)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r} is unknown: use one of {', '.join(LAYOUTS)}")
    if synthetic is not None and layout != "ucf11":
        raise ConfigError(f"data.synthetic generates a UCF11 layout but data.layout={layout!r}: set "
                         "data.layout=ucf11 or data.synthetic=null")
    if root is None or not str(root).strip():
        raise ConfigError("data.root is empty: point it at the dataset folder, e.g. data.root=/data/UCF11")
    if len(tuple(size)) != 2 or any(int(v) < 1 for v in size):
        raise ConfigError(f"data.size must be (height, width) with positive entries, got {size!r}")
    if int(num_frames) < 1:
        raise ConfigError(f"data.num_frames must be >= 1, got {num_frames}")
    if timeout < 0 or min_frames < 1:
        raise ConfigError(f"data.timeout must be >= 0 and data.min_frames >= 1, got {timeout} and {min_frames}")
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(f"data.batch_size must be >= 1 and data.num_workers >= 0, got "
                         f"{batch_size} and {num_workers}")


class VideoDataModule(pl.LightningDataModule):
    """Video classification data: discover -> scan (cached) -> group-disjoint split -> uint8 clips.

    Args:
        layout: ``"ucf11"``, ``"ucf101"`` or ``"folder"`` (see :func:`vidxai.data.layouts.discover`).
        root: dataset folder.
        num_frames: frames per clip (T).
        size: ``(H, W)`` frames are resized to while decoding.
        crop_size: model input size (int or ``(h, w)``) cropped from ``size``; ``None`` = no crop.
        batch_size, num_workers, pin_memory, persistent_workers: DataLoader settings; ``num_workers="auto"``
            takes one worker per CPU core this process may use, less one (1..8).
        timeout: seconds a DataLoader worker may take for one batch before training stops with an error
            (a hung decoder is reported, never a silent deadlock); 0 = no limit. Needs ``num_workers > 0``.
        min_frames: videos with fewer decodable frames are listed as bad (a one-frame "video" is a still).
        val_fraction, test_fraction: share of groups (per class) held out for val / test.
        fold: leave-one-group-out fold (test = the fold-th group of each class); ``None`` = random split.
        seed: seed of the split and of the training clip sampler.
        backend: ``"auto"``, ``"decord"``, ``"pyav"`` or ``"nvdec"``; decode_device: ``"cpu"`` or ``"cuda"``
            (NVDEC through PyNvVideoCodec, extra ``gpu``; see :func:`vidxai.data.decoders.resolve_backend`).
        on_bad_video: ``"skip"`` (warn, report file) or ``"raise"`` for unreadable/corrupt videos.
        test_clips: K uniform clips per video at test time, batched as ``(B, K, T, 3, H, W)``.
        mean, std, flip: normalisation and training flip of :class:`VideoTransform`.
        cache_dir: where the manifest and bad-video report go (default ``~/.cache/vidxai``).
        synthetic: kwargs of :func:`make_synthetic_ucf11`; when given, ``prepare_data`` generates the
            synthetic set at ``root`` if missing (layout must be ``"ucf11"``).
        group_disjoint: split by group (default) or by video.
        split_id: UCF101 official split (1..3) used when the split lists exist under ``root``.
        feature_cache: serve cached per-frame encoder features instead of clips for fit (train and val);
            needs a network with a frozen per-frame encoder (see :mod:`vidxai.data.feature_cache`).
            Training clips are then deterministic (uniform sampling, centre crop, no flip).
        worker_start: how DataLoader workers start: ``"auto"``/``"spawn"`` (see :func:`worker_start_method`), or
            ``"fork"`` (starts faster, but unsafe in a process that runs threads: a worker forked while a thread
            holds a lock hangs; no CUDA decoding).
    """

    def __init__(self, layout: str = "ucf11", root: str = "data/synthetic", num_frames: int = 8,
                 size: Sequence[int] = (112, 112), crop_size: int | Sequence[int] | None = None,
                 batch_size: int = 8, num_workers: int | str = 0, pin_memory: bool = False,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, fold: int | None = None,
                 seed: int = 0, backend: str = "auto", decode_device: str = "cpu",
                 on_bad_video: str = "skip", test_clips: int = 1,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 flip: bool = True, cache_dir: str | None = None, synthetic: dict[str, Any] | None = None,
                 persistent_workers: bool = False, group_disjoint: bool = True, split_id: int = 1,
                 feature_cache: bool = False, timeout: float = 300.0, min_frames: int = 2,
                 worker_start: str = "auto") -> None:
        super().__init__()
        num_workers = auto_num_workers() if num_workers == "auto" else num_workers
        if not isinstance(num_workers, int):
            raise ConfigError(f"data.num_workers must be an integer >= 0 or 'auto', got {num_workers!r}")
        _check_settings(layout, root, synthetic, size, num_frames, timeout, min_frames, batch_size, num_workers)
        self.layout = layout
        self.root = str(root)
        self.num_frames = int(num_frames)
        self.size = (int(size[0]), int(size[1]))
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.fold = None if fold is None else int(fold)
        self.seed = int(seed)
        self.backend = resolve_backend(backend, decode_device)  # fail at start-up, not in a worker
        self.decode_device = decode_device
        self.on_bad_video = check_on_bad_video(on_bad_video)
        if worker_start not in WORKER_STARTS:
            raise ConfigError(f"data.worker_start={worker_start!r} is unknown: use one of {', '.join(WORKER_STARTS)}")
        self.worker_start = worker_start
        if test_clips < 1:
            raise ConfigError(f"data.test_clips must be >= 1, got {test_clips}")
        self.test_clips = int(test_clips)
        self.transform = VideoTransform(mean=mean, std=std, crop_size=crop_size, flip=flip)
        crop = self.transform.crop_size
        if crop is not None and (crop[0] > self.size[0] or crop[1] > self.size[1]):
            raise ConfigError(f"data.crop_size={list(crop)} is larger than data.size={list(self.size)}: lower "
                              "data.crop_size or raise data.size")
        self.timeout = float(timeout)
        self.min_frames = int(min_frames)
        self.cache_dir = cache_dir
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.group_disjoint = bool(group_disjoint)
        self.split_id = int(split_id)
        self.feature_cache = bool(feature_cache)
        self._feature_store_dir: Path | None = None
        self._entries: list[VideoEntry] | None = None
        self._class_names: list[str] | None = None
        self._split: dict[str, list[int]] | None = None
        self._loaded_state: dict[str, Any] | None = None
        self._scanned: tuple[list[VideoEntry], list[str]] | None = None
        self._resume_epoch: int | None = None

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Generate the synthetic set if asked and missing, then scan the videos (cached manifest)."""
        if self.synthetic is not None:
            make_synthetic_ucf11(self.root, **self.synthetic)
        self._scan()

    def _scan(self) -> tuple[list[VideoEntry], list[str]]:
        """Discover (checks root, class folders and the split first: no decoding yet), then scan once."""
        if self._scanned is not None:
            return self._scanned
        records, class_names = discover(self.layout, self.root)
        self._make_split(records)  # too few groups for the split: fail before decoding anything
        entries, bad = scan(records, self.cache_dir, self.backend)
        short = [e for e in entries if e.num_frames < self.min_frames]
        if short:
            entries = [e for e in entries if e.num_frames >= self.min_frames]
            bad = bad + [(e.record.path, f"{e.record.path}: only {e.num_frames} decodable frame(s), fewer than "
                          f"data.min_frames={self.min_frames}") for e in short]
        if bad:
            _, report = manifest_paths(records, self.cache_dir, self.backend)
            if short:
                write_report(report, bad)
            if self.on_bad_video == "raise":
                path, reason = bad[0]
                where = reason if path in reason else f"{path}: {reason}"
                raise VideoDecodeError(f"bad video {where} ({len(bad)} bad video(s) listed in {report}): fix or "
                                       "remove the file, or set data.on_bad_video=skip")
            log.warning("skipping %d unreadable, too short or corrupt video(s), listed in %s", len(bad), report)
        if entries:
            found = {e.record.class_name for e in entries}
            empty = [c for c in class_names if c not in found]
            if empty:
                raise ConfigError(f"class folder(s) {empty} under data.root={self.root!r} have no decodable "
                                  "video: add videos or remove the folder (see the bad-video report)")
        self._scanned = (entries, class_names)
        return self._scanned

    def setup(self, stage: str | None = None) -> None:
        """Discover, scan (cache hit after ``prepare_data``) and split; idempotent."""
        if self._entries is not None:
            return
        if self.synthetic is not None and not (Path(self.root) / "_COMPLETE.json").is_file():
            make_synthetic_ucf11(self.root, **self.synthetic)
        entries, class_names = self._scan()
        if not entries:
            raise ConfigError(f"no decodable videos under data.root={self.root!r}: see the bad-video report "
                             f"in {self.cache_dir or 'the cache dir'}")
        self._entries, self._class_names = entries, class_names
        self._split = self._make_split([e.record for e in entries])
        if self._loaded_state is not None:
            self._apply_loaded_state()

    def _make_split(self, records: list[VideoRecord]) -> dict[str, list[int]]:
        if self.fold is not None:
            return leave_one_group_out(records, self.fold, self.val_fraction, self.seed)
        official = split_lists(self.root, self.split_id) if self.layout == "ucf101" else None
        if official is None:
            return group_split(records, self.val_fraction, self.test_fraction, self.seed, self.group_disjoint)
        by_rel = {self._relative(r.path): i for i, r in enumerate(records)}
        test = sorted(by_rel[p] for p in official["test"] if p in by_rel)
        train_pool = sorted(by_rel[p] for p in official["train"] if p in by_rel)
        if not train_pool or not test:
            raise ConfigError(f"the UCF101 split lists (split {self.split_id}) name no video found under "
                             f"data.root={self.root!r}: check data.root")
        inner = group_split([records[i] for i in train_pool], self.val_fraction, 0.0, self.seed,
                            self.group_disjoint)
        return {"train": [train_pool[i] for i in inner["train"]],
                "val": [train_pool[i] for i in inner["val"]], "test": test}

    def _relative(self, path: str) -> str:
        try:
            return Path(path).relative_to(Path(self.root).expanduser().resolve()).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def _require_setup(self) -> None:
        if self._entries is None or self._split is None:
            raise RuntimeError("VideoDataModule is not set up: call prepare_data() and setup() first")

    # ------------------------------------------------------------------ public properties
    @property
    def class_names(self) -> list[str]:
        """Class names in label order (available after ``setup()``)."""
        self._require_setup()
        assert self._class_names is not None
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes (available after ``setup()``)."""
        return len(self.class_names)

    @property
    def preprocess(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the input pipeline."""
        t = self.transform.preprocess
        return {"num_frames": self.num_frames, "size": list(self.size), "crop_size": t["crop_size"],
                "mean": t["mean"], "std": t["std"], "backend": self.backend}

    def records_for(self, split: str) -> list[VideoEntry]:
        """Scanned entries of ``split`` (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ConfigError(f"split={split!r} is unknown: use one of {', '.join(SPLITS)}")
        self._require_setup()
        assert self._entries is not None and self._split is not None
        return [self._entries[i] for i in self._split[split]]

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Class names and the split (relative paths per split), saved into checkpoints."""
        self._require_setup()
        state = {"class_names": self.class_names, "layout": self.layout, "root": self.root,
                 "split": {s: [self._relative(e.record.path) for e in self.records_for(s)] for s in SPLITS}}
        trainer = getattr(self, "trainer", None)
        if hasattr(trainer, "fit_loop"):
            # the epoch a resumed run trains next: Lightning iterates the training loader before it has
            # worked that out from its loop counters, so the shuffling order is told here
            done = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            state["resume_epoch"] = int(trainer.current_epoch) + (1 if done else 0)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use a checkpoint's split (and check its class names) instead of recomputing it."""
        if "split" not in state_dict or "class_names" not in state_dict:
            raise ConfigError("the checkpoint's datamodule state has no 'split'/'class_names': it was not "
                             "saved by VideoDataModule")
        self._loaded_state = dict(state_dict)
        if state_dict.get("resume_epoch") is not None:
            self._resume_epoch = int(state_dict["resume_epoch"])
        if self._entries is not None:
            self._apply_loaded_state()

    def _apply_loaded_state(self) -> None:
        assert self._loaded_state is not None and self._entries is not None
        saved = list(self._loaded_state["class_names"])
        if saved != self._class_names:
            raise ConfigError(f"the checkpoint was trained on classes {saved} but data.root={self.root!r} has "
                             f"{self._class_names}: point data.root at the checkpoint's dataset")
        by_rel = {self._relative(e.record.path): i for i, e in enumerate(self._entries)}
        split: dict[str, list[int]] = {}
        missing = 0
        for s in SPLITS:
            paths = self._loaded_state["split"].get(s, [])
            split[s] = [by_rel[p] for p in paths if p in by_rel]
            missing += len(paths) - len(split[s])
        if missing:
            log.warning("%d video(s) of the checkpoint's split are missing under %s or were skipped as bad",
                        missing, self.root)
        self._split = split

    # ------------------------------------------------------------------ loaders
    def dataset(self, split: str, train: bool | None = None) -> VideoClipDataset:
        """Clip dataset of ``split``; training sampling for ``train`` (default: split == 'train')."""
        is_train = split == "train" if train is None else train
        return VideoClipDataset(self.records_for(split), self.num_frames, self.size, train=is_train,
                                clips_per_video=self.test_clips if split == "test" and not is_train else 1,
                                backend=self.backend, seed=self.seed, on_bad_video=self.on_bad_video,
                                device=self.decode_device)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        workers = self.num_workers > 0
        context = self._worker_context(self.decode_device)
        dataset: Any = self.dataset(split)
        if self.feature_cache and split in ("train", "val"):
            dataset = self._cached_features(split)
            context = self._worker_context("cpu")  # the cached loader reads files only
        sampler = None
        trainer = getattr(self, "trainer", None)
        world, rank = int(getattr(trainer, "world_size", 1)), int(getattr(trainer, "global_rank", 0))
        if shuffle:  # the order and every clip's randomness follow from (seed, epoch): exact resumes
            sampler = EpochSampler(dataset, seed=self.seed, num_replicas=world, rank=rank,
                                   epoch_fn=self._sampler_epoch)
        pin = self.pin_memory and torch.cuda.is_available()  # pinning without a GPU only warns
        return _TimeoutReportingLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                                       num_workers=self.num_workers, pin_memory=pin,
                                       persistent_workers=self.persistent_workers and workers,
                                       multiprocessing_context=context, timeout=self.timeout if workers else 0,
                                       worker_init_fn=functools.partial(seed_worker, rank=rank) if workers else None)

    def _worker_context(self, decode_device: str) -> str | None:
        if self.worker_start == "fork" and decode_device == "cpu" and self.num_workers > 0:
            return "fork"  # asked for; CUDA cannot be used in forked workers
        return worker_start_method(self.num_workers, decode_device)

    def _sampler_epoch(self) -> int:
        """The epoch whose order the training loader draws: the trainer's, or a resumed checkpoint's."""
        epoch = self._current_epoch()
        if self._resume_epoch is not None:
            epoch = max(epoch, self._resume_epoch)
            self._resume_epoch = None  # only the first iteration after a restore needs it
        return epoch

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "current_epoch", 0) or 0)

    # ------------------------------------------------------------------ feature cache
    def _cached_features(self, split: str) -> CachedFeatureDataset:
        """Deterministic clips of ``split`` as cached encoder features; computes the missing ones first.

        The encoder is the training module's ``net`` (``trainer.lightning_module.net``), on its device; with
        several processes each computes its share, then all wait for the others.
        """
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None)
        if module is None:
            raise RuntimeError("data.feature_cache=true: the data module must be attached to a Trainer with a "
                               "model (the cache needs its encoder)")
        net = getattr(module, "net", module)
        check_cacheable(net)
        # the key is recomputed for every loader: another model (or changed weights) gets its own cache
        root = Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()
        store = FeatureStore(root, feature_cache_key(net, self.preprocess))
        store.write_meta({"network": type(net).__name__, **self.preprocess, "sampling": CACHED_SAMPLING})
        if store.dir != self._feature_store_dir:
            self._feature_store_dir = store.dir
            crop = self.transform.crop_size
            augmented = self.transform.flip or (crop is not None and tuple(crop) != self.size)
            if trainer.is_global_zero:  # said once, at the start; a warning when augmentation was configured
                say = log.warning if augmented else log.info
                say("feature cache %s: training on cached frozen-encoder features of deterministic clips "
                    "(uniform sampling, centre crop, no flip: random crop, flip and frame jitter are off)", store.dir)
        clips = self.dataset(split, train=False)
        device = trainer.strategy.root_device
        was_training = net.training
        net.eval()

        def encode(video: Any) -> Any:
            return net.features(self.transform(video.to(device), train=False))

        try:
            workers = self.num_workers if self.decode_device == "cpu" else 0  # the encoder may run on CUDA
            done = fill_feature_cache(clips, store, encode, batch_size=self.batch_size, num_workers=workers,
                                      shard=(trainer.global_rank, trainer.world_size),
                                      multiprocessing_context=self._worker_context("cpu") if workers else None)
        finally:
            net.train(was_training)
        log.info("feature cache: %d %s clip(s) computed by rank %d, the rest read from %s", done, split,
                 trainer.global_rank, store.dir)
        trainer.strategy.barrier("vidxai_feature_cache")
        return CachedFeatureDataset(clips, store)

    def train_dataloader(self) -> DataLoader:
        """Training clips in a ``(seed, epoch)``-shuffled order (jittered segment sampling)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Uniform validation clips."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Uniform test clips, ``test_clips`` per video."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turn the uint8 ``video`` of a batch into normalised floats, on the device (cached features pass)."""
        if isinstance(batch, dict) and "video" in batch:
            trainer = getattr(self, "trainer", None)
            training = bool(trainer is not None and trainer.training)
            generator = None
            if training and "index" in batch:  # crops and flips from (seed, epoch, the batch's videos)
                generator = torch.Generator().manual_seed(augment_seed(self.seed, self._current_epoch(),
                                                                       batch["index"]))
            batch = {**batch, "video": self.transform(batch["video"], train=training, generator=generator)}
        return batch


class _TimeoutReportingLoader(DataLoader):
    """A DataLoader whose worker timeout (``data.timeout``) ends in a message that names the setting and what
    to do, instead of a bare ``RuntimeError`` deep in torch."""

    def __iter__(self):  # noqa: ANN204 - a DataLoader iterator
        return _ReportingIterator(super().__iter__(), self.timeout)


class _ReportingIterator:
    def __init__(self, it: Any, timeout: float) -> None:
        self._it, self._timeout = it, timeout

    def __iter__(self) -> _ReportingIterator:
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except RuntimeError as exc:
            if "DataLoader timed out" not in str(exc):
                raise
            raise VideoDecodeError(
                f"a DataLoader worker took longer than data.timeout={self._timeout:g} s for one batch ({exc}): a "
                "decoder hangs on some file or the machine is overloaded; check the bad-video report, raise "
                "data.timeout, or run with data.num_workers=0 to see where it stops") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)


def augment_seed(seed: int, epoch: int, indices: torch.Tensor) -> int:
    """Seed of a training batch's crops and flips: a pure function of the seed, the epoch and its videos."""
    keys = [int(seed) & 0xFFFFFFFF, int(epoch), *(int(i) for i in indices.reshape(-1).tolist())]
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


WORKER_STARTS = ("auto", "spawn", "fork")


def worker_start_method(num_workers: int, decode_device: str = "cpu") -> str | None:
    """How DataLoader workers start by default: ``spawn``, never a ``fork`` of the training process.

    The training process runs threads (Lightning's child-process observer under DDP, W&B, gloo, torch's
    thread pools); a thread that holds a lock at the moment of ``fork`` leaves the forked worker waiting on
    that lock forever (seen as a DDP run that hangs). A spawned worker is a fresh interpreter: it costs its
    imports once per loader (``persistent_workers=true``, the default of the shipped data configs, keeps
    them for the whole run), and it stays a child of the training process, so torch notices at once when a
    worker dies and a worker ends when its training process does. ``forkserver`` was tried and rejected: its
    workers are children of the server (a crashed worker went unnoticed until ``data.timeout``, and the
    workers of a SIGKILLed rank lived on), and Python 3.11's server imports the preloaded modules without the
    caller's ``sys.path``. Single-process runs spawn too: W&B and other loggers run threads there as well.
    CUDA decoding needs spawn anyway. The dataset must be picklable. ``None``: no workers, batches are loaded
    in the training process (``decode_device`` is accepted for callers that pass it).
    """
    del decode_device
    return "spawn" if num_workers > 0 else None


def auto_num_workers(limit: int = 8) -> int:
    """``data.num_workers=auto``: one DataLoader worker per CPU core this process may use, less one for the
    training process itself (at least 1, at most ``limit``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cpus = os.cpu_count() or 1
    return max(1, min(limit, cpus - 1))


__all__ = ["VideoDataModule"]
