"""Figures: classification metrics, LRP heatmaps, relevance curves, media and temporal profiles."""
