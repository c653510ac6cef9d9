"""Benchmark the data path and training throughput: decoders, the DataModule, and one training step per model.

Decoding: decord, decord2 (when importable from ``--decord2-path``; it installs as ``import decord``, so each
decoder runs in its own subprocess) and PyAV on the same generated UCF11-like videos (320x240, ~6 s, MPEG-1
``.mpg`` and H.264 ``.mp4``): full-decode frames/s at the source size, and the time to open a video and sample
one 16-frame clip resized to the DataModule's decode size, as the dataset does per item.

Robustness: each decoder library on a few broken files (zero bytes, random bytes, truncated mp4, text renamed
``.mpg``), each in a subprocess with a timeout: it must raise or return, never hang or crash.

DataModule: ``VideoDataModule`` on a generated folder of such videos; delivered clips/s (uint8 batches plus
the training transform) with 0, 1 and 2 workers, divided by the raw decoder's clips/s on the same clips in the
same run (``datamodule_over_decoder``; the best ratio with workers is the headline; goal >= 0.9), and a
cProfile of the 0-worker path that splits the time between our code and the rest.

Training: clips/s of forward + backward + optimizer step for each registered network (``vidxai.models.NETWORKS``,
built with ``build_network`` and the ``conf/model/*.yaml`` defaults) at the synthetic defaults and at the paper's
setting (20 frames of 224x224, batch ``--paper-batch``). With ``--device cuda`` also bf16 autocast and
channels_last, and NVDEC decoding when PyNvVideoCodec is installed.

Results are printed as a table, written to ``outputs/bench/bench_data-<time>-<device>.json`` (outside the source
tree) and the JSON object is printed as the last line.

    python benchmarks/bench_data.py --quick                          # ~2-3 min on 2 cores
    python benchmarks/bench_data.py --decord2-path /tmp/decord2      # also decord2 (pip install --target)
    python benchmarks/bench_data.py --device cuda                    # GPU training variants (+ NVDEC)
    python benchmarks/bench_data.py --smoke                          # every code path, tiny sizes (seconds)

``--smoke`` checks the script, it measures nothing: tiny videos (64x48, 1 s) under ``<cache-dir>/smoke/``,
4-frame clips at 32x32, the decoders in this process (the robustness children still in subprocesses), the
DataModule with 0 workers only (a worker is a spawned interpreter: seconds), every network trained one step at
2 x 4 x 32x32 in both the synthetic and the paper code path, one thread.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
FORMATS = {"mpg": "mpeg1video", "mp4": "libx264"}
#: generated videos (UCF11-like: 320x240, 6 s) and the clips the dataset samples from them (conf/data/ucf11.yaml:
#: 16 frames resized to 128x128 while decoding, cropped to 112)
SIZES = {"source_hw": (240, 320), "seconds": 6, "clip_frames": 16, "decode_size": (128, 128), "crop": 112}
#: ``--smoke``: the same code paths at the tiniest sizes
SMOKE_SIZES = {"source_hw": (48, 64), "seconds": 1, "clip_frames": 4, "decode_size": (32, 32), "crop": 24}
#: ``--smoke`` training: every network, both settings, batch 2 x 4 frames of 32x32, one step
SMOKE_TRAINING = {"frames": 4, "size": 32, "batch": 2}


# ----------------------------------------------------------------------------- generated videos
def _frames(seed: int, n: int, hw: tuple[int, int]):
    """UCF11-like content: a textured static scene, a slow global pan and two moving blobs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(xx / w) * 160 + 40, (yy / h) * 120 + 60, ((xx + yy) / (h + w)) * 100 + 80], -1)
    texture = rng.normal(0, 18, size=(h + 64, w + 64, 3)).astype(np.float32)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        dy, dx = int(16 + 12 * np.sin(t / 20)), int(t * 0.4) % 64
        frame = base + texture[dy:dy + h, dx:dx + w]
        for k, (cy, cx, r) in enumerate([(0.4, 0.3, 28), (0.65, 0.7, 20)]):
            py = cy * h + 40 * np.sin(t / (9 + 4 * k))
            px = (cx * w + t * (3 - 2 * k)) % w
            mask = (yy - py) ** 2 + (xx - px) ** 2 < r * r
            frame[mask] = (220, 60 + 100 * k, 40)
        out[t] = np.clip(frame, 0, 255)
    return out


