"""``report.html``: what an explain run found, in one self-contained file a person opens in any browser.

Every image is inlined (base64 PNG / GIF), there are no scripts, fonts or style sheets from the network, so the
file works offline, attached to an e-mail or inside the W&B run (:func:`log_report`). One builder per mode, all
through :func:`write_report`:

* :func:`evaluation_report` (``mode=evaluate``): the verdict in words, the method table with 95% CIs and the
  per-score summary (from :mod:`vidxai.evaluation.summary`, the same text as ``evaluation.md``), the figures,
  and for each video whose maps were kept the maps of the best methods side by side;
* :func:`explanation_report` (``mode=single`` / ``compare``): the clip with the relevance overlaid (the animated
  GIF), the relevance over time with its peaks, the peak frames, the top-k predictions, the rule comparison;
* :func:`profile_report` (``mode=profile``): the temporal profile and its numbers.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidxai.journal import atomic_write_text
from vidxai.pipelines._common import save_in_run
from vidxai.wandb_media import Html, log_media

__all__ = ["evaluation_report", "explanation_report", "log_report", "profile_report", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1180px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.1em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em} h3{font-size:1.05em;margin-bottom:.3em}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f4f4f4}
table{display:block;overflow-x:auto;max-width:100%} .videos{display:flex;flex-wrap:wrap;gap:1.2em}
.video h3{font-size:.9em}
tr:nth-child(even) td{background:#fafafa} img{max-width:100%;height:auto} .maps td{text-align:center}
.maps img,img[alt=overlay]{image-rendering:pixelated} .verdict li{margin:.2em 0} .note{color:#666;font-size:.85em}
code{background:#f4f4f4;padding:0 .25em}
"""


# ---------------------------------------------------------------------------- building blocks
def _esc(text: Any) -> str:
    return html.escape(str(text))


def image_tag(source: str | Path | bytes, alt: str = "", width: int | None = None) -> str:
    """An ``<img>`` with the file (PNG, GIF, JPEG) or PNG bytes inlined as base64."""
    if isinstance(source, bytes):
        data, mime = source, "image/png"
    else:
        path = Path(source)
        data = path.read_bytes()
        mime = {".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(),
                                                                                       "image/png")
    size = f' width="{int(width)}"' if width else ""
    return f'<img alt="{_esc(alt)}"{size} src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 3)`` image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], escape: bool = True) -> str:
    """A plain HTML table."""
    cell = _esc if escape else str
    head = "".join(f"<th>{cell(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def markdown_html(text: str) -> str:
    """The small Markdown of ``evaluation.md`` (tables, nested bullet lists, ``**bold**``) as HTML."""
    out: list[str] = []
    rows: list[list[str]] = []
    depth = 0

    def inline(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", _esc(s))

    def close_table() -> None:
        if rows:
            head, *body = rows
            out.append(table(head, body, escape=False))
            rows.clear()

    def close_lists(to: int) -> None:
        nonlocal depth
        while depth > to:
            out.append("</ul>")
            depth -= 1

    for line in text.splitlines():
        if line.startswith("|"):
            close_lists(0)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append([inline(c) for c in cells])
            continue
        close_table()
        bullet = re.match(r"^(\s*)- (.*)$", line)
        if bullet:
            level = len(bullet.group(1)) // 2 + 1
            if level > depth:
                out.extend(["<ul>"] * (level - depth))
                depth = level
            close_lists(level)
            out.append(f"<li>{inline(bullet.group(2))}</li>")
        elif line.strip():
            close_lists(0)
            out.append(f"<p>{inline(line.strip())}</p>")
    close_table()
    close_lists(0)
    return "\n".join(out)


def write_report(path: str | Path, title: str, subtitle: str, sections: Sequence[tuple[str, str]]) -> Path:
    """``path`` (``report.html``): the title, a line under it and ``(heading, HTML)`` sections, written
    atomically."""
    parts = [f"<h1>{_esc(title)}</h1>", f'<p class="sub">{_esc(subtitle)}</p>']
    parts += [f"<h2>{_esc(heading)}</h2>\n{body}" for heading, body in sections if body]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) +
            '\n<p class="note">Written by vidxai (explain.py); every image is inside this file.</p></body></html>\n')
    return atomic_write_text(path, page)


def log_report(run: Any, path: str | Path, key: str = "report") -> None:
    """Put ``report.html`` into the W&B run (as ``wandb.Html`` under ``key``, and among the run's files)."""
    if run is None:
        return

    log_media(run, {key: Html(path)})
    save_in_run(run, Path(path))


