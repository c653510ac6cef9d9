"""Our evaluation scores against Quantus 0.6 (a test oracle) on the same maps, masks and images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from vidxai.evaluation.metrics import mass_accuracy, pointing_accuracy, rank_accuracy
from vidxai.evaluation.randomisation import discrete_entropy, emprt, smooth_map, smprt
from vidxai.evaluation.road import RoadImputer, noisy_linear_imputation, road_frames

quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore", module="quantus")


def _masks_and_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A clip-like stack of maps (T, H, W) with no ties and box masks, one frame without a box."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(5, 12, 10))
    mask = np.zeros(maps.shape, dtype=bool)
    mask[0, 2:6, 3:8] = True
    mask[1, 0:12, 0:2] = True
    mask[2, 5:9, 4:6] = True
    mask[4, 1:3, 1:9] = True  # frame 3: no box
    return maps, mask


def _quantus(metric, a: np.ndarray, s: np.ndarray) -> list:
    n = len(a)
    return metric(model=None, x_batch=np.zeros((n, 1, *a.shape[1:])), y_batch=np.zeros(n, dtype=int),
                  a_batch=a[:, None], s_batch=s[:, None].astype(float), channel_first=True)


def test_mass_and_rank_accuracy_equal_quantus_on_the_clip_as_one_image() -> None:
    maps, mask = _masks_and_maps()
    # our mass counts positive relevance only: Quantus on the same map clipped at 0
    pos = np.clip(maps, 0, None)
    as_image = lambda x: x.reshape(1, -1, x.shape[-1])  # noqa: E731 (the clip's frames stacked)
    q_mass = _quantus(quantus.RelevanceMassAccuracy(normalise=False, disable_warnings=True), as_image(pos),
                      as_image(mask))[0]
    assert mass_accuracy(maps, mask) == pytest.approx(q_mass, abs=1e-12)
    q_rank = _quantus(quantus.RelevanceRankAccuracy(normalise=False, disable_warnings=True), as_image(maps),
                      as_image(mask))[0]
    assert rank_accuracy(maps, mask) == pytest.approx(q_rank, abs=1e-12)


def test_pointing_game_equals_quantus_with_empty_mask_frames_kept_out() -> None:
    maps, mask = _masks_and_maps(1)
    maps[0, 3, 4] = 10.0  # a hit in frame 0
    maps[2, 0, 0] = 10.0  # a miss in frame 2
    hits = _quantus(quantus.PointingGame(normalise=False, disable_warnings=True), maps, mask)
    assert bool(hits[3]) is True  # Quantus counts the frame without a box as a hit
    boxed = [bool(h) for h, m in zip(hits, mask) if m.any()]
    assert pointing_accuracy(maps, mask) == pytest.approx(np.mean(boxed))
    assert boxed[0] and not boxed[2]


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_road_noisy_linear_imputation_equals_quantus(noise: float) -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation as q_nli

    rng = np.random.default_rng(3)
    image = rng.random((3, 9, 11))
    mask = rng.random((9, 11)) < 0.3
    mask[0, :4] = True  # a border run of removed pixels
    np.random.seed(7)
    expected = q_nli(image, indices=np.flatnonzero(mask), noise=noise)
    ours = noisy_linear_imputation(image, mask, noise, np.random.RandomState(7))
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert np.array_equal(ours[:, ~mask], image[:, ~mask])  # kept pixels untouched


def test_road_whole_frames_interpolate_between_the_nearest_kept_frames() -> None:
    clip = torch.arange(5, dtype=torch.float64).reshape(5, 1, 1, 1).expand(5, 2, 3, 3).clone()
    imputer = RoadImputer(clip, noise=0.0)
    mask = torch.zeros(5, 3, 3, dtype=torch.bool)
    mask[[1, 2, 4]] = True  # frames 1, 2 between kept 0 and 3; frame 4 after the last kept one
    out = imputer.fill(mask)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0], dtype=torch.float64))
    # occlusion's one-frame replacement: the mean of the two neighbours, a copy at the ends
    torch.testing.assert_close(road_frames(clip, noise=0.0)[:, 0, 0, 0],
                               torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0], dtype=torch.float64))
    everything = imputer.fill(torch.ones(5, 3, 3, dtype=torch.bool))
    assert everything.abs().sum() == 0


# ------------------------------------------------------------------------------ eMPRT / sMPRT against Quantus
class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _gradient_x_input(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_) -> np.ndarray:
    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(x)
    out[torch.arange(len(x)), torch.as_tensor(targets)].sum().backward()
    return (x.grad * x).sum(1, keepdim=True).detach().numpy()


def test_emprt_equals_quantus_on_the_same_maps() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 2])
    seen = []

    def explain(model, inputs, targets, **kw):  # noqa: ANN001, ANN202
        a = _gradient_x_input(model, inputs, targets)
        seen.append(a.copy())
        return a

    metric = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, disable_warnings=True)
    scores = metric(model=_Tiny().eval(), x_batch=x, y_batch=y, a_batch=None, explain_func=explain,
                    channel_first=True, device="cpu")
    original, randomised = seen[-2], seen[-1]  # the original model's maps, then the fully randomised model's
    for k in range(2):
        assert emprt(original[k], randomised[k]) == pytest.approx(scores[k], rel=1e-9)
    from quantus.functions.complexity_func import discrete_entropy as q_entropy

    assert discrete_entropy(original[0]) == pytest.approx(q_entropy(a=original[0], x=None), rel=1e-12)


def test_smprt_equals_quantus_on_the_same_smoothed_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    y = np.array([1, 0])
    calls = []
    model_ids: list[int] = []

    def explain(model, inputs, targets, **kw):  # noqa: ANN001, ANN202
        a = _gradient_x_input(model, inputs, targets)
        calls.append(a.copy())
        model_ids.append(id(model))
        return a

    monkeypatch.setattr(quantus, "explain", explain)
    n = 3
    metric = quantus.SmoothMPRT(nr_samples=n, return_last_correlation=True, skip_layers=True,
                                disable_warnings=True)
    scores = metric(model=_Tiny().eval(), x_batch=x, y_batch=y, a_batch=None, explain_func=explain,
                    channel_first=True, device="cpu")
    reference = sum(calls[:n]) / n  # the a_batch Quantus compares with: the first smoothed maps
    last = sum(calls[-n:]) / n  # smoothed maps of the fully randomised model
    for k in range(2):
        assert smprt(reference[k], last[k]) == pytest.approx(scores[k], abs=1e-9)


def test_smooth_map_draws_noise_as_quantus_does() -> None:
    """n - 1 noisy copies (std = magnitude x the input's range) and the clean input, averaged."""
    clip = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    w = torch.randn(1, 3, 4, 4, dtype=torch.float64)

    def method(c: torch.Tensor, target: int, key: int) -> torch.Tensor:
        return (c * w).sum(1)

    ours = smooth_map(method, clip, 0, 0, 4, 0.1, np.random.RandomState(5))
    rs = np.random.RandomState(5)
    std = 0.1 * float(clip.max() - clip.min())
    noisy = [clip + torch.from_numpy(rs.randn(*clip.shape)) * std for _ in range(3)]
    expected = sum(method(c, 0, 0) for c in [*noisy, clip]).numpy() / 4
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