def write_bench_video(path: Path, fmt: str, seed: int = 0, sizes: dict = SIZES) -> Path:  # noqa: B006 - read only
    """Encode a ``sizes["seconds"]`` long clip of ``sizes["source_hw"]`` (320x240) as MPEG-1 (``mpg``) or H.264
    (``mp4``) with PyAV."""
    import av

    from vidxai.data.synthetic import mux_frames

    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    hw = tuple(sizes["source_hw"])
    frames = _frames(seed, int(round(sizes["seconds"] * FPS)), hw)
    with av.open(str(tmp), "w", format="mpeg" if fmt == "mpg" else "mp4") as container:
        stream = container.add_stream(FORMATS[fmt], rate=FPS)
        stream.width, stream.height = hw[1], hw[0]
        stream.pix_fmt = "yuv420p"
        if fmt == "mpg":
            stream.bit_rate = 1_500_000  # UCF11's MPEG-1 files are around 1-2 Mbit/s
        else:
            stream.options = {"crf": "23", "preset": "veryfast"}
        mux_frames(container, stream, frames)
    tmp.replace(path)
    return path


def bench_videos(cache: Path, sizes: dict) -> dict[str, str]:
    h, w = sizes["source_hw"]
    return {fmt: str(write_bench_video(cache / f"bench_{w}x{h}.{fmt}", fmt, sizes=sizes)) for fmt in FORMATS}


def dataset_folder(cache: Path, fmt: str, classes: int, per_class: int, sizes: dict) -> Path:
    """A ``folder``-layout dataset of generated videos: root/<class>/<video>.<fmt>."""
    root = cache / f"folder_{fmt}_{classes}x{per_class}"
    for c in range(classes):
        for v in range(per_class):
            write_bench_video(root / f"class{c}" / f"video{v:02d}.{fmt}", fmt, seed=100 * c + v, sizes=sizes)
    return root


def broken_files(cache: Path, videos: dict[str, str]) -> dict[str, str]:
    """Small fuzz set: zero bytes, random bytes, truncated mp4, text renamed .mpg."""
    import numpy as np

    folder = cache / "broken"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"zero_bytes.mp4": b"",
             "random_bytes.mp4": np.random.default_rng(0).integers(0, 256, 64_000, dtype=np.uint8).tobytes(),
             "truncated.mp4": Path(videos["mp4"]).read_bytes()[: Path(videos["mp4"]).stat().st_size // 3],
             "text.mpg": b"this is not a video\n" * 200}
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = str(folder / name)
    return out


# ----------------------------------------------------------------------------- decoding (subprocesses)
def _clip_indices(n_video: int, clip_frames: int, repeats: int) -> list[list[int]]:
    import numpy as np

    from vidxai.data.sampling import jittered_segment_indices

    rng = np.random.default_rng(0)
    return [jittered_segment_indices(n_video, clip_frames, rng).tolist() for _ in range(repeats)]


def decode_worker(spec: dict) -> dict:
    """In a fresh process (decord and decord2 share the import name): decode rates of one backend."""
    if spec.get("path"):
        sys.path.insert(0, spec["path"])
    sys.path.insert(0, str(ROOT))
    from vidxai.data.decoders import open_video

    backend, sizes = spec["backend"], spec["sizes"]
    decode_size = tuple(sizes["decode_size"])
    out: dict[str, Any] = {}
    if backend == "decord":
        import decord

        out["module"] = f"decord {decord.__version__} ({Path(decord.__file__).parent})"
    elif backend == "pyav":
        import av

        out["module"] = f"av {av.__version__}"
    for fmt, path in spec["videos"].items():
        device = "cuda" if backend == "nvdec" else "cpu"
        with open_video(path, backend=backend, device=device) as dec:
            n = dec.num_frames
        full = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            with open_video(path, backend=backend, device=device) as dec:
                frames = dec.get_frames(list(range(n)))
            full.append(time.perf_counter() - start)
        assert frames.shape == (n, *sizes["source_hw"], 3), frames.shape
        clips = []
        for idx in _clip_indices(n, sizes["clip_frames"], spec["clip_repeats"]):
            start = time.perf_counter()
            with open_video(path, backend=backend, size=decode_size, device=device) as dec:
                clip = dec.get_frames(idx)
            clips.append(time.perf_counter() - start)
        assert clip.shape == (sizes["clip_frames"], *decode_size, 3), clip.shape
        out[fmt] = {"frames": n, "full_decode_fps": n / statistics.median(full),
                    "clip_ms": 1000 * statistics.median(clips)}
    return out


