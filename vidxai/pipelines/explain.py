"""The explanation pipeline behind ``explain.py``.

Everything about the model (architecture, classes, frames, size, normalisation, data) comes from the
checkpoint. Three modes:

* one video of the checkpoint's own split (default: ``split=val``, ``index=0``; or ``class=NAME``),
* any file (``video=PATH``),
* a whole split (``split=test`` without ``index``/``class``, ``limit=N``): the temporal relevance profile,
* ``evaluate=true`` (``split=test limit=N``): every LRP rule and the Captum baselines scored on the same
  videos (:mod:`vidxai.pipelines.evaluate`).

``compare=[z,epsilon,...]`` adds a rule-comparison figure of the same frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vidxai.checkpoint import LoadedCheckpoint, load_checkpoint
from vidxai.data.clips import prepare_clip
from vidxai.data.decoders import nvdec_usable
from vidxai.errors import UserError
from vidxai.pipelines._common import finish_wandb, instantiate_group, sweep_group, to_plain
from vidxai.reporting import positive_mass, relevance_summary, render_explanation, summary_text, write_json
from vidxai.wandb_media import Image, Video, log_media
from vidxai.xai import VideoLRP, get_rule, resolve_rule
from vidxai.xai.recurrent import check_lstm_rule

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """One clip ready for the model, with where it came from."""

    video: torch.Tensor  # (T,3,h,w) float, normalised, on the device
    frames: np.ndarray  # (T,h,w,3) uint8, what the model saw
    frame_indices: list[int]
    fps: float
    label: int | None
    source: str


# ---------------------------------------------------------------------------- set-up
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def _rule(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    node = cfg.get("rule")
    if isinstance(node, str):
        name, params = node, {}
    else:
        name, params = str(node.name), dict(to_plain(node.get("params")) or {})
    try:
        resolve_rule(name, **params)  # the rule registry checks the name and the parameters
    except ValueError as exc:
        raise UserError(f"rule={name}: {exc}") from None
    return name, params


def _recurrent_params(cfg: DictConfig) -> dict[str, Any]:
    """``lstm_eps`` / ``bias_factor`` / ``lstm_rule`` of the recurrent part and head when set (else VideoLRP's
    defaults)."""
    return {key: cfg[key] for key in ("lstm_eps", "bias_factor", "lstm_rule") if cfg.get(key) is not None}


def _target(value: Any, class_names: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        idx = int(value)
        if not 0 <= idx < len(class_names):
            raise UserError(
                f"target={idx} is out of range; the model has {len(class_names)} classes (0..{len(class_names) - 1})"
            )
        return idx
    if value not in class_names:
        raise UserError(f"unknown class {value!r} for target=; the checkpoint's classes are {class_names}")
    return class_names.index(value)


def _datamodule(ck: LoadedCheckpoint, cache_dir: str | None) -> Any:
    """The checkpoint's own data module (same layout, root, seed and split), set up for all splits."""
    from vidxai.data import VideoDataModule

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


# ---------------------------------------------------------------------------- clips
def _clip_from_file(path: str, ck: LoadedCheckpoint, transform: Any, device: torch.device) -> Clip:
    from vidxai.data import VideoDecodeError, read_clip
    from vidxai.data.decoders import decord_available

    p = Path(path).expanduser()
    pre = ck.preprocess
    # the training backend when it is installed here too, else whichever is
    backend = pre.get("backend", "auto")
    if (backend == "decord" and not decord_available()) or (backend == "nvdec" and not nvdec_usable()):
        backend = "auto"
    try:
        video, idx, fps = read_clip(p, int(pre["num_frames"]), size=pre.get("size"), backend=backend)
    except FileNotFoundError:
        raise UserError(f"video not found: {p}; pass video=path/to/file.avi") from None
    except VideoDecodeError as exc:
        raise UserError(
            f"cannot decode video {p}: {exc}; pass a readable video file (mp4/avi/mpg/mkv/webm/mov)"
        ) from None
    x, shown, idx = prepare_clip(video, idx, transform, device)
    # the label is known when the file sits in a folder named after a class
    label = next((ck.class_names.index(part) for part in reversed(p.parts[:-1]) if part in ck.class_names), None)
    return Clip(x, shown, idx, fps, label, str(p))


