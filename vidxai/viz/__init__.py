"""Figures: classification metrics, LRP heatmaps, relevance curves, media and temporal profiles."""

# LRP explanation pictures (heatmaps, curves, media, temporal profile)
from vidxai.viz.curves import find_peaks, frame_scores, relevance_curve_figure  # noqa: E402
from vidxai.viz.heatmaps import (  # noqa: E402
    heatmap_grid,
    overlay,
    peaks_figure,
    relevance_to_rgba,
    rule_comparison_figure,
    symmetric_limits,
)
from vidxai.viz.media import figure_to_array, overlay_video, save_figure, write_gif, write_mp4  # noqa: E402
from vidxai.viz.profile import positive_share, profile_figure, temporal_profile  # noqa: E402
