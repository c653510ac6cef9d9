"""Figures: classification metrics, LRP heatmaps, relevance curves, media, temporal profiles, and one
explanation drawn as its files (``render_explanation``)."""

from vidxai.viz.curves import find_peaks, frame_scores, relevance_curve_figure
from vidxai.viz.explanation import ExplanationFiles, render_explanation
from vidxai.viz.heatmaps import (
    heatmap_grid,
    overlay,
    peaks_figure,
    relevance_to_rgba,
    rule_comparison_figure,
    symmetric_limits,
)
from vidxai.viz.media import figure_to_array, overlay_video, save_figure, write_gif, write_mp4
from vidxai.viz.profile import (
    first_half_weights,
    positive_mass,
    positive_share,
    profile_figure,
    temporal_profile,
    temporal_shares,
)

__all__ = [
    "ExplanationFiles",
    "figure_to_array",
    "find_peaks",
    "first_half_weights",
    "frame_scores",
    "heatmap_grid",
    "overlay",
    "overlay_video",
    "peaks_figure",
    "positive_mass",
    "positive_share",
    "profile_figure",
    "relevance_curve_figure",
    "relevance_to_rgba",
    "render_explanation",
    "rule_comparison_figure",
    "save_figure",
    "symmetric_limits",
    "temporal_profile",
    "temporal_shares",
    "write_gif",
    "write_mp4",
]
