"""GPU figures in one prepared run: NVDEC against the CPU decoder, decode rates, LRP cost, training.

Parts, each stopped by its own time limit (``--budget-scale`` scales them all) so one slow part cannot eat
the rest; the whole run is designed to fit in 8 minutes on one GPU:

* ``environment``: device name, versions (torch, CUDA, cuDNN, Lightning, PyAV, decord, PyNvVideoCodec), commit.
* ``nvdec_tolerance``: ``tests/test_data_nvdec.py``'s GPU colour test (NVDEC vs the CPU decoder, mean abs <=
  3/255, max <= 20/255, MPEG-1 and H.264), run by pytest in a subprocess.
* ``decode``: full-decode frames/s and 16-frame clip time for NVDEC (CUDA only), decord and PyAV on H.264
  clips generated here with PyAV at 320x240 and 1920x1080 (``--quick``: 320x240 and 640x360, few frames).
* ``datamodule``: ``VideoDataModule(decode_device="cuda")`` delivered clips/s over the raw NVDEC decoder on
  the same clips (``datamodule_over_decoder``; CUDA only).
* ``lrp``: explain time / one input gradient (``benchmarks/bench_lrp.py``'s paired, synchronised timing,
  median of ``--repeats``) for ``epsilon`` and ``alpha_beta`` on VGG16+LSTM (16x112^2 and the paper's
  20x224^2), ConvLSTM, R(2+1)D-18 at full width, and the transformer networks when they are registered.
* ``training``: clips/s and peak memory of forward + backward + AdamW step for every registered network, in
  fp32, bf16-mixed and bf16 + channels_last, at the paper's 2 x 20 x 224^2 and at batch 16.
* ``evaluate``: wall time of ``explain.py evaluate=true limit=24`` (all methods) on a VGG16+LSTM trained here
  for one ``debug=fast`` epoch (not in ``--quick``).

On a machine without CUDA, the CUDA-only parts report ``"skipped: no CUDA"`` and the rest run. One JSON with
every figure goes to ``outputs/gpu_check/gpu_check-<time>-<device>.json`` (``--out``) and is printed.

    python benchmarks/gpu_check.py                       # on the GPU machine (--device cuda is the default there)
    python benchmarks/gpu_check.py --device cpu --quick  # the CPU smoke run (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import SMOKE_THREADS, torch_threads  # noqa: E402
from bench_lrp import _paired, _sync  # noqa: E402

#: seconds per part on the GPU (the sum, with start-up, stays under 8 minutes); --quick uses a quarter
BUDGETS = {"environment": 20, "nvdec_tolerance": 30, "nvdec_colours": 20, "decode": 50, "datamodule": 45,
           "lrp": 100, "training": 80, "evaluate": 130}
CUDA_ONLY = {"nvdec_tolerance", "nvdec_colours", "datamodule"}
RULES = ("epsilon", "alpha_beta")


class PartTimeout(Exception):
    """A part ran past its time limit."""


def run_part(name: str, fn: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> dict:
    """Run one part under its own time limit; its figures, or why there are none, and its wall time."""
    if name in CUDA_ONLY and args.device != "cuda":
        print(f"[gpu_check] {name}: skipped: no CUDA", file=sys.stderr, flush=True)
        return {"status": "skipped: no CUDA", "seconds": 0.0}
    budget = BUDGETS[name] * args.budget_scale * (0.25 if args.quick and args.device == "cpu" else 1.0)
    args.deadline = time.monotonic() + budget

    def _alarm(*_: Any) -> None:
        raise PartTimeout(f"stopped by its time limit of {budget:.0f} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    start = time.perf_counter()
    try:
        out = {"status": "ok", **fn(args)}
    except PartTimeout as exc:
        out = {"status": f"timeout: {exc}", **getattr(args, "partial", {})}
    except Exception as exc:  # noqa: BLE001 - a failing part is a figure too (what failed on the GPU)
        out = {"status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
               **getattr(args, "partial", {})}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        args.partial = {}
    out["seconds"] = round(time.perf_counter() - start, 2)
    print(f"[gpu_check] {name}: {out['status']} ({out['seconds']} s)", file=sys.stderr, flush=True)
    return out


def _left(args: argparse.Namespace) -> float:
    return max(1.0, args.deadline - time.monotonic())


# ----------------------------------------------------------------------------- environment
def part_environment(args: argparse.Namespace) -> dict:
    import pytorch_lightning as pl

    versions = {"python": platform.python_version(), "torch": torch.__version__, "lightning": pl.__version__,
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for module in ("av", "decord", "PyNvVideoCodec", "transformers", "captum", "zennit"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "installed")
        except Exception:  # noqa: BLE001 - not installed, or broken without a GPU
            versions[module] = None
    device = (torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    out = {"device_name": device, "versions": versions, "commit": commit, "cpu_count": os.cpu_count(),
           "platform": platform.platform()}
    if args.device == "cuda":
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return out


# ----------------------------------------------------------------------------- NVDEC colours
def part_nvdec_tolerance(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_data_nvdec.py",
           "-k", "gpu_nvdec"]
    # tests/conftest.py hides the GPU unless CUDA_VISIBLE_DEVICES is set: name the one this run uses
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES") or "0"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=_left(args), check=False)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    return {"passed": proc.returncode == 0 and "passed" in summary and "skipped" not in summary,
            "pytest_summary": summary, "output_tail": proc.stdout[-1500:]}


def part_nvdec_colours(args: argparse.Namespace) -> dict:
    """NVDEC vs PyAV on smooth MPEG-1 and H.264 clips (the test's content): mean and max abs difference."""
    import numpy as np

    from vidxai.data.decoders import PyAVDecoder, open_video

    out: dict[str, Any] = {"tolerance": {"mean_abs": MEAN_TOL, "max_abs": MAX_TOL}}
    for fmt in ("mpg", "mp4"):
        path = _encode(args.work / f"smooth.{fmt}", _smooth_frames(12, (128, 160)), fmt)
        idx = [0, 5, 11, 2]
        with open_video(path, backend="nvdec") as dec, PyAVDecoder(path) as ref:
            diff = np.abs(dec.get_frames(idx).astype(int) - ref.get_frames(idx).astype(int))
        out[fmt] = {"mean_abs": float(diff.mean()), "max_abs": int(diff.max()),
                    "within": bool(diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL)}
    return out


#: tests/test_data_nvdec.py: NVDEC's colours against the CPU decoder, 0..255 levels
MEAN_TOL, MAX_TOL = 3.0, 20.0


def _smooth_frames(frames: int, size: tuple[int, int]) -> Any:
    """tests/test_data_nvdec.py's content: low-saturation moving gradients (chroma subsampling stays in
    tolerance)."""
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    clip = np.stack([np.stack([80 + 60 * np.sin((xx + 4 * t) / 23), 100 + 50 * np.cos((yy + 3 * t) / 29),
                               120 + 40 * np.sin((xx + yy) / 31)], -1) for t in range(frames)])
    return clip.clip(0, 255).astype(np.uint8)


def _encode(path: Path, frames: Any, fmt: str) -> Path:
    """Encode ``uint8 (T, H, W, 3)`` frames as MPEG-1 (``mpg``) or H.264 (``mp4``) with PyAV."""
    import av

    from vidxai.data.synthetic import mux_frames

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mpeg" if fmt == "mpg" else "mp4") as container:
        stream = container.add_stream("mpeg1video" if fmt == "mpg" else "libx264", rate=25)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        if fmt == "mpg":
            stream.bit_rate = 8_000_000
        else:
            stream.options = {"crf": "18", "preset": "veryfast"}
        mux_frames(container, stream, frames)
    return path


# ----------------------------------------------------------------------------- decode rates
def _decode_videos(args: argparse.Namespace) -> dict[str, Path]:
    """H.264 clips at 320x240 and 1920x1080 (``--quick``: 640x360, fewer frames), generated once per run."""
    from bench_data import _frames

    sizes = [((240, 320), 50), ((360, 640), 16)] if args.quick else [((240, 320), 150), ((1080, 1920), 60)]
    videos = {}
    for (h, w), n in sizes:
        videos[f"{w}x{h}"] = _encode(args.work / f"decode_{w}x{h}.mp4", _frames(0, n, (h, w)), "mp4")
    return videos


def part_decode(args: argparse.Namespace) -> dict:
    from bench_data import SIZES, _clip_indices

    from vidxai.data.decoders import nvdec_available, open_video

    backends = ["decord", "pyav"]
    if args.device == "cuda" and nvdec_available():
        backends.insert(0, "nvdec")
    args.partial = out = {"backends": backends}
    for name, path in _decode_videos(args).items():
        for backend in backends:
            device = "cuda" if backend == "nvdec" else "cpu"
            with open_video(path, backend=backend, device=device) as dec:
                n = dec.num_frames
            full = []
            for _ in range(args.repeats_decode):
                start = time.perf_counter()
                with open_video(path, backend=backend, device=device) as dec:
                    dec.get_frames(list(range(n)))
                full.append(time.perf_counter() - start)
            clips = []
            for idx in _clip_indices(n, SIZES["clip_frames"], args.repeats_decode):
                start = time.perf_counter()
                with open_video(path, backend=backend, size=(128, 128), device=device) as dec:
                    dec.get_frames(idx)
                clips.append(time.perf_counter() - start)
            out[f"{name}/{backend}"] = {"frames": n, "full_decode_fps": round(n / statistics.median(full), 1),
                                        f"clip{SIZES['clip_frames']}_ms": round(1000 * statistics.median(clips), 2)}
    return out


# ----------------------------------------------------------------------------- DataModule over NVDEC
def part_datamodule(args: argparse.Namespace) -> dict:
    """``VideoDataModule(decode_device="cuda")`` delivered clips/s over NVDEC's own rate on the same clips."""
    from bench_data import SIZES, dataset_folder

    from vidxai.data import VideoDataModule
    from vidxai.data.decoders import open_video

    root = dataset_folder(args.work / "folder", "mp4", classes=2, per_class=4, sizes=SIZES)
    common = {"layout": "folder", "root": str(root), "num_frames": 16, "size": (128, 128), "crop_size": 112,
              "batch_size": 4, "decode_device": "cuda", "backend": "auto", "val_fraction": 0.25,
              "test_fraction": 0.0, "cache_dir": str(args.work / "manifests"), "persistent_workers": True}
    dm = VideoDataModule(num_workers=0, **common)
    dm.prepare_data()
    dm.setup()
    entries, ds = dm.records_for("train"), dm.dataset("train")
    start = time.perf_counter()
    for i, e in enumerate(entries):
        with open_video(e.record.path, backend=dm.backend, size=(128, 128), device="cuda") as dec:
            dec.get_frames(ds.frame_indices(i))
    decoder = len(entries) / (time.perf_counter() - start)
    args.partial = out = {"backend": dm.backend, "decoder_clips_per_s": round(decoder, 1)}
    for workers in (0, 2):
        loader = VideoDataModule(num_workers=workers, **common)
        loader.setup()
        batches = iter(loader.train_dataloader())
        next(batches)  # worker start-up is not the steady rate
        start, n = time.perf_counter(), 0
        for batch in batches:
            n += batch["video"].shape[0]
        rate = n / max(time.perf_counter() - start, 1e-9)
        out[f"workers_{workers}"] = {"clips_per_s": round(rate, 1), "datamodule_over_decoder": round(rate / decoder, 3)}
    out["datamodule_over_decoder"] = max(v["datamodule_over_decoder"] for k, v in out.items()
                                         if k.startswith("workers_"))
    return out


# ----------------------------------------------------------------------------- LRP cost
def _lrp_cases(args: argparse.Namespace) -> list[tuple[str, int, int, dict]]:
    """(network, frames, size, extra net kwargs): the paper's networks, then the transformers if registered."""
    from vidxai.models import NETWORKS

    if args.quick:  # the CPU smoke run: every registered network at tiny clips (VGG16 needs 32x32)
        return [(arch, 2 if arch == "vgg16_lstm" else 4, 32, {}) for arch in NETWORKS]
    cases = [("vgg16_lstm", 16, 112, {}), ("vgg16_lstm", 20, 224, {}), ("convlstm", 16, 112, {}),
             ("r2plus1d", 16, 112, {"width": 1.0})]
    known = {c[0] for c in cases}
    cases += [(arch, 16, 224, {}) for arch in NETWORKS if arch not in known]
    return cases


def part_lrp(args: argparse.Namespace) -> dict:
    """Explain time / one input gradient (parameters frozen), paired and synchronised, median of repeats."""
    from bench_data import _model_configs

    from vidxai.models import build_network
    from vidxai.xai.config import LRPConfig

    device, geometry = torch.device(args.device), functools.cache(_model_configs)
    args.partial = out = {"baseline": "input gradient, parameters frozen", "repeats": args.repeats}
    for arch, frames, size, extra in _lrp_cases(args):
        key = f"{arch}/{frames}x{size}" + ("/full_width" if extra.get("width") == 1.0 else "")
        configs = geometry(frames, size)  # each network built for the clip it is fed
        try:
            torch.manual_seed(0)
            net = build_network(arch, num_classes=11, **{**configs.get(arch, {}).get("net", {}), **extra})
            net = net.to(device).eval().requires_grad_(False)
            for m in net.modules():  # cuDNN's LSTM backward needs training mode (one layer: no dropout)
                if isinstance(m, torch.nn.LSTM):
                    m.train(device.type == "cuda")
            clip = torch.randn(1, frames, 3, size, size, device=device)

            def gradient(net=net, clip=clip) -> None:
                x = clip.clone().requires_grad_(True)
                net(x)[0, 3].backward()

            out[key] = {}
            for rule in RULES:
                explainer = LRPConfig(rule=rule).build(net)
                res = _paired(lambda e=explainer, c=clip: e.attribute(c, target=3), gradient, args.repeats, device)
                out[key][rule] = {"ratio": round(res["ratio"], 3),
                                  **{k: round(v, 4) for k, v in res.items() if k != "ratio" and isinstance(v, float)}}
        except PartTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a transformer without LRP support yet
            out[key] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
        print(f"  lrp {key}: {out[key]}", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- training throughput
def part_training(args: argparse.Namespace) -> dict:
    """Clips/s and peak memory of a training step per network, precision and batch."""
    from bench_data import _model_configs

    from vidxai.models import NETWORKS

    device, geometry = torch.device(args.device), functools.cache(_model_configs)
    if args.quick:  # every registered network, one tiny batch
        settings, variants = {"tiny": (2, 4, 32)}, ["fp32"]
    else:
        settings = {"paper": (2, 20, 224), "batch16": (16, 20, 224)}
        variants = ["fp32", "bf16-mixed", "bf16-mixed/channels_last"] if device.type == "cuda" else ["fp32"]
    args.partial = out = {}
    for arch in NETWORKS:
        for name, (batch, frames, size) in settings.items():
            for variant in variants:
                key = f"{arch}/{name}/{variant}"
                configs = geometry(frames, size)  # each network built for the clip it is fed
                try:
                    out[key] = _train_steps(arch, configs.get(arch, {"net": {}, "lr": 1e-3}), batch, frames,
                                            size, variant, device, args.train_steps)
                except torch.cuda.OutOfMemoryError:
                    out[key] = {"error": "out of memory"}
                print(f"  train {key}: {out[key]}", file=sys.stderr, flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return out


def _train_steps(arch: str, cfg: dict, batch: int, frames: int, size: int, variant: str, device: torch.device,
                 steps: int) -> dict:
    import torch.nn.functional as F

    from vidxai.models import build_network

    torch.manual_seed(0)
    model = build_network(arch, num_classes=11, **cfg["net"]).to(device).train()
    if variant.endswith("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    x = torch.randn(batch, frames, 3, size, size, device=device)
    y = torch.randint(0, 11, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.startswith("bf16")):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    out = {"batch": batch, "frames": frames, "size": size, "step_s": round(seconds, 4),
           "clips_per_s": round(batch / seconds, 2)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


# ----------------------------------------------------------------------------- evaluation wall time
def part_evaluate(args: argparse.Namespace) -> dict:
    """Train the default VGG16+LSTM for one ``debug=fast`` epoch, then time ``explain.py evaluate=true limit=24``
    (``--eval-limit``) with every method."""
    if args.quick:
        return {"status": "skipped: --quick (two subprocess runs)"}
    work, gpu = args.work / "evaluate", args.device == "cuda"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    train = [sys.executable, "train.py", "debug=fast", f"trainer={'gpu' if gpu else 'cpu'}", "test=false",
             f"hydra.run.dir={work / 'train'}", f"paths.data_dir={work / 'data'}"]
    start = time.perf_counter()
    proc = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=_left(args), check=False)
    if proc.returncode != 0:
        return {"status": f"failed: training exit {proc.returncode}", "output_tail": proc.stderr[-1500:]}
    args.partial = out = {"train_s": round(time.perf_counter() - start, 1), "limit": args.eval_limit}
    explain = [sys.executable, "explain.py", f"ckpt={work / 'train' / 'checkpoints' / 'best.ckpt'}", "evaluate=true",
               f"limit={args.eval_limit}", f"device={args.device}", f"hydra.run.dir={work / 'eval'}",
               f"paths.data_dir={work / 'data'}"]
    start = time.perf_counter()
    proc = subprocess.run(explain, cwd=ROOT, env=env, capture_output=True, text=True, timeout=_left(args),
                          check=False)
    out["evaluate_s"] = round(time.perf_counter() - start, 1)
    out["exit_code"] = proc.returncode
    out["output_tail"] = (proc.stdout + proc.stderr)[-1500:]
    if proc.returncode != 0:
        out["status"] = f"failed: explain.py exit {proc.returncode}"
    return out


# ----------------------------------------------------------------------------- main
PARTS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "environment": part_environment, "nvdec_tolerance": part_nvdec_tolerance, "nvdec_colours": part_nvdec_colours,
    "decode": part_decode, "datamodule": part_datamodule, "lrp": part_lrp, "training": part_training,
    "evaluate": part_evaluate}


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/test_benchmarks.py to check the documented commands)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (the CPU smoke run)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time limit")
    parser.add_argument("--repeats", type=int, help="paired LRP repeats (default 5, --quick 2)")
    parser.add_argument("--eval-limit", type=int, default=24, help="clips of the evaluate part")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"), help="folder of the JSON")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available: use --device cpu")
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.repeats_decode, args.train_steps = (1, 1) if args.quick else (3, 3)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    args.work = Path(args.out) / f"work-{stamp}"
    args.partial = {}
    with torch_threads(SMOKE_THREADS if args.quick and args.device == "cpu" else None):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    stamp = args.work.name.removeprefix("work-")
    started = time.perf_counter()
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "device": args.device, "quick": args.quick, "budgets_s": BUDGETS}
    for name in args.parts:
        report[name] = run_part(name, PARTS[name], args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    path = Path(args.out) / f"gpu_check-{stamp}-{args.device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, default=str))
    print(f"written to {path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
