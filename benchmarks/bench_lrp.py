"""Benchmark the LRP engine: explain time relative to one plain gradient, and peak memory on long clips.

Speed (VGG16+LSTM, ``--frames`` frames of ``--size``, random weights): ``VideoLRP(rule).attribute``
divided by one plain gradient of the target logit w.r.t. the input (forward + backward of the same clip
through the same model), timed alternately with it after a warm-up; the median of ``--repeats``
per-repeat ratios (robust to load on shared machines). Two baselines are reported:
``grad_input`` (parameters frozen: input gradient only, the strict floor) and ``grad_full``
(parameters require grad as in a training-ready model, so the backward also computes weight gradients).
Peers on the VGG16 part alone (frames folded into the batch): Captum ``LRP`` and zennit's ``Epsilon``
and ``EpsilonAlpha2Beta1Flat`` composites, our engine on the same encoder, each divided by the input
gradient of that encoder. ``split_floor``: the convolutions alone that the positive/negative split rules need
(``[w+; w-]`` forward and transposed) against a gradient's (``w`` each way), on the encoder's own layer inputs;
``rule_floor_ratio`` = 1 + that extra convolution time / the encoder gradient: the ratio no split rule
(alpha-beta, gamma, the flat/box composites) can go below without computing fewer convolutions.

Memory (``--memory``, slow on small CPUs): in a fresh subprocess, explain one ``--memory-frames`` clip of
``--memory-size`` with ``chunk_frames=--chunk-frames`` and report the peak resident set size
(``VmHWM`` of ``/proc/self/status``, Linux) and its growth over the model-only baseline; on CUDA the
peak allocated device memory.

``--model convlstm`` measures the ConvLSTM (its ``conf/model/convlstm.yaml`` sizes, full model only, no memory
part). ``--model r2plus1d`` measures the 3D CNN instead (R(2+1)D-18, full width unless ``--width``): the same
explain / gradient ratios on the full model (no per-frame peers: Captum's ``LRP`` has no ``Conv3d`` rule
and zennit has no canonizer for torchvision's video residual blocks; no memory part: ``chunk_frames``
does not apply to 3D convolutions).

``--model videomae|timesformer|vivit|vjepa2|videoprism`` measures a video transformer (vidxai's network over the
``transformers`` classifier, random weights, ``--hidden``/``--layers``/``--heads``/``--patch``, tubelets of 2 frames,
VideoPrism 1; ``--attn sdpa|eager`` is the attention the *gradient* runs with where the model has it, TimeSformer
and VideoPrism have eager only): ``VideoLRP(rule, attention_rule=...)`` for each
``--attention-rules`` entry divided by one input gradient of the same clip; with ``--memory`` the peak memory of
one explanation and of one input gradient, each in a fresh subprocess (CPU: ``VmHWM`` growth; CUDA: peak
allocated growth), and ``kept_gib``: what autograd keeps from the forward for the backward (distinct storages,
parameters excluded; exact, unaffected by load or allocator), with ``kept_ratio`` = LRP / gradient.

``--model mvit_v1_b|mvit_v2_s|swin3d_t``: torchvision's attention video classifier itself (its builder's own
block settings, 400 classes, random weights; MViT at the 16 frames of 224x224 its builders fix), the same speed
and memory parts (the gradient with torchvision's own forward).

On a shared machine, ``--threads 1 --clock process`` times this process's CPU work (waits for busy cores do not
count; with more threads the CPU time would count OpenMP's spinning); the load average is recorded either way.
Results go to ``outputs/bench/bench_lrp-<time>.json`` (git-ignored) and are printed.

    python benchmarks/bench_lrp.py                      # CPU speed, 16 x 112 x 112
    python benchmarks/bench_lrp.py --device cuda --memory
    python benchmarks/bench_lrp.py --model r2plus1d     # the 3D CNN
    python benchmarks/bench_lrp.py --model videomae --memory   # a video transformer (also: timesformer)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import SMOKE_THREADS, torch_threads  # noqa: E402

from vidxai.models import VGG16LSTM, R2Plus1D  # noqa: E402
from vidxai.xai.cnn import compile_sequential, run_steps  # noqa: E402
from vidxai.xai.config import LRPConfig  # noqa: E402
from vidxai.xai.rules import make_composite  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: The clock of the speed part (``--clock``): wall time, or this process's CPU time (``process``: on a shared
#: machine with ``--threads 1`` it counts the work done, not the waits for the cores).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
_clock = CLOCKS["wall"]


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = _clock()
    fn()
    _sync(device)
    return _clock() - start


def _paired(
    method: Callable[[], object], baseline: Callable[[], object], repeats: int, device: torch.device
) -> dict:
    """Time ``method`` and ``baseline`` alternately (robust to load drift on shared machines).

    Returns the medians of both times and the median of the per-repeat ratios method / baseline.
    """
    method(), baseline()  # warm-up
    tm, tb = [], []
    for _ in range(repeats):
        tb.append(_seconds(baseline, device))
        tm.append(_seconds(method, device))
    return {
        "seconds": statistics.median(tm),
        "baseline_seconds": statistics.median(tb),
        "ratio": statistics.median(m / b for m, b in zip(tm, tb)),
    }


def _machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _model(device: torch.device, seed: int = 0) -> VGG16LSTM:
    torch.manual_seed(seed)
    model = VGG16LSTM(11, hidden_size=256).to(device).eval()
    with torch.no_grad():  # non-zero biases, like a trained network
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_(0, 0.01)
    return model


def _r2plus1d(device: torch.device, width: float, seed: int = 0) -> R2Plus1D:
    torch.manual_seed(seed)
    model = R2Plus1D(11, width=width).to(device).eval()
    with torch.no_grad():  # BatchNorm statistics and shifts like a trained network (folded into biases)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.01)
    return model


TRANSFORMERS = ("videomae", "timesformer", "vivit", "vjepa2", "videoprism")
#: torchvision's attention video classifiers (random weights, 400 classes; MViT's builders fix 16 x 224 x 224)
TORCHVISION_ATTENTION = ("mvit_v1_b", "mvit_v2_s", "swin3d_t")
#: every model explained by the engine (the model's own forward under the rules)
ATTENTION_MODELS = (*TRANSFORMERS, *TORCHVISION_ATTENTION)


def _convlstm(device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The ConvLSTM of ``conf/model/convlstm.yaml`` (its stem and cell sizes), random weights."""
    from omegaconf import OmegaConf

    from vidxai.models import build_network

    torch.manual_seed(seed)
    net = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "convlstm.yaml").net, resolve=True)
    net.pop("arch", None)
    return build_network("convlstm", 11, **{k: v for k, v in net.items() if not k.startswith("_")}).to(device).eval()


