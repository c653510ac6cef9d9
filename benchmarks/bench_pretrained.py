"""Time ``explain.py pretrained=...`` on a VideoMAE-Base-sized model (16 frames of 224 x 224, random weights).

Writes a ``save_pretrained`` folder of a random VideoMAE-Base classifier (400 labels, a processor config like
MCG-NJU/videomae-base-finetuned-kinetics) and a 320 x 240 clip under ``--root`` (default /tmp/vidxai_bench_pretrained),
then measures, in this process, the parts of one explanation: load (``load_for_explain``), decode (16 frames read
and preprocessed), forward (no gradient), LRP (``VideoLRP.explain``, the default epsilon rule with AttnLRP) and an
input gradient (forward + backward of the target logit) for the LRP / gradient ratio; then the wall time of the
whole command line (``--cli``)::

    python benchmarks/bench_pretrained.py --repeats 2 --cli
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _prepare(root: Path) -> tuple[Path, Path]:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from vidxai.data.synthetic import write_video

    folder, video = root / "videomae-base-random", root / "clip.mp4"
    if not (folder / "model.safetensors").is_file():
        labels = {i: f"class {i}" for i in range(400)}
        config = VideoMAEConfig(num_labels=400, id2label=labels, label2id={v: k for k, v in labels.items()})
        torch.manual_seed(0)
        VideoMAEForVideoClassification(config).save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"shortest_edge": 224}, "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    if not video.is_file():
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (64, 240, 320, 3), dtype=np.uint8)
        write_video(video, frames, fps=25)
    return folder, video


def _best(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/vidxai_bench_pretrained")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time the whole command line once")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    folder, video = _prepare(root)

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
    out = {"threads": torch.get_num_threads(), "seconds": rows,
           "lrp_over_gradient": rows["lrp"] / rows["input_gradient"], "clip": list(clip.shape)}
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


if __name__ == "__main__":
    main()
