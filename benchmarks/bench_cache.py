"""Benchmark the frozen-encoder feature cache: training epoch time without and with ``data.feature_cache``.

Same data, same model (VGG16+LSTM with a frozen VGG16, random weights), same batch size and workers:

* **uncached**: ``freeze_encoder=true`` only: every epoch decodes the clips and runs VGG16 forward (no
  gradients into it), then the LSTM and head forward + backward;
* **cached**: ``freeze_encoder=true`` and ``data.feature_cache=true``: the features are computed once before
  the first epoch (``cache_fill_s``) and every epoch reads them and runs the LSTM and head only.

Epoch time = one training epoch (no validation), the median over the epochs after the first. DataLoader workers
persist across epochs (``persistent_workers``, as in the shipped data configs): their start-up, seconds per spawned
worker, is in the first epoch only.
``feature_cache_speedup`` = uncached epoch time / cached epoch time. The data are the embedded synthetic
set (generated into a temporary folder), clips as in ``--frames``/``--size``/``--crop``.

    python benchmarks/bench_cache.py                        # 8 frames, 40x40 decode, 32x32 crop
    python benchmarks/bench_cache.py --frames 16 --size 128 --crop 112
    python benchmarks/bench_cache.py --smoke                # every code path at the tiniest size (seconds)

Prints a table and, as its last line, the JSON object also written to ``outputs/bench/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from bench_common import SMOKE_THREADS, torch_threads  # noqa: E402

from vidxai.data import VideoDataModule  # noqa: E402
from vidxai.models import VideoClassifier  # noqa: E402


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (after its loader is ready, before validation)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


def run(args: argparse.Namespace, data_root: Path, cache_dir: Path, cached: bool) -> dict:
    """One fit of ``args.epochs`` epochs; returns epoch times and the time before the first epoch."""
    dm = VideoDataModule(layout="ucf11", root=str(data_root), num_frames=args.frames, size=(args.size, args.size),
                         crop_size=args.crop, batch_size=args.batch_size, num_workers=args.workers,
                         # as the shipped data configs: workers (spawned interpreters) start once, not per epoch
                         persistent_workers=args.workers > 0,
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), cache_dir=str(cache_dir),
                         synthetic=args.synthetic, feature_cache=cached)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    net = {"arch": "vgg16_lstm", "hidden_size": args.hidden, "batch_norm": False, "pretrained": False,
           "freeze_encoder": True}
    model = VideoClassifier(net, dm.num_classes, preprocess=dm.preprocess)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.device, devices=1, logger=False,
                         callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         default_root_dir=str(cache_dir / "runs"))
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    total = time.perf_counter() - start
    later = timer.times[1:] or timer.times
    return {"epoch_s": [round(t, 3) for t in timer.times], "epoch_after_first_s": statistics.median(later),
            "before_first_epoch_s": total - sum(timer.times), "train_clips": len(dm.records_for("train"))}


#: The embedded synthetic set of ``conf/data/synthetic.yaml``.
SYNTHETIC = {"num_classes": 4, "groups_per_class": 10, "clips_per_group": 3, "num_frames": 16, "size": [64, 64],
             "fps": 8, "seed": 0}
#: ``--smoke``: 10 videos of 8 frames at 32x32 (the test suite's tiny set), 4-frame clips, a 16-wide LSTM
SMOKE_SYNTHETIC = {"num_classes": 2, "groups_per_class": 5, "clips_per_group": 1, "num_frames": 8, "size": [32, 32],
                   "fps": 8, "seed": 0}
SMOKE = {"frames": 4, "size": 32, "crop": 32, "batch_size": 4, "workers": 0, "epochs": 2, "hidden": 16}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/test_benchmarks.py to check the documented commands)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=40, help="decode size (square)")
    parser.add_argument("--crop", type=int, default=32, help="model input size (square centre/random crop)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for both runs (default: torch's choice); on a loaded machine "
                             "1 avoids OpenMP threads waiting on each other, which slows small LSTM steps 10-100x")
    parser.add_argument("--data", default=None, help="folder for the synthetic videos (default: a temporary one)")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    parser.add_argument("--smoke", action="store_true",
                        help=f"every code path at the tiniest size, one thread (seconds; measures nothing): {SMOKE}")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.synthetic = SMOKE_SYNTHETIC if args.smoke else SYNTHETIC
    if args.smoke:
        vars(args).update(SMOKE)
        args.threads = args.threads or SMOKE_THREADS
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="vidxai-bench-cache-") as tmp:
        data_root = Path(args.data) if args.data else Path(tmp) / "synthetic_ucf11"
        uncached = run(args, data_root, Path(tmp) / "cache", cached=False)
        cached = run(args, data_root, Path(tmp) / "cache", cached=True)
    speedup = uncached["epoch_after_first_s"] / cached["epoch_after_first_s"]
    report = {
        "benchmark": "feature_cache",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "device": args.device,
                    "threads": torch.get_num_threads(), "load_avg": os.getloadavg()},
        "smoke": args.smoke,
        "settings": {"model": f"vgg16_lstm (frozen VGG16, random weights, LSTM {args.hidden})", "frames": args.frames,
                     "size": args.size, "crop": args.crop, "batch_size": args.batch_size, "workers": args.workers,
                     "epochs": args.epochs, "train_clips": cached["train_clips"]},
        "uncached": uncached,
        "cached": {**cached, "cache_fill_s": cached["before_first_epoch_s"]},
        "feature_cache_speedup": round(speedup, 2),
    }
    print(f"{'run':<10} {'epoch (after the first)':>24} {'before epoch 0':>16}")
    print(f"{'uncached':<10} {uncached['epoch_after_first_s']:>22.2f} s {uncached['before_first_epoch_s']:>14.2f} s")
    print(f"{'cached':<10} {cached['epoch_after_first_s']:>22.2f} s {cached['before_first_epoch_s']:>14.2f} s"
          "  (includes computing the cache)")
    print(f"feature_cache_speedup = {speedup:.1f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_cache-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.device}.json").write_text(
        json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