def _clip_from_dataset(dataset: Any, i: int, transform: Any, device: torch.device) -> Clip:
    sample = dataset[i]
    x, shown, idx = prepare_clip(sample["video"], sample["frame_indices"], transform, device)
    entry = dataset.entries[i]
    return Clip(x, shown, idx, float(entry.fps), int(sample["label"]), entry.record.path)


def _pick_index(dataset: Any, cfg: DictConfig, class_names: list[str], split: str) -> int:
    n = len(dataset)
    if n == 0:
        raise UserError(f"split={split} of the checkpoint's data is empty; choose split=val|test|train or video=PATH")
    cls = cfg.get("class")
    if cls is not None:
        label = _target(cls, class_names)
        hits = [i for i, e in enumerate(dataset.entries) if int(e.record.label) == label]
        if not hits:
            raise UserError(f"split={split} has no video of class {class_names[label]!r}; try another split=")
        k = int(cfg.get("index") or 0)
        if not 0 <= k < len(hits):
            raise UserError(
                f"index={k} out of range: split={split} has {len(hits)} videos of class {class_names[label]!r}"
            )
        return hits[k]
    k = int(cfg.get("index") or 0)
    if not 0 <= k < n:
        raise UserError(f"index={k} out of range: split={split} has {n} videos (0..{n - 1})")
    return k


# ---------------------------------------------------------------------------- main
def explain(cfg: DictConfig) -> dict[str, Any]:
    """Run the explanation described by ``cfg`` and return its summary."""
    from vidxai.data.transforms import VideoTransform

    torch.manual_seed(int(cfg.get("seed", 0)))
    rule, params = _rule(cfg)
    try:
        check_lstm_rule(str(cfg.get("lstm_rule") or "signal_take_all"))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    compare = list(to_plain(cfg.get("compare")) or [])
    for name in compare:
        try:
            get_rule(name)
        except ValueError as exc:
            raise UserError(f"compare=: {exc}") from None
    evaluating = bool(cfg.get("evaluate", False))
    if evaluating:
        from vidxai.pipelines.evaluate import evaluation_settings, method_names

        if cfg.get("video") is not None:
            raise UserError("evaluate=true scores the videos of a split of the checkpoint's data; drop video= "
                            "and pass split=test limit=N")
        method_names(cfg)
        evaluation_settings(cfg)  # bad values fail before the checkpoint is loaded
    device = _device(str(cfg.get("device", "auto")))
    ck = load_checkpoint(cfg.ckpt, map_location=device)
    if not ck.preprocess or "num_frames" not in ck.preprocess:
        raise UserError(
            f"checkpoint {ck.path} carries no preprocessing (num_frames, size, mean, std); retrain with train.py"
        )
    transform = VideoTransform.from_preprocess(ck.preprocess)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = _target(cfg.get("target"), ck.class_names)
    explainer = VideoLRP(ck.net, rule=rule, chunk_frames=cfg.get("chunk_frames"), **_recurrent_params(cfg), **params)

    dataset_mode = (
        cfg.get("video") is None
        and cfg.get("split") is not None
        and cfg.get("index") is None
        and cfg.get("class") is None
    )
    sweep_group(cfg)
    loggers = instantiate_group(cfg.get("logger"))
    run = _wandb_run(loggers)
    try:
        if evaluating:
            result = _evaluate_split(cfg, ck, transform, device, target, out_dir, run)
        elif dataset_mode:
            result = _explain_split(cfg, ck, explainer, transform, device, target, out_dir, run)
        else:
            if cfg.get("video") is not None:
                clip = _clip_from_file(str(cfg.video), ck, transform, device)
            else:
                split = str(cfg.get("split") or "val")
                dm = _datamodule(ck, cfg.paths.get("cache_dir"))
                dataset = _dataset(dm, split)
                clip = _clip_from_dataset(dataset, _pick_index(dataset, cfg, ck.class_names, split), transform, device)
            result = _explain_one(cfg, ck, explainer, rule, params, clip, target, compare, out_dir, run)
    finally:
        finish_wandb()
    print(summary_text(result, out_dir), flush=True)  # last: after W&B's own closing lines
    return result


