"""Maps of several clips in one call (``Method.many``) equal the maps of each clip alone (CPU, tiny clips)."""

from __future__ import annotations

import torch

from vidxai.evaluation import EvalSettings, build_method, default_methods
from vidxai.evaluation.registry import Batched
from vidxai.models import build_network


def _check_many(net: torch.nn.Module, names: list[str], clips: list[torch.Tensor]) -> None:
    ctx = EvalSettings(ig_steps=4, batch_size=5).context()  # batch_size < clips x steps: IG splits its batches
    with torch.no_grad():
        targets = [int(t) for t in net(torch.stack(clips)).argmax(1)]
    targets[0] = (targets[0] + 1) % 3  # not only the predicted class
    keys = list(range(7, 7 + len(clips)))
    for name in names:
        method = build_method(name, net, ctx)
        assert isinstance(method.fn, Batched), f"{name} explains clip by clip"
        together = method.many(clips, targets, keys)
        for clip, target, key, got in zip(clips, targets, keys, together, strict=True):
            alone = method(clip, target, key)
            assert alone.abs().max() > 0, f"{name}: an all-zero map tests nothing"
            scale = float(alone.abs().max())
            assert torch.allclose(got, alone, rtol=1e-4, atol=1e-5 * scale), (
                f"{name}: batched map differs by {float((got - alone).abs().max()) / scale:.2e} of its scale")


def test_every_default_method_of_a_recurrent_network_gives_each_clip_its_own_map() -> None:
    torch.manual_seed(0)
    net = build_network("convlstm", 3, hidden_channels=[4], stem_channels=4, dropout=0.0).eval()
    clips = [torch.randn(3, 3, 16, 16) for _ in range(3)]
    names = default_methods(net)
    assert {"integrated_gradients", "occlusion", "grad_cam", "epsilon/half", "epsilon_gamma_box"} <= set(names)
    _check_many(net, names, clips)


def test_a_3d_cnn_gives_each_clip_its_own_map() -> None:
    torch.manual_seed(1)
    net = build_network("r2plus1d", 3, width=0.125).eval()
    _check_many(net, ["epsilon", "alpha_beta", "saliency", "grad_cam", "occlusion"],
                [torch.randn(4, 3, 16, 16) for _ in range(2)])


def test_a_plain_method_is_called_clip_by_clip() -> None:
    from vidxai.evaluation.methods import Method

    calls = []

    def fn(clip: torch.Tensor, target: int, key: int) -> torch.Tensor:
        calls.append(key)
        return clip.sum(1) * key

    method = Method("plain", "test", {}, fn)
    clips = [torch.ones(2, 3, 4, 4), 2 * torch.ones(2, 3, 4, 4)]
    maps = method.many(clips, [0, 0], [1, 5])
    assert calls == [1, 5]
    assert torch.equal(maps[1], torch.full((2, 4, 4), 30.0, dtype=torch.float64))


def test_per_frame_occlusion_equals_captums_occlusion() -> None:
    from captum.attr import Occlusion

    torch.manual_seed(2)
    net = build_network("convlstm", 3, hidden_channels=[4], stem_channels=4, dropout=0.0).eval()
    s = EvalSettings(baseline="blur", batch_size=3)  # batch_size < frames: the feature passes are split
    method = build_method("occlusion", net, s.context())
    assert method.settings["computation"].startswith("per-frame")
    clips = [torch.randn(5, 3, 16, 16) for _ in range(2)]
    for clip, target in zip(clips, [0, 2], strict=True):
        expected = Occlusion(net).attribute(clip[None], sliding_window_shapes=(1, 3, 16, 16), strides=(1, 3, 16, 16),
                                            baselines=s.replace(clip)[None], target=target)[0].sum(1).double()
        assert expected.abs().max() > 0
        torch.testing.assert_close(method(clip, target, 0), expected, rtol=1e-4, atol=1e-6)