def _transformer(args: argparse.Namespace, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """vidxai's network of ``--model`` (the ``transformers`` classifier as ``.hf``), or torchvision's model itself,
    random weights."""
    from vidxai.models import NETWORKS, build_network

    torch.manual_seed(seed)
    if args.model in TORCHVISION_ATTENTION:
        import torchvision.models as tvm

        return tvm.get_model(args.model, weights=None, num_classes=400).to(device).eval()
    kw = dict(num_frames=args.frames, image_size=args.size, patch_size=args.patch, hidden_size=args.hidden,
              num_layers=args.layers, num_heads=args.heads, intermediate_size=4 * args.hidden)
    if args.model != "timesformer":
        kw["tubelet_size"] = 1 if args.model == "videoprism" else 2
    attns = NETWORKS[args.model].attn_implementations
    kw["attn_implementation"] = args.attn if args.attn in attns else attns[0]
    return build_network(args.model, 11, **kw).to(device).eval()


def _clip(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """One random clip in the layout ``model`` takes (:func:`vidxai.models.foreign.as_video_net`; torchvision's
    ``(1, C, T, H, W)``)."""
    from vidxai.models.foreign import as_video_net, to_model_layout

    clip = torch.randn(1, args.frames, 3, args.size, args.size, device=device)
    return to_model_layout(clip, as_video_net(model)[1]).contiguous()


def transformer_speed(args: argparse.Namespace, device: torch.device) -> dict:
    """LRP time / input-gradient time of a video transformer, per attention rule."""
    model = _transformer(args, device)
    for p in model.parameters():
        p.requires_grad_(False)
    clip = _clip(model, args, device)
    target = 3

    def grad_input() -> None:
        x = clip.clone().requires_grad_(True)
        model(x)[0, target].backward()

    full: dict = {}
    for rule in args.rules:
        for attention in args.attention_rules:
            explainer = LRPConfig(rule=rule, attention_rule=attention).build(model)
            full[f"vidxai_{rule}_{attention}"] = _paired(
                lambda e=explainer: e.attribute(clip, target=target), grad_input, args.repeats, device
            )
    return {"full_model": full}


def transformer_memory_child(args: argparse.Namespace, device: torch.device) -> dict:
    """In a fresh process: the peak memory of one LRP explanation (``--memory-rule``, first attention rule) or,
    with ``--memory-rule gradient``, of one input gradient."""
    model = _transformer(args, device)
    for p in model.parameters():
        p.requires_grad_(False)
    clip = _clip(model, args, device)
    if args.memory_rule == "gradient":
        def run() -> None:
            x = clip.clone().requires_grad_(True)
            model(x)[0, 0].backward()
    else:
        explainer = LRPConfig(rule=args.memory_rule, attention_rule=args.attention_rules[0]).build(model)

        def run() -> None:
            explainer.attribute(clip, target=0)
    out = _peak(run, device, {"method": args.memory_rule, "attention_rule": args.attention_rules[0]})
    out["kept_gib"] = _kept_between_passes(run, model)
    return out


def _kept_between_passes(run: Callable[[], object], model: torch.nn.Module) -> float:
    """GiB of the distinct tensor storages that autograd keeps from the forward for the backward during ``run``,
    the model's parameters and buffers excluded: exact and independent of the allocator and the machine's load
    (the peak figures also count the backward's temporaries and what the allocator holds)."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(kept.values()) / 2**30


def _peak(run: Callable[[], object], device: torch.device, out: dict) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    rss_before = _vm_kib("VmRSS")
    start = time.perf_counter()
    run()
    _sync(device)
    out["seconds"] = time.perf_counter() - start
    out["peak_growth_gib"] = (_vm_kib("VmHWM") - rss_before) / 2**20
    if device.type == "cuda":
        out["cuda_peak_growth_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    return out


def transformer_memory(args: argparse.Namespace) -> dict:
    """:func:`transformer_memory_child` for the gradient and for LRP, each in its own subprocess."""
    out = {}
    for method in ("gradient", args.memory_rule):
        if args.smoke:  # the code path in this process (the peak figures are not one call's alone)
            out[method] = {**transformer_memory_child(argparse.Namespace(**{**vars(args), "memory_rule": method}),
                                                      torch.device(args.device)), "in_process": True}
            continue
        cmd = [
            sys.executable, __file__, "--memory-child", "--device", args.device, "--model", args.model,
            "--frames", str(args.frames), "--size", str(args.size), "--patch", str(args.patch),
            "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
            "--attn", args.attn, "--memory-rule", method, "--attention-rules", *args.attention_rules,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            out[method] = {"error": lines[-1] if lines else f"exit {proc.returncode}"}
        else:
            out[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    grad, lrp = out["gradient"], out[args.memory_rule]
    key = "cuda_peak_growth_gib" if args.device.startswith("cuda") else "peak_growth_gib"
    if key in grad and key in lrp and grad[key] > 0:
        out["ratio"] = lrp[key] / grad[key]
    if "kept_gib" in grad and "kept_gib" in lrp:
        out["kept_ratio"] = lrp["kept_gib"] / grad["kept_gib"]
    return out


def speed(args: argparse.Namespace, device: torch.device) -> dict:
    """Explain time / gradient time, full model and VGG16 alone with peers (ConvLSTM, R(2+1)D: full model only)."""
    full_only = args.model != "vgg16_lstm"  # the per-frame peers need VGG16's encoder
    builders = {"vgg16_lstm": lambda: _model(device), "r2plus1d": lambda: _r2plus1d(device, args.width),
                "convlstm": lambda: _convlstm(device)}
    model = builders[args.model]()
    clip = torch.randn(1, args.frames, 3, args.size, args.size, device=device)
    target = 3
    params = list(model.parameters())

    def set_requires_grad(flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def grad_input() -> None:  # parameters frozen: the input gradient only
        x = clip.clone().requires_grad_(True)
        model(x)[0, target].backward()

    def grad_full() -> None:  # parameters require grad: weight gradients too
        set_requires_grad(True)
        try:
            grad_input()
        finally:
            set_requires_grad(False)

    results: dict = {"full_model": {}} if full_only else {"full_model": {}, "encoder_only": {}}
    full = results["full_model"]
    # cuDNN's LSTM backward needs training mode; a one-layer LSTM has no dropout, so it computes the same
    if not full_only:
        model.lstm.train(device.type == "cuda")
    set_requires_grad(False)
    full["grad_full_vs_grad_input"] = _paired(grad_full, grad_input, args.repeats, device)
    full_over_input = full["grad_full_vs_grad_input"]["ratio"]
    for rule in args.rules:
        explainer = LRPConfig(rule=rule).build(model)
        res = _paired(lambda: explainer.attribute(clip, target=target), grad_input, args.repeats, device)  # noqa: B023
        res["ratio_vs_grad_full"] = res["ratio"] / full_over_input
        full[f"vidxai_{rule}"] = res
    if full_only:
        return results

    # --- VGG16 part alone, frames folded into the batch, starting relevance = ones at the features
    encoder = model.encoder
    frames = clip[0]
    start = torch.ones(args.frames, 512, device=device)
    enc = results["encoder_only"]

    def enc_gradient() -> None:
        x = frames.clone().requires_grad_(True)
        torch.autograd.grad(encoder(x), x, start)

    steps = compile_sequential(encoder, "encoder")
    for rule in args.rules:

        def ours(composite=make_composite(rule)) -> None:  # noqa: B008 - binds this loop's rule
            x = frames.clone().requires_grad_(True)
            torch.autograd.grad(run_steps(steps, composite, x), x, start)

        enc[f"vidxai_{rule}"] = _paired(ours, enc_gradient, args.repeats, device)
    floor = enc["split_floor"] = _split_floor(encoder, frames, args.repeats, device)
    grad_s = [v["baseline_seconds"] for k, v in enc.items() if k.startswith("vidxai_")]
    if grad_s:  # one gradient plus the extra convolution work alone: what a split rule cannot go below
        floor["rule_floor_ratio"] = 1 + (floor["seconds"] - floor["baseline_seconds"]) / statistics.median(grad_s)
    try:
        from captum.attr import LRP

        lrp = LRP(copy.deepcopy(encoder[:-1]))  # Captum's LRP has no rule for Flatten: output (N, 512, 1, 1)
        enc["captum_lrp_epsilon"] = _paired(
            lambda: lrp.attribute(frames.clone(), target=(0, 0, 0)), enc_gradient, args.repeats, device
        )
    except Exception as err:  # peers are optional
        enc["captum_lrp_error"] = repr(err)
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonAlpha2Beta1Flat, LayerMapComposite
        from zennit.rules import Epsilon, Norm, Pass
        from zennit.types import Activation, AvgPool, Convolution

        composites = {
            "epsilon": LayerMapComposite(
                [
                    (Activation, Pass()),
                    (AvgPool, Norm()),
                    (Convolution, Epsilon(0.1)),
                    (torch.nn.Linear, Epsilon(0.1)),
                ]
            ),
            "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat(),
        }
        zennit_encoder = copy.deepcopy(encoder)
        for name, composite in composites.items():
            with Gradient(zennit_encoder, composite) as attributor:
                enc[f"zennit_{name}"] = _paired(
                    lambda: attributor(frames.clone(), attr_output=start), enc_gradient, args.repeats, device
                )
    except Exception as err:
        enc["zennit_error"] = repr(err)
    model.lstm.eval()
    return results


def _split_floor(encoder: torch.nn.Module, frames: torch.Tensor, repeats: int, device: torch.device) -> dict:
    """The convolution work of the positive/negative split rules against a gradient's, on the encoder's shapes.

    A gradient runs each convolution once forward and once transposed (input part); alpha-beta, gamma and the
    flat/box composites need both weight groups ``[w+; w-]`` each way (one convolution of twice the output
    channels, and its transpose). Timed here alone, on the inputs each conv layer of ``encoder`` sees: the
    ratio is the floor of those rules' ratio, before any elementwise work.
    """
    import torch.nn.functional as F  # noqa: N812

    inputs: list[tuple[torch.nn.Conv2d, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, a, _o: inputs.append((m, a[0].detach().clamp(min=0))))
             for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        encoder(frames)
    for h in hooks:
        h.remove()
    layers = []
    for m, x in inputs:
        w = m.weight.detach()
        stacked = torch.cat([w.clamp(min=0), w.clamp(max=0)])
        out = F.conv2d(x, w, None, m.stride, m.padding)
        layers.append((m, x, w, stacked, torch.randn_like(out), torch.randn_like(torch.cat([out, out], 1))))

    def convs(split: bool) -> None:
        for m, x, w, stacked, g, g2 in layers:
            weight, grad = (stacked, g2) if split else (w, g)
            F.conv2d(x, weight, None, m.stride, m.padding)
            torch.nn.grad.conv2d_input(x.shape, weight, grad, m.stride, m.padding)

    return _paired(lambda: convs(True), lambda: convs(False), repeats, device)


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(args: argparse.Namespace, device: torch.device) -> dict:
    """Run in a fresh process: peak memory of one chunked explanation."""
    model = _model(device)
    clip = torch.randn(1, args.memory_frames, 3, args.memory_size, args.memory_size, device=device)
    explainer = LRPConfig(rule=args.memory_rule, chunk_frames=args.chunk_frames).build(model)
    out: dict = {"frames": args.memory_frames, "size": args.memory_size, "chunk_frames": args.chunk_frames}
    out["rule"] = args.memory_rule
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    rss_before = _vm_kib("VmRSS")
    start = time.perf_counter()
    explainer.attribute(clip, target=0)
    _sync(device)
    out["seconds"] = time.perf_counter() - start
    out["rss_before_gib"] = rss_before / 2**20
    out["peak_rss_gib"] = _vm_kib("VmHWM") / 2**20
    out["peak_growth_gib"] = out["peak_rss_gib"] - out["rss_before_gib"]
    if device.type == "cuda":
        out["cuda_peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["cuda_peak_growth_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    return out


def memory(args: argparse.Namespace) -> dict:
    """Run :func:`memory_child` in a subprocess so that VmHWM is this run's peak alone (``--smoke``: in this
    process, so the peak is not this call's alone)."""
    if args.smoke:
        return {**memory_child(args, torch.device(args.device)), "in_process": True}
    cmd = [
        sys.executable, __file__, "--memory-child", "--device", args.device,
        "--memory-frames", str(args.memory_frames), "--memory-size", str(args.memory_size),
        "--chunk-frames", str(args.chunk_frames), "--memory-rule", args.memory_rule,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: ``--smoke``: each model at the tiniest size its code accepts (VGG16 needs 32x32: five 2x2 poolings)
SMOKE: dict[str, dict] = {
    "vgg16_lstm": {"frames": 2, "size": 32, "memory": True, "memory_frames": 4, "memory_size": 32,
                   "chunk_frames": 2},
    "convlstm": {"frames": 4, "size": 32, "memory": False},
    "r2plus1d": {"frames": 4, "size": 32, "width": 0.125, "memory": False},
    **{m: {"frames": 4, "size": 16, "patch": 8, "hidden": 16, "layers": 1, "heads": 2, "memory": True}
       for m in TRANSFORMERS},
    "swin3d_t": {"frames": 4, "size": 32, "memory": False},  # torchvision's full Swin3D-T (MViT: 16 x 224², slow)
}


def _parts(args: argparse.Namespace, device: torch.device) -> dict:
    """The speed and (``--memory``) memory parts for ``args.model``."""
    is_attention = args.model in ATTENTION_MODELS
    out: dict = {}
    if not args.no_speed:
        out["speed"] = transformer_speed(args, device) if is_attention else speed(args, device)
    if args.memory:
        out["memory"] = transformer_memory(args) if is_attention else memory(args)
    return out


def table(report: dict) -> str:
    """One row per measured ratio: model, part, what, ratio (method / baseline) and the two times."""
    runs = report.get("smoke") or {report["config"]["model"]: report}
    lines = [f"{'model':<12} {'part':<13} {'what':<34} {'ratio':>8} {'seconds':>9} {'baseline s':>10}"]
    for model, run in runs.items():
        for part, rows in run.get("speed", {}).items():
            for what, r in rows.items():
                if isinstance(r, dict) and "ratio" in r:
                    lines.append(f"{model:<12} {part:<13} {what:<34} {r['ratio']:>7.2f}x {r['seconds']:>9.3f} "
                                 f"{r['baseline_seconds']:>10.3f}")
                elif isinstance(r, str):  # a peer that could not run
                    lines.append(f"{model:<12} {part:<13} {what:<34} {r[:60]}")
        mem = run.get("memory")
        if mem:
            if "peak_growth_gib" in mem:  # VGG16+LSTM: one chunked explanation
                lines.append(f"{model:<12} {'memory':<13} {'peak growth GiB (' + mem['rule'] + ')':<34} "
                             f"{mem['peak_growth_gib']:>8.3f} {mem['seconds']:>9.3f}")
            for what in ("ratio", "kept_ratio"):
                if what in mem:
                    lines.append(f"{model:<12} {'memory':<13} {what + ' (LRP / gradient)':<34} {mem[what]:>7.2f}x")
            for what, r in mem.items():
                if isinstance(r, dict) and "error" in r:
                    lines.append(f"{model:<12} {'memory':<13} {what:<34} error: {r['error']}")
            if "error" in mem:
                lines.append(f"{model:<12} {'memory':<13} error: {mem['error']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used by tests/test_benchmarks.py to check the documented commands)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model", default="vgg16_lstm",
                        choices=["vgg16_lstm", "convlstm", "r2plus1d", *ATTENTION_MODELS])
    parser.add_argument("--patch", type=int, default=16, help="transformers: patch size")
    parser.add_argument("--hidden", type=int, default=384, help="transformers: hidden size")
    parser.add_argument("--layers", type=int, default=6, help="transformers: blocks")
    parser.add_argument("--heads", type=int, default=6, help="transformers: attention heads")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="VideoMAE's attention (gradient)")
    parser.add_argument("--attention-rules", nargs="+", default=["attnlrp", "cp"])
    parser.add_argument("--width", type=float, default=1.0, help="R(2+1)D channel multiplier (1 = R(2+1)D-18)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rules", nargs="+", default=["epsilon", "alpha_beta"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=list(CLOCKS), help="speed clock (process: CPU time)")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed part")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory on a long clip")
    parser.add_argument("--memory-frames", type=int, default=70)
    parser.add_argument("--memory-size", type=int, default=224)
    parser.add_argument("--memory-rule", default="epsilon")
    parser.add_argument("--chunk-frames", type=int, default=8)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="every model and part (speed, memory, peers) at the tiniest sizes, one repeat, memory "
                             "children in this process: checks the script in seconds, measures nothing")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available")
    if args.model.startswith("mvit") and (args.frames, args.size) != (16, 224):
        parser.error(f"--model {args.model}: torchvision's MViT builders take 16 frames of 224x224 (--frames 16 "
                     "--size 224)")
    if args.memory and args.model in ("r2plus1d", "convlstm"):
        parser.error(f"--memory measures VGG16+LSTM's chunk_frames (or a transformer's peak), not --model {args.model}")
    device = torch.device(args.device)
    if args.clock == "process" and device.type == "cuda":
        parser.error("--clock process counts CPU time only; use --clock wall on CUDA")
    if args.smoke and args.device == "cpu":
        args.threads = args.threads or SMOKE_THREADS
    global _clock
    clock, _clock = _clock, CLOCKS[args.clock]
    try:
        with torch_threads(args.threads):
            return _run(args, parser, device)
    finally:  # a caller in the same process (the smoke test) keeps its clock
        _clock = clock


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, device: torch.device) -> dict:

    is_attention = args.model in ATTENTION_MODELS
    if is_attention and args.rules == parser.get_default("rules"):
        args.rules = ["epsilon"]
    if args.memory_child:
        child = transformer_memory_child if is_attention else memory_child
        out = child(args, device)
        print(json.dumps(out))
        return out

    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "machine": _machine(device),
        "load_average_before": os.getloadavg(),
        "config": {
            "model": args.model, "width": args.width if args.model == "r2plus1d" else None,
            "frames": args.frames, "size": args.size, "repeats": args.repeats, "rules": args.rules,
            "clock": args.clock,
        },  # fmt: skip
    }
    if args.model in TORCHVISION_ATTENTION:
        report["config"].update({"torchvision": args.model, "attention_rules": args.attention_rules})
    elif is_attention:
        report["config"].update(
            {"patch": args.patch, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
             "attn": args.attn if args.model in ("videomae", "vivit", "vjepa2") else "eager",
             "attention_rules": args.attention_rules}
        )  # fmt: skip
    if args.smoke:
        report["config"] = {"smoke": SMOKE}
        report["smoke"] = {}
        for model, sizes in SMOKE.items():
            one = argparse.Namespace(**{**vars(args), **sizes, "model": model, "repeats": 1, "no_speed": False})
            if model in ATTENTION_MODELS:
                one.rules = ["epsilon"]
            report["smoke"][model] = _parts(one, device)
            print(f"  smoke {model}: done", file=sys.stderr, flush=True)
    else:
        report.update(_parts(args, device))
    report["load_average_after"] = os.getloadavg()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_lrp-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.device}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(table(report))
    print(f"written to {path}")
    return report


if __name__ == "__main__":
    main()