def _evaluate_split(
    cfg: DictConfig, ck: LoadedCheckpoint, transform: Any, device: torch.device, target: int | None,
    out_dir: Path, run: Any,
) -> dict[str, Any]:
    from vidxai.pipelines.evaluate import run_evaluation

    dataset = _dataset(_datamodule(ck, cfg.paths.get("cache_dir")), str(cfg.get("split") or "test"))
    return run_evaluation(
        cfg, ck, dataset, lambda i: _clip_from_dataset(dataset, i, transform, device), transform, target, out_dir,
        run, recurrent=_recurrent_params(cfg),
    )


def _dataset(dm: Any, split: str) -> Any:
    if split not in ("train", "val", "test"):
        raise UserError(f"split={split!r}; choose val, test or train")
    return dm.dataset(split, train=False)


def _wandb_run(loggers: list[Any]) -> Any:
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            return lg.experiment
    return None


def _explain_one(
    cfg: DictConfig,
    ck: LoadedCheckpoint,
    explainer: Any,
    rule: str,
    params: dict[str, Any],
    clip: Clip,
    target: int | None,
    compare: list[str],
    out_dir: Path,
    run: Any,
) -> dict[str, Any]:
    from vidxai.viz.heatmaps import rule_comparison_figure
    from vidxai.viz.media import save_figure

    start = time.perf_counter()
    expl = explainer.explain(clip.video, target=target)
    seconds = time.perf_counter() - start
    e = expl.to_numpy()
    pred = int(np.argmax(e["logits"]))
    names = ck.class_names
    true = f" · true {names[clip.label]}" if clip.label is not None else ""
    title = f"{Path(clip.source).name} · {rule} · target {names[expl.target]} · pred {names[pred]}{true}"
    files = render_explanation(
        out_dir,
        clip.frames,
        e["pixel"],
        frame_indices=clip.frame_indices,
        fps=clip.fps,
        title=title,
        top_k=int(cfg.get("top_k", 3)),
        scale=str(cfg.get("scale", "video")),
    )
    np.savez_compressed(
        out_dir / "relevance.npz",
        pixel=e["pixel"],
        frame=e["frame"],
        feature=e["feature"],
        logits=e["logits"],
        target=np.int64(expl.target),
        class_names=np.array(names),
        frame_indices=np.array(clip.frame_indices, dtype=np.int64),
        frames=clip.frames,
    )
    summary = relevance_summary(
        e["pixel"], e["logits"], expl.target, names, clip.label, files.peaks, clip.frame_indices
    )
    summary.update(
        {
            "video": clip.source,
            "checkpoint": str(ck.path),
            "rule": rule,
            "rule_params": dict(expl.params),
            "recurrent_params": {
                "lstm_eps": explainer.lstm_eps,
                "bias_factor": explainer.bias_factor,
                "lstm_rule": explainer.lstm_rule,
            },
            "seconds": seconds,
            "fps": clip.fps,
            # total input relevance vs the target logit (conservative rules: delta ~ 0 up to biases)
            "conservation": {
                "total": expl.total(),
                "target_logit": float(e["logits"][expl.target]),
                "delta": expl.delta(),
            },
        }
    )

    figures = {"heatmaps": files.heatmaps, "curve": files.curve, "peaks": files.peaks_png}
    if compare:
        relevances = {}
        for name in compare:
            other = type(explainer)(ck.net, rule=name, chunk_frames=cfg.get("chunk_frames"), **_recurrent_params(cfg))
            relevances[name] = other.explain(clip.video, target=expl.target).pixel.detach().cpu().float().numpy()
        cols = _comparison_frames(len(clip.frame_indices), files.peaks)
        fig = rule_comparison_figure(clip.frames, relevances, cols, frame_indices=clip.frame_indices)
        figures["compare"] = save_figure(fig, out_dir / "compare.png") or out_dir / "compare.png"
        summary["compare"] = {"rules": compare, "frames": [clip.frame_indices[c] for c in cols]}
    write_json(out_dir / "summary.json", summary)

    if run is not None:
        media: dict[str, Any] = {f"explain/{k}": Image(v) for k, v in figures.items()}
        if files.gif is not None:
            media["explain/overlay"] = Video(files.gif)
        log_media(run, media)
        run.summary.update(
            {
                "prediction": summary["prediction"]["class"],
                "target": summary["target"]["class"],
                "rule": rule,
                **{f"share/{k}": v for k, v in summary["positive_share"].items() if isinstance(v, float)},
            }
        )
        run.save(str(out_dir / "summary.json"), base_path=str(out_dir), policy="now")
    return summary


