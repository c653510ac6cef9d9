"""Time ``explain.py pretrained=...`` on a VideoMAE-Base-sized model (16 frames of 224 x 224, random weights).

Writes a ``save_pretrained`` folder of a random VideoMAE-Base classifier (400 labels, a processor config like
MCG-NJU/videomae-base-finetuned-kinetics) and a 320 x 240 clip under ``--root`` (default /tmp/vidxai_bench_pretrained),
then measures, in this process, the parts of one explanation: load (``load_for_explain``), decode (16 frames read
and preprocessed), forward (no gradient), LRP (``VideoLRP.explain``, the default epsilon rule with AttnLRP) and an
input gradient (forward + backward of the target logit) for the LRP / gradient ratio; then the wall time of the
whole command line (``--cli``). Prints a table and writes the JSON to ``outputs/bench/`` (``--out``)::

    python benchmarks/bench_pretrained.py --repeats 2 --cli
    python benchmarks/bench_pretrained.py --smoke     # the same code path on a tiny VideoMAE (seconds)

``--smoke`` writes a tiny VideoMAE (4 frames of 16x16, one 16-wide block, 3 labels) and an 8-frame 32x24 clip under
``<root>/smoke/``, one repeat, one thread; ``--cli`` adds the command line (a fresh process: many seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from bench_common import SMOKE_THREADS, torch_threads

ROOT = Path(__file__).resolve().parents[1]


#: ``--smoke``: a VideoMAE config small enough for seconds, a short clip, the crop its processor config asks for
SMOKE = {"config": {"num_frames": 4, "image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "intermediate_size": 32, "tubelet_size": 2},
         "labels": 3, "crop": 16, "clip": (8, 24, 32)}


def _prepare(root: Path, smoke: bool = False) -> tuple[Path, Path]:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from vidxai.data.synthetic import write_video

    folder, video = root / ("videomae-tiny-random" if smoke else "videomae-base-random"), root / "clip.mp4"
    if not (folder / "model.safetensors").is_file():
        n, crop = (SMOKE["labels"], SMOKE["crop"]) if smoke else (400, 224)
        labels = {i: f"class {i}" for i in range(n)}
        config = VideoMAEConfig(num_labels=n, id2label=labels, label2id={v: k for k, v in labels.items()},
                                **(SMOKE["config"] if smoke else {}))
        torch.manual_seed(0)
        VideoMAEForVideoClassification(config).save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"shortest_edge": crop}, "do_center_crop": True,
            "crop_size": {"height": crop, "width": crop}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    if not video.is_file():
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, SMOKE["clip"] + (3,) if smoke else (64, 240, 320, 3), dtype=np.uint8)
        write_video(video, frames, fps=25)
    return folder, video


def _best(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/test_benchmarks.py to check the documented commands)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/vidxai_bench_pretrained", help="the model folder and the clip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time the whole command line once")
    parser.add_argument("--smoke", action="store_true", help="a tiny VideoMAE, one repeat, one thread (seconds)")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"), help="folder of the JSON")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.repeats = 1
    with torch_threads(SMOKE_THREADS if args.smoke else None):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    root = Path(args.root) / ("smoke" if args.smoke else "")
    root.mkdir(parents=True, exist_ok=True)
    folder, video = _prepare(root, args.smoke)

    from vidxai.data.clips import prepare_clip
    from vidxai.pretrained import load_for_explain
    from vidxai.xai import VideoLRP

    torch.set_grad_enabled(True)
    rows = {}
    rows["load"], ck = _best(lambda: load_for_explain(str(folder)), args.repeats)
    pre = ck.transform

    def decode():  # noqa: ANN202
        frames, idx, _, _ = pre.read_frames(video)
        return prepare_clip(frames, idx, pre, "cpu")[0]

    rows["decode"], clip = _best(decode, args.repeats)
    net = ck.net

    def forward():  # noqa: ANN202
        with torch.no_grad():
            return net(clip[None])

    rows["forward"], logits = _best(forward, args.repeats)
    target = int(logits.argmax())
    lrp = VideoLRP(net)
    rows["lrp"], _ = _best(lambda: lrp.explain(clip, target=target), args.repeats)

    def gradient():  # noqa: ANN202
        x = clip[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x)[0, target], x)
        return g

    rows["input_gradient"], _ = _best(gradient, args.repeats)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "smoke": args.smoke,
           "model": "tiny VideoMAE (--smoke)" if args.smoke else "VideoMAE-Base size, random weights",
           "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "repeats": args.repeats,
           "seconds": rows, "lrp_over_gradient": rows["lrp"] / rows["input_gradient"], "clip": list(clip.shape)}
    if args.cli:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "explain.py"), f"pretrained={folder}", f"video={video}",
                               "logger=none", f"hydra.run.dir={root}/cli"], env=env, capture_output=True, text=True)
        out["cli_wall_s"] = time.perf_counter() - start
        out["cli_rc"] = proc.returncode
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
    print(json.dumps(out, indent=2))
    print(f"{'part':<16} {'seconds (best of ' + str(args.repeats) + ')':>22}")
    for part, seconds in rows.items():
        print(f"{part:<16} {seconds:>22.3f}")
    print(f"{'LRP / gradient':<16} {out['lrp_over_gradient']:>22.2f}")
    if "cli_wall_s" in out:
        print(f"{'command line':<16} {out['cli_wall_s']:>22.1f}  (exit {out['cli_rc']})")
    path = Path(args.out) / f"bench_pretrained-{datetime.now().strftime('%Y%m%d-%H%M%S')}-cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")
    return out


if __name__ == "__main__":
    main()