# ---------------------------------------------------------------------------- mode=evaluate
def best_methods(result: Mapping[str, Any], most: int = 3) -> list[str]:
    """The methods best on the most ranked scores (ties: the order of the methods), at most ``most``; the
    random control is left out (its maps show nothing about the model), then others fill up to ``most``."""
    from vidxai.evaluation.methods import family_of  # torch and the methods: only where an evaluation ran

    wins: dict[str, int] = {}
    methods = result.get("methods", {})
    for m in result.get("metrics", {}).values():
        if m.get("best") and "left_out" not in m:
            wins[m["best"]] = wins.get(m["best"], 0) + 1
    order = [n for n, m in methods.items()
             if not m.get("skipped") and not family_of(n, m.get("family")).reference]
    ranked = sorted(order, key=lambda n: (-wins.get(n, 0), order.index(n)))
    return ranked[:most]


def _frames_of(video: np.ndarray) -> np.ndarray:
    """A normalised model input ``(T, C, H, W)`` as uint8 frames ``(T, H, W, 3)`` (min-max over the clip)."""
    v = np.asarray(video, dtype=np.float32)
    v = (v - v.min()) / max(float(v.max() - v.min()), 1e-8)
    frames = np.moveaxis(v, 1, -1)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.round(frames[..., :3] * 255).astype(np.uint8)