def robust_worker(spec: dict) -> dict:
    """Open one (broken) file with the raw library and read three frames: report what happened."""
    if spec.get("path"):
        sys.path.insert(0, spec["path"])
    try:
        if spec["backend"] == "decord":
            import decord

            reader = decord.VideoReader(spec["file"])
            n = len(reader)
            frames = reader.get_batch([0, n // 2, max(n - 1, 0)]).asnumpy()
            return {"outcome": "returned", "detail": f"{n} frames, batch {list(frames.shape)}"}
        import av

        with av.open(spec["file"]) as container:
            n = sum(1 for _ in container.decode(video=0))
        return {"outcome": "returned", "detail": f"{n} frames decoded"}
    except Exception as exc:  # what we measure: a clean Python exception
        return {"outcome": "raised", "detail": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
                if str(exc).strip() else type(exc).__name__}


def _child(kind: str, spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, f"--{kind}-worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "detail": f"no answer within {timeout:.0f} s (killed)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        return {"outcome": "crash", "detail": f"exit {proc.returncode}: {err[-1][:160] if err else ''}"}
    return json.loads(lines[-1])


def bench_decoding(args: argparse.Namespace, videos: dict[str, str], broken: dict[str, str]) -> dict:
    candidates: dict[str, dict] = {}
    try:
        import decord  # noqa: F401

        candidates["decord"] = {"backend": "decord"}
    except ImportError:
        pass
    if args.decord2_path:
        if (Path(args.decord2_path) / "decord").is_dir():
            candidates["decord2"] = {"backend": "decord", "path": args.decord2_path}
        else:
            print(f"--decord2-path {args.decord2_path} has no decord package: skipping decord2", file=sys.stderr)
    candidates["pyav"] = {"backend": "pyav"}
    if args.device == "cuda":
        from vidxai.data.decoders import nvdec_available

        if nvdec_available():
            candidates["nvdec"] = {"backend": "nvdec"}
    rounds: dict[str, list[dict]] = {name: [] for name in candidates}
    for _ in range(args.decode_rounds):  # decoders alternate round by round: fair under drifting load
        for name, spec in candidates.items():
            spec = {**spec, "videos": videos, "repeats": args.decode_repeats, "clip_repeats": args.clip_repeats,
                    "sizes": args.sizes}
            # --smoke: in this process (decord and decord2 share an import name: a decord2 folder still forks)
            in_process = args.smoke and not spec.get("path")
            rounds[name].append(decode_worker(spec) if in_process else _child("decode", spec, timeout=600))
            print(f"  decode {name}: {rounds[name][-1]}", file=sys.stderr)
    results: dict[str, Any] = {}
    for name, runs in rounds.items():
        ok = [r for r in runs if "outcome" not in r]
        if not ok:
            results[name] = runs[-1]
            continue
        results[name] = {"module": ok[0].get("module"), "rounds": len(ok)}
        for fmt in videos:
            results[name][fmt] = {"frames": ok[0][fmt]["frames"],
                                  "full_decode_fps": statistics.median(r[fmt]["full_decode_fps"] for r in ok),
                                  "clip_ms": statistics.median(r[fmt]["clip_ms"] for r in ok)}
    robust: dict[str, dict] = {}
    for name, spec in candidates.items():
        if name == "nvdec":
            continue
        robust[name] = {f: _child("robust", {**spec, "file": p}, timeout=args.robust_timeout)
                        for f, p in broken.items()}
    return {"decoders": results, "robustness": robust}


# ----------------------------------------------------------------------------- DataModule
def bench_datamodule(args: argparse.Namespace, root: Path, cache: Path) -> dict:
    import numpy as np
    import torch

    from vidxai.data import VideoDataModule
    from vidxai.data.decoders import open_video

    backend = "decord" if _has_decord() else "pyav"
    sizes = args.sizes
    decode_size = tuple(sizes["decode_size"])
    common = {"layout": "folder", "root": str(root), "num_frames": sizes["clip_frames"], "size": decode_size,
              "crop_size": sizes["crop"], "batch_size": args.batch_size, "backend": backend, "val_fraction": 0.1,
              "test_fraction": 0.1, "cache_dir": str(cache / "manifests"), "persistent_workers": True}
    dm0 = VideoDataModule(num_workers=0, **common)
    dm0.prepare_data()
    dm0.setup()
    entries = dm0.records_for("train")
    ds = dm0.dataset("train")
    epochs = args.epochs

    def raw_decoder() -> float:
        """The raw decoder on the same clips (same videos, jittered 16-frame indices), one process."""
        rng = np.random.default_rng(1)
        start = time.perf_counter()
        for _ in range(epochs):
            for i, e in enumerate(entries):
                with open_video(e.record.path, backend=backend, size=decode_size) as dec:
                    dec.get_frames(ds.frame_indices(i, rng))
        return epochs * len(entries) / (time.perf_counter() - start)

    def delivered(workers: int) -> dict:
        dm = VideoDataModule(num_workers=workers, **common)
        dm.setup()
        loader = dm.train_dataloader()
        gen = torch.Generator().manual_seed(0)

        def one_epoch() -> int:
            n = 0
            for batch in loader:
                video = dm.transform(batch["video"], train=True, generator=gen)
                n += video.shape[0]
            return n

        start = time.perf_counter()
        one_epoch()  # warm-up epoch: worker start-up, page cache
        first = time.perf_counter() - start
        start = time.perf_counter()
        n = sum(one_epoch() for _ in range(epochs))
        rate = n / (time.perf_counter() - start)
        return {"clips_per_s": rate, "first_epoch_s": first}

    out: dict[str, Any] = {"backend": backend, "train_clips": len(entries), "epochs": epochs,
                           "batch_size": args.batch_size, "workers": {}}
    decoder_rates = []
    for workers in args.workers:
        decoder_rates.append(raw_decoder())  # interleaved with the loader runs: robust to load drift
        out["workers"][str(workers)] = delivered(workers)
    decoder_rates.append(raw_decoder())
    out["decoder_clips_per_s"] = statistics.median(decoder_rates)
    for r in out["workers"].values():
        r["over_decoder"] = r["clips_per_s"] / out["decoder_clips_per_s"]
    with_workers = [r["over_decoder"] for w, r in out["workers"].items() if int(w) > 0]
    out["datamodule_over_decoder"] = max(with_workers) if with_workers else None
    out["profile"] = profile_datamodule(dm0, args)
    return out


def _has_decord() -> bool:
    from vidxai.data.decoders import decord_available

    return decord_available()


def profile_datamodule(dm: Any, args: argparse.Namespace) -> dict:
    """cProfile of the 0-worker path (getitem, collate, transform); time in our code vs. the rest."""
    import torch
    from torch.utils.data import default_collate

    ds = dm.dataset("train")
    gen = torch.Generator().manual_seed(0)
    n = min(len(ds), 4 * args.batch_size)

    def run() -> None:
        for start in range(0, n, args.batch_size):
            batch = default_collate([ds[i] for i in range(start, min(start + args.batch_size, n))])
            dm.transform(batch["video"], train=True, generator=gen)

    run()  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    prof.disable()
    stats = pstats.Stats(prof).stats

    def cumtime(file_suffix: str, *funcs: str) -> float:
        return sum(v[3] for (file, _, func), v in stats.items() if file.endswith(file_suffix) and func in funcs)

    decoder = cumtime(f"data{os.sep}decoders.py", "open_video", "get_frames")
    load = cumtime(f"data{os.sep}dataset.py", "load")
    parts = {"decoder_s": decoder, "dataset_rest_s": load - decoder,
             "collate_s": cumtime(f"_utils{os.sep}collate.py", "default_collate"),
             "transform_s": cumtime(f"data{os.sep}transforms.py", "__call__")}
    ours = parts["dataset_rest_s"] + parts["collate_s"] + parts["transform_s"]
    return {"clips": n, "total_s": total, **parts, "ours_s": ours, "ours_share": ours / total}


# ----------------------------------------------------------------------------- training
def _model_configs(frames: int, size: int) -> dict[str, dict]:
    """``net`` kwargs and learning rate of each conf/model/*.yaml, by registry name, composed by Hydra with a data
    config of ``frames`` frames of ``size`` x ``size`` (``data.num_frames``, ``data.crop_size``): the transformers
    take their clip geometry from the data, so each network is built for the clips it is fed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    out = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
            cfg = compose("train", overrides=[f"model={path.stem}", f"data.num_frames={frames}",
                                              f"data.crop_size={size}", f"data.size=[{size},{size}]"])
            net = OmegaConf.to_container(cfg.model.net, resolve=True)
            arch = net.pop("arch", None)
            if arch:
                out[arch] = {"net": net, "lr": float(OmegaConf.select(cfg, "model.optimizer.lr", default=1e-3))}
    GlobalHydra.instance().clear()
    return out


def _synthetic_setting() -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "data" / "synthetic.yaml")
    return {"frames": int(cfg.num_frames), "size": int(cfg.crop_size), "batch": int(cfg.batch_size)}


def bench_training(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from vidxai.models import NETWORKS, build_network

    device = torch.device(args.device)
    settings = {"synthetic": _synthetic_setting(),
                "paper": {"frames": 20, "size": 224, "batch": args.paper_batch}}
    if args.smoke:  # both code paths (the paper's: no warm-up, --paper-steps) at the tiniest clips
        settings = {name: dict(SMOKE_TRAINING) for name in settings}
    elif args.quick:  # the paper's 20 x 224^2 clips take minutes per step on a CPU
        settings.pop("paper")
    geometries = {(s["frames"], s["size"]) for s in settings.values()}
    composed = {g: _model_configs(*g) for g in geometries}  # Hydra composes every conf/model file per geometry
    configs = {name: composed[s["frames"], s["size"]] for name, s in settings.items()}
    if device.type == "cuda":
        variants = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    else:
        variants = [("fp32", False)]
    out: dict[str, Any] = {}
    for arch in args.archs or list(NETWORKS):
        for name, s in settings.items():
            # a network without a conf/model file is built at its own default geometry (said in the output)
            cfg = configs[name].get(arch, {"net": {}, "lr": 1e-3, "geometry": "the network's own defaults"})
            steps = args.train_steps if name == "synthetic" or device.type == "cuda" else args.paper_steps
            for precision, channels_last in variants:
                key = f"{arch}/{name}/{precision}" + ("/channels_last" if channels_last else "")
                torch.manual_seed(0)
                model = build_network(arch, num_classes=11, **cfg["net"]).to(device).train()
                if channels_last:
                    model = model.to(memory_format=torch.channels_last)
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
                x = torch.randn(s["batch"], s["frames"], 3, s["size"], s["size"], device=device)
                y = torch.randint(0, 11, (s["batch"],), device=device)

                def step(model=model, opt=opt, x=x, y=y, precision=precision) -> None:
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    opt.step()

                try:
                    if name == "synthetic" or device.type == "cuda":
                        step()  # warm-up (allocator, cuDNN autotuning); a CPU paper step is long enough without
                    _sync(device)
                    start = time.perf_counter()
                    for _ in range(steps):
                        step()
                    _sync(device)
                    seconds = (time.perf_counter() - start) / steps
                    out[key] = {**s, "steps": steps, "step_s": seconds, "clips_per_s": s["batch"] / seconds,
                                "built_for": cfg.get("geometry", f"{s['frames']} frames of {s['size']}x{s['size']} "
                                                                  f"(conf/model/ with the {name} data geometry)")}
                except torch.cuda.OutOfMemoryError:
                    out[key] = {**s, "error": "out of memory: lower --paper-batch"}
                print(f"  train {key}: {out[key]}", file=sys.stderr)
                del model, opt, x, y
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- report
def _machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, check=False).stdout.strip()
    except OSError:
        pass
    return info


def table(report: dict) -> str:
    lines = []
    dec = report.get("decoding", {})
    if dec:
        clip = f"{report.get('sizes', SIZES)['clip_frames']}-frame clip ms"
        lines.append(f"{'decoder':<10} {'format':<6} {'full decode fps':>16} {clip:>17}")
        for name, r in dec["decoders"].items():
            for fmt in FORMATS:
                if fmt in r:
                    lines.append(f"{name:<10} {fmt:<6} {r[fmt]['full_decode_fps']:>16.0f} {r[fmt]['clip_ms']:>17.1f}")
                elif fmt == "mpg":
                    lines.append(f"{name:<10} error: {r.get('detail', r)}")
        lines.append("")
        lines.append("robustness (raise/return = fine; hang/crash = not): " + "; ".join(
            f"{name}: " + ", ".join(f"{f} {o['outcome']}" for f, o in res.items())
            for name, res in dec["robustness"].items()))
        lines.append("")
    dm = report.get("datamodule")
    if dm:
        lines.append(f"DataModule ({dm['backend']}, {dm['train_clips']} clips x {dm['epochs']} epochs, batch "
                     f"{dm['batch_size']}): raw decoder {dm['decoder_clips_per_s']:.1f} clips/s")
        for w, r in dm["workers"].items():
            lines.append(f"  {w} workers: {r['clips_per_s']:6.1f} clips/s = {r['over_decoder']:.2f}x decoder")
        ratio = dm["datamodule_over_decoder"]
        lines.append(f"  datamodule_over_decoder = {ratio:.2f} (goal >= 0.9)" if ratio is not None else
                     "  datamodule_over_decoder: not measured (no run with workers; --workers 1 2)")
        p = dm["profile"]
        lines.append(f"  profile (0 workers, {p['clips']} clips, {p['total_s']:.2f} s): decoder "
                     f"{p['decoder_s']:.2f} s, dataset rest {p['dataset_rest_s']:.2f} s, collate "
                     f"{p['collate_s']:.2f} s, transform {p['transform_s']:.2f} s: ours "
                     f"{100 * p['ours_share']:.0f}%")
        lines.append("")
    tr = report.get("training")
    if tr:
        lines.append(f"{'training step':<42} {'B x T x HxW':>16} {'s/step':>8} {'clips/s':>9}")
        for key, r in tr.items():
            shape = f"{r['batch']}x{r['frames']}x{r['size']}^2"
            if "error" in r:
                lines.append(f"{key:<42} {shape:>16} {r['error']}")
            else:
                lines.append(f"{key:<42} {shape:>16} {r['step_s']:>8.3f} {r['clips_per_s']:>9.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/test_benchmarks.py to check the documented commands)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, fewer epochs, the synthetic setting only (no paper-size step)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training variants, NVDEC)")
    parser.add_argument("--decord2-path", default=os.environ.get("DECORD2_PATH"),
                        help="folder holding decord2's `decord` package (pip install --target DIR decord2)")
    parser.add_argument("--parts", nargs="+", default=["decoding", "datamodule", "training"],
                        choices=["decoding", "datamodule", "training"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--videos-per-class", type=int, default=6)
    parser.add_argument("--format", default="mpg", choices=sorted(FORMATS), help="DataModule video format")
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--archs", nargs="+", help="networks to train (default: all of vidxai.models.NETWORKS)")
    parser.add_argument("--decode-rounds", type=int, help="rounds of alternating decoder runs (default 3, quick 1)")
    parser.add_argument("--cache-dir", default=str(ROOT / "outputs" / "bench" / "cache"),
                        help="generated videos (reused between runs)")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--decode-worker", help=argparse.SUPPRESS)
    parser.add_argument("--robust-worker", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="every code path at the tiniest sizes in seconds (checks the script, measures nothing)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.decode_worker:
        out = decode_worker(json.loads(args.decode_worker))
        print(json.dumps(out))
        return out
    if args.robust_worker:
        out = robust_worker(json.loads(args.robust_worker))
        print(json.dumps(out))
        return out
    sys.path.insert(0, str(ROOT))
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    from bench_common import SMOKE_THREADS, torch_threads

    with torch_threads(SMOKE_THREADS if args.smoke and args.device == "cpu" else None):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    quick = args.quick or args.smoke
    rounds, args.decode_repeats, args.clip_repeats = (1, 1, 1) if args.smoke else (1, 1, 5) if quick else (3, 2, 8)
    args.decode_rounds = args.decode_rounds or rounds
    args.epochs = 1 if quick else 3
    args.train_steps = 1 if args.smoke else 2 if quick else 5
    args.paper_steps = 1  # on the CPU one paper step takes minutes: one timed step, no warm-up
    args.robust_timeout = 30.0
    args.sizes = SMOKE_SIZES if args.smoke else SIZES
    classes, cache = 4, Path(args.cache_dir)
    if args.smoke:  # its own tiny videos: a later full run must not find them in the cache
        classes, cache, args.videos_per_class, args.batch_size, args.workers = 2, cache / "smoke", 4, 2, [0]

    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "device": args.device, "quick": quick, "smoke": args.smoke, "sizes": args.sizes,
                              "machine": _machine(args.device)}
    t0 = time.perf_counter()
    if "decoding" in args.parts:
        videos = bench_videos(cache, args.sizes)
        report["decoding"] = bench_decoding(args, videos, broken_files(cache, videos))
    if "datamodule" in args.parts:
        root = dataset_folder(cache, args.format, classes=classes, per_class=args.videos_per_class, sizes=args.sizes)
        report["datamodule"] = bench_datamodule(args, root, cache)
        report["datamodule_over_decoder"] = report["datamodule"]["datamodule_over_decoder"]
    if "training" in args.parts:
        report["training"] = bench_training(args)
    report["seconds"] = time.perf_counter() - t0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_data-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.device}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"written to {path}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