def _comparison_frames(t: int, peaks: list[int], most: int = 8) -> list[int]:
    """Frames for the rule comparison: every frame of short clips, else the peaks plus evenly spaced ones."""
    if t <= most:
        return list(range(t))
    chosen = set(peaks[: most // 2]) | {t - 1}
    for i in np.linspace(0, t - 1, most).round().astype(int):
        if len(chosen) >= most:
            break
        chosen.add(int(i))
    return sorted(chosen)


def _explain_split(
    cfg: DictConfig,
    ck: LoadedCheckpoint,
    explainer: Any,
    transform: Any,
    device: torch.device,
    target: int | None,
    out_dir: Path,
    run: Any,
) -> dict[str, Any]:
    from vidxai.viz.media import save_figure
    from vidxai.viz.profile import positive_share, profile_figure, temporal_profile

    split = str(cfg.split)
    dm = _datamodule(ck, cfg.paths.get("cache_dir"))
    dataset = _dataset(dm, split)
    n = len(dataset) if cfg.get("limit") is None else min(len(dataset), int(cfg.limit))
    if n == 0:
        raise UserError(f"split={split} of the checkpoint's data is empty; choose another split=")
    shares, labels, rows = [], [], []
    start = time.perf_counter()
    for i in range(n):
        clip = _clip_from_dataset(dataset, i, transform, device)
        expl = explainer.explain(clip.video, target=target)
        frame = expl.frame.detach().cpu().double().numpy()
        logits = expl.logits.detach().cpu().double().numpy()
        shares.append(positive_share(positive_mass(expl.pixel.detach().cpu().double().numpy())))
        labels.append(int(clip.label))
        rows.append(
            {
                "video": clip.source,
                "label": ck.class_names[clip.label],
                "target": ck.class_names[expl.target],
                "prediction": ck.class_names[int(np.argmax(logits))],
                "frame_relevance": frame.tolist(),
                "frame_indices": clip.frame_indices,
            }
        )
        if (i + 1) % 10 == 0:
            log.info("explained %d/%d videos", i + 1, n)
    seconds = time.perf_counter() - start
    prof = temporal_profile(
        # no more bins than frames per clip, so no bin is empty by construction
        shares,
        labels,
        ck.class_names,
        n_bins=min(int(cfg.profile.n_bins), int(ck.preprocess["num_frames"])),
        n_boot=int(cfg.profile.n_boot),
        seed=int(cfg.get("seed", 0)),
    )
    prof.update(
        {
            "split": split,
            "videos": n,
            "rule": explainer.rule_name if hasattr(explainer, "rule_name") else str(cfg.rule.name),
            "checkpoint": str(ck.path),
            "seconds": seconds,
            "accuracy": float(np.mean([r["label"] == r["prediction"] for r in rows])),
        }
    )
    write_json(out_dir / "profile.json", prof)
    write_json(out_dir / "videos.json", rows)
    fig_path = out_dir / "profile.png"
    save_figure(profile_figure(prof), fig_path)
    if run is not None:
        log_media(run, {"explain/profile": Image(fig_path)})
        run.summary.update({k: v for k, v in prof.items() if isinstance(v, (int, float, str))})
        run.save(str(out_dir / "profile.json"), base_path=str(out_dir), policy="now")
    return prof


def explain_entry(cfg: DictConfig) -> dict[str, Any]:
    """Log the composed config, then explain."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    return explain(cfg)
