"""report.html: one self-contained file (every image inlined, nothing from the network) per explain mode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vidxai.evaluation import EvalClip, EvalSettings, evaluate
from vidxai.models import build_network
from vidxai.viz.report import best_methods, evaluation_report, explanation_report, markdown_html, profile_report


def _self_contained(page: str) -> None:
    """No file, script, style sheet or font is fetched: every src is a data: URI, no link to anything."""
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"<(script|link|iframe)\b", page)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs), srcs[:3]
    assert "http://" not in page and "https://" not in page and "url(" not in page


def test_markdown_of_the_evaluation_becomes_tables_and_nested_lists() -> None:
    out = markdown_html("| a | b |\n|---|---|\n| **x** | 1 |\n\nSome <text>\n\n- fam:\n  - one\n  - two\n- other:")
    assert out.count("<table>") == 1 and "<th>a</th>" in out and "<td><b>x</b></td>" in out
    assert "&lt;text&gt;" in out  # escaped
    assert out.count("<ul>") == 2 and out.count("</ul>") == 2 and "<li>one</li>" in out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    torch.manual_seed(0)
    net = build_network("convlstm", num_classes=3, hidden_channels=[4], stem_channels=4).eval()
    g = torch.Generator().manual_seed(1)
    clips = [EvalClip(torch.randn(4, 3, 16, 16, generator=g), f"/data/v{i}.avi", i % 3) for i in range(4)]
    s = EvalSettings(mprt_videos=1, randomisation_videos=2, mprt_steps=1, region_size=4, n_boot=50)
    result = evaluate(net, clips, ["epsilon", "saliency", "random"], s)
    result["settings"]["video_files"] = [c.source for c in clips]
    maps = tmp_path_factory.mktemp("maps")
    for k, clip in enumerate(clips[:2]):  # what the journal keeps: the clip and each method's map
        np.savez(maps / f"{k}.npz", __video__=clip.video.numpy().astype(np.float16),
                 m_epsilon=np.random.default_rng(k).normal(size=(4, 16, 16)), m_saliency=np.ones((4, 16, 16)))
    return result, maps


def test_evaluation_report_has_the_verdict_tables_figures_and_maps(evaluated: tuple[dict, Path],
                                                                   tmp_path: Path) -> None:
    from vidxai.evaluation.summary import verdict
    from vidxai.viz.evaluation import evaluation_figure
    from vidxai.viz.media import save_figure

    result, maps = evaluated
    figure = tmp_path / "evaluation.png"
    save_figure(evaluation_figure(result), figure)
    page = evaluation_report(result, tmp_path, {"evaluation": figure}, maps_dir=maps).read_text()
    _self_contained(page)
    first = next(iter(verdict(result).values()))[0]
    assert first.split(":")[0] in page  # the verdict in words, from the summary
    assert "± " in page and "95% CI" in page  # the tables with intervals
    assert page.count('alt="evaluation"') == 1
    assert "v0.avi" in page and "v1.avi" in page and "v2.avi" not in page  # maps of the videos that kept them
    best = best_methods(result)
    assert "random" not in best and set(best) <= {"epsilon", "saliency"}
    assert all(f">{name}</th>" in page for name in best if name in ("epsilon", "saliency"))


def test_single_and_profile_reports_inline_their_media(tmp_path: Path) -> None:
    from PIL import Image

    gif, png = tmp_path / "overlay.gif", tmp_path / "curve.png"
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(png)
    summary = {"video": "/x/clip.avi", "rule": "epsilon", "target": {"class": "b"}, "true": {"class": "a"},
               "probabilities": {"a": 0.2, "b": 0.7, "c": 0.1}, "peak_frames": [{"video_frame": 5}]}
    page = explanation_report(summary, tmp_path, {"curve": png}, gif, ["a line"], top_k=2).read_text()
    _self_contained(page)
    assert "data:image/gif;base64," in page and "peaks at video frames 5" in page
    assert page.index("<td>b</td>") < page.index("<td>a</td>") and "<td>c</td>" not in page  # top-2, by probability
    prof = {"rule": "z", "split": "test", "videos": 3, "overall": {"summary": {
        "first_half": {"mean": 0.25, "lo": 0.2, "hi": 0.3, "uniform": 0.5, "p_sign": 0.01}}}}
    page = profile_report(prof, tmp_path / "p", png, ["3 videos"]).read_text()
    _self_contained(page)
    assert "25.0%" in page and "[20.0%, 30.0%]" in page