def _strip(images: np.ndarray, columns: Sequence[int], height: int = 96) -> bytes:
    """The frames ``columns`` of ``images (T, H, W, 3)`` side by side, scaled up to about ``height`` pixels."""
    picked = [images[c] for c in columns]
    scale = max(1, height // picked[0].shape[0])
    gap = np.full((picked[0].shape[0] * scale, 2, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for img in picked:
        parts += [img.repeat(scale, axis=0).repeat(scale, axis=1), gap]
    return png_bytes(np.concatenate(parts[:-1], axis=1))


def _video_maps(maps_dir: Path, result: Mapping[str, Any], methods: list[str], most: int) -> str:
    """Per video whose maps were kept: a table, one row per frame shown, the clip then each method's map."""
    from vidxai.viz.heatmaps import overlay

    files = sorted(maps_dir.glob("*.npz"), key=lambda p: int(p.stem) if p.stem.isdigit() else 1 << 30)[:most]
    sources = result.get("settings", {}).get("video_files") or []
    blocks = []
    for path in files:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if "__video__" not in arrays:
            continue
        frames = _frames_of(arrays["__video__"])
        t = len(frames)
        shown = sorted({int(round(c)) for c in np.linspace(0, t - 1, min(t, 4))})
        columns = {"clip": frames}
        columns.update({n: overlay(frames, arrays[f"m_{n}"]) for n in methods if f"m_{n}" in arrays})
        head = "".join(f"<th>{_esc(n)}</th>" for n in ["frame", *columns])
        rows = "".join(f"<tr><th>{c}</th>" + "".join(f"<td>{image_tag(_strip(v, [c]), n)}</td>"
                                                     for n, v in columns.items()) + "</tr>" for c in shown)
        key = int(path.stem) if path.stem.isdigit() else None
        label = Path(sources[key]).name if key is not None and key < len(sources) else path.stem
        blocks.append(f'<div class="video"><h3>{_esc(label)}</h3><table class="maps"><tr>{head}</tr>{rows}</table>'
                      "</div>")
    if not blocks:
        return ""
    return ("<p>Red: evidence for the explained class, blue: against it (each map on its own scale); frames of the "
            "clip as the model saw it. Maps are kept for the videos of the randomisation tests "
            "(<code>save_maps=true</code>: every video).</p>" + '<div class="videos">' + "\n".join(blocks) + "</div>")


def evaluation_report(result: Mapping[str, Any], out_dir: str | Path, figures: Mapping[str, str | Path],
                      maps_dir: str | Path | None = None, title: str | None = None, videos: int = 6) -> Path:
    """``out_dir/report.html`` of an evaluation (the result dict of :func:`vidxai.evaluation.evaluate`,
    ``figures``: ``evaluation.png``, ``mprt.png``; ``maps_dir``: the kept maps, ``journal/maps``)."""
    from vidxai.evaluation.summary import markdown_table, verdict

    s = result.get("settings", {})
    lines = verdict(dict(result))
    words = "".join(f"<li><b>{_esc(family.replace('_', ' '))}</b><ul>"
                    + "".join(f"<li>{_esc(line)}</li>" for line in items) + "</ul></li>"
                    for family, items in lines.items())
    best = best_methods(result)
    maps = _video_maps(Path(maps_dir), result, best, videos) if maps_dir and Path(maps_dir).is_dir() else ""
    tables, _, words_md = markdown_table(dict(result)).partition("**Verdict**")
    words = markdown_html(words_md) if words_md.strip() else words
    sections = [
        ("Verdict", f'<div class="verdict">{words}</div>' if words else "<p>No score could rank the methods.</p>"),
        ("Scores (mean ± half the 95% CI; bold: tied with the best)", markdown_html(tables)),
        ("Figures", "".join(image_tag(p, name) for name, p in figures.items() if Path(p).is_file())),
        (f"Maps of the best methods ({', '.join(best)})", maps),
    ]
    subtitle = (f"{s.get('arch', '?')} · {Path(str(s.get('checkpoint', '?'))).name} · split={s.get('split', '?')} · "
                f"{s.get('videos', '?')} videos · {len(s.get('methods') or result.get('methods', {}))} methods · "
                f"baseline={s.get('baseline', '?')} · {s.get('processes', 1)} process(es)")
    return write_report(Path(out_dir) / "report.html", title or "Evaluation of explanation methods", subtitle,
                        sections)


# ---------------------------------------------------------------------------- mode=single / compare
def explanation_report(summary: Mapping[str, Any], out_dir: str | Path, figures: Mapping[str, str | Path],
                       gif: str | Path | None = None, lines: Sequence[str] = (), top_k: int = 5) -> Path:
    """``out_dir/report.html`` of one explained clip (``summary``: ``summary.json``'s dict; ``figures``: the
    heatmaps, curve, peaks and, with ``mode=compare``, compare PNGs; ``gif``: the overlay)."""
    probs = sorted((summary.get("probabilities") or {}).items(), key=lambda kv: -kv[1])[:top_k]
    true = (summary.get("true") or {}).get("class")
    ranked = table(["class", "probability", ""], [(c, f"{p:.3f}", "true class" if c == true else "")
                                                   for c, p in probs])
    order = ["heatmaps", "curve", "peaks", "compare"]
    shown = {k: figures[k] for k in order if k in figures and Path(figures[k]).is_file()}
    peaks = ", ".join(str(p["video_frame"]) for p in summary.get("peak_frames", []))
    overlay = image_tag(gif, "overlay", width=320) if gif and Path(gif).is_file() else ""
    sections = [
        ("What the model saw and where the relevance is", overlay + "".join(f"<p>{_esc(x)}</p>" for x in lines)),
        (f"Top-{len(probs)} predictions", ranked),
        ("Relevance over time" + (f" (peaks at video frames {peaks})" if peaks else ""),
         image_tag(shown.pop("curve"), "curve") if "curve" in shown else ""),
        ("Peak frames", image_tag(shown.pop("peaks"), "peaks") if "peaks" in shown else ""),
        ("Every frame", image_tag(shown.pop("heatmaps"), "heatmaps") if "heatmaps" in shown else ""),
        ("Rules side by side", image_tag(shown.pop("compare"), "compare") if "compare" in shown else ""),
    ]
    title = f"Explanation of {Path(str(summary.get('video', '?'))).name}"
    subtitle = (f"rule {summary.get('rule', '?')} · target {(summary.get('target') or {}).get('class', '?')} · "
                f"checkpoint {Path(str(summary.get('checkpoint', '?'))).name}")
    return write_report(Path(out_dir) / "report.html", title, subtitle, sections)


# ---------------------------------------------------------------------------- mode=profile
def profile_report(prof: Mapping[str, Any], out_dir: str | Path, figure: str | Path, lines: Sequence[str] = ()
                   ) -> Path:
    """``out_dir/report.html`` of a temporal profile (``prof``: ``profile.json``'s dict)."""
    summary = prof.get("overall", {}).get("summary", {})
    rows = [(k.replace("_", " "), f"{v['mean']:.1%}", f"[{v['lo']:.1%}, {v['hi']:.1%}]", f"{v['uniform']:.1%}",
             f"{v.get('p_sign', float('nan')):.2g}") for k, v in summary.items()]
    sections = [
        ("Summary", "".join(f"<p>{_esc(x)}</p>" for x in lines)
         + table(["share of positive relevance", "mean", "95% CI", "uniform", "sign test p"], rows)),
        ("Temporal profile", image_tag(figure, "profile") if Path(figure).is_file() else ""),
    ]
    subtitle = (f"rule {prof.get('rule', '?')} · split={prof.get('split', '?')} · {prof.get('videos', '?')} videos · "
                f"checkpoint {Path(str(prof.get('checkpoint', '?'))).name}")
    return write_report(Path(out_dir) / "report.html", "Where in time is the evidence?", subtitle, sections)
