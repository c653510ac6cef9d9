"""What the model saw in training, in a few numbers per clip, and whether a new clip lies outside it.

``train.py`` records, for every training clip of the first epoch as the network receives it (normalised,
augmented), eight statistics (:data:`FEATURES`): the mean and the standard deviation of each colour channel,
the spatial detail (mean absolute difference of neighbouring pixels) and the temporal change (mean absolute
difference of consecutive frames). The checkpoint stores their count, mean, standard deviation, minimum and
maximum over the training clips (``input_stats``). ``explain.py video=...`` computes the same eight numbers
for its clip (after the same preprocessing) and calls the clip *unlike the training data* when one of them
lies outside the training range widened by a quarter of that range on each side **and** more than four
training standard deviations from the training mean: both, so that a narrow range of many similar clips
does not flag a clip that is merely a little brighter, and a wide spread does not hide a clip far outside it.

Why these: they cost nothing to record, need no extra pass over the data, and catch what matters most for a
model trained on one kind of video: other colours and brightness (channel means and spreads), other texture
(a natural scene has far more fine detail than flat synthetic shapes; noise has more still) and other motion.
They do not see semantic novelty (a clip of the same texture with unseen content); a check on the model's
own features would, at the cost of a pass over the training set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["FEATURES", "InputStats", "clip_features", "compare_with_training"]

#: the per-clip statistics (in the model's input space: after normalisation)
FEATURES = ("mean_c0", "mean_c1", "mean_c2", "std_c0", "std_c1", "std_c2", "spatial_detail", "temporal_change")
_LABELS = {"mean_c0": "mean of colour channel 0", "mean_c1": "mean of colour channel 1",
           "mean_c2": "mean of colour channel 2", "std_c0": "spread of colour channel 0",
           "std_c1": "spread of colour channel 1", "std_c2": "spread of colour channel 2",
           "spatial_detail": "spatial detail (neighbouring pixels' difference)",
           "temporal_change": "temporal change (consecutive frames' difference)"}
#: a clip is unlike the training data when a statistic is beyond both limits
RANGE_MARGIN = 0.25
Z_LIMIT = 4.0


@torch.no_grad()
def clip_features(video: Tensor) -> Tensor:
    """``(B, 8)`` float64 statistics of clips ``(B, T, C, H, W)`` (or one clip ``(T, C, H, W)``), C = 3."""
    x = video.detach().float()
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[2] != 3:
        raise ValueError(f"clips must be (B, T, 3, H, W), got {tuple(video.shape)}")
    per_channel = x.transpose(1, 2).flatten(2)  # (B, 3, T*H*W)
    mean, std = per_channel.mean(-1), per_channel.std(-1)
    dx = (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3, 4))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3, 4))
    dt = (x[:, 1:] - x[:, :-1]).abs().mean((1, 2, 3, 4)) if x.shape[1] > 1 else torch.zeros_like(dx)
    return torch.cat([mean, std, ((dx + dy) / 2)[:, None], dt[:, None]], 1).double().cpu()


class InputStats:
    """Running count, mean, variance (Welford, batched), minimum and maximum of the :data:`FEATURES`."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = torch.zeros(len(FEATURES), dtype=torch.float64)
        self.m2 = torch.zeros(len(FEATURES), dtype=torch.float64)
        self.min = torch.full((len(FEATURES),), float("inf"), dtype=torch.float64)
        self.max = torch.full((len(FEATURES),), float("-inf"), dtype=torch.float64)

    def update(self, feats: Tensor) -> None:
        f = feats.double().cpu()
        if f.numel() == 0:
            return
        k = f.shape[0]
        bmean = f.mean(0)
        bm2 = ((f - bmean) ** 2).sum(0)
        total = self.n + k
        delta = bmean - self.mean
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + bm2 + delta ** 2 * self.n * k / total
        self.n = total
        self.min = torch.minimum(self.min, f.min(0).values)
        self.max = torch.maximum(self.max, f.max(0).values)

    def to_dict(self) -> dict[str, Any]:
        std = (self.m2 / max(self.n - 1, 1)).sqrt()
        return {"features": list(FEATURES), "clips": self.n, "mean": self.mean.tolist(), "std": std.tolist(),
                "min": self.min.tolist(), "max": self.max.tolist(), "space": "model input (after normalisation)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputStats:
        s = cls()
        s.n = int(d["clips"])
        s.mean = torch.tensor(d["mean"], dtype=torch.float64)
        s.m2 = torch.tensor(d["std"], dtype=torch.float64) ** 2 * max(s.n - 1, 1)
        s.min, s.max = torch.tensor(d["min"], dtype=torch.float64), torch.tensor(d["max"], dtype=torch.float64)
        return s


def compare_with_training(stats: dict[str, Any] | None, video: Tensor) -> dict[str, Any]:
    """``{"status": "like" | "unlike" | "unknown", "message", "outside": [...]}`` for one clip (model input)."""
    if not stats or stats.get("features") != list(FEATURES) or not stats.get("clips"):
        return {"status": "unknown", "outside": [],
                "message": "this checkpoint records no statistics of its training data (trained before vidxai "
                           "recorded them, or from cached features): whether the clip is like the training data "
                           "cannot be checked"}
    v = clip_features(video)[0].tolist()
    outside = []
    for i, name in enumerate(FEATURES):
        lo, hi, mean, std = stats["min"][i], stats["max"][i], stats["mean"][i], stats["std"][i]
        margin = RANGE_MARGIN * (hi - lo)
        z = abs(v[i] - mean) / std if std > 0 else float("inf") if v[i] != mean else 0.0
        if (v[i] < lo - margin or v[i] > hi + margin) and z > Z_LIMIT:
            outside.append({"statistic": name, "label": _LABELS[name], "value": v[i], "training_min": lo,
                             "training_max": hi, "z": z})
    n = int(stats["clips"])
    if not outside:
        return {"status": "like", "outside": [], "values": v,
                "message": f"the clip's input statistics lie within those of the {n} training clips"}
    listed = "; ".join(f"{o['label']} {o['value']:.3g} (training {o['training_min']:.3g} to {o['training_max']:.3g})"
                       for o in outside)
    return {"status": "unlike", "outside": outside, "values": v,
            "message": f"the clip is unlike the training data ({n} clips): {listed}. The model was not trained on "
                       "clips like it, so its prediction and these heatmaps may mean little"}
