"""NVDEC backend (PyNvVideoCodec): start-up errors, the wrapper's logic through a CPU stand-in, GPU colours.

The stand-in implements the part of PyNvVideoCodec's ``SimpleDecoder`` API the backend uses (``len``,
``get_stream_metadata``, ``get_batch_frames_by_index`` returning DLPack-able RGB frames) on top of PyAV,
so indexing, clamping, resizing and the DataModule path run here without a GPU. The real-GPU test
skips unless PyNvVideoCodec and a CUDA device are present.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, corrupt, make_video

from vidxai.data import decoders
from vidxai.data.decoders import NvdecDecoder, PyAVDecoder, VideoDecodeError, open_video, resolve_backend
from vidxai.data.synthetic import make_synthetic_ucf11, write_video

#: colour tolerance of NVDEC against the CPU decoder at the source size (0..255 levels)
MEAN_TOL, MAX_TOL = 3.0, 20.0


class _FakeSimpleDecoder:
    """CPU stand-in for ``PyNvVideoCodec.SimpleDecoder`` (PyAV underneath; frames as CPU tensors)."""

    def __init__(self, path: str, gpu_id: int = 0, use_device_memory: bool = True, output_color_type=None) -> None:
        import av

        try:
            with av.open(path) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                rate = container.streams.video[0].average_rate
        except av.FFmpegError as exc:
            raise RuntimeError(f"demuxer error: {exc}") from exc
        self._frames = frames
        self._meta = types.SimpleNamespace(width=frames[0].shape[1], height=frames[0].shape[0],
                                           average_fps=float(rate), num_frames=len(frames))
        self._decodable = len(frames) - _FakeSimpleDecoder.drop_last

    drop_last = 0  # frames the container reports but that do not decode

    def __len__(self) -> int:
        return len(self._frames)

    def get_stream_metadata(self) -> types.SimpleNamespace:
        return self._meta

    def get_batch_frames_by_index(self, indices: list[int]) -> list[torch.Tensor]:
        assert indices == sorted(set(indices)), "the backend asks for sorted unique indices"
        return [torch.from_numpy(self._frames[i]) for i in indices if i < self._decodable]


@pytest.fixture
def fake_nvdec(monkeypatch: pytest.MonkeyPatch) -> type[_FakeSimpleDecoder]:
    module = types.ModuleType("PyNvVideoCodec")
    module.SimpleDecoder = _FakeSimpleDecoder
    module.OutputColorType = types.SimpleNamespace(RGB="rgb", RGBP="rgbp", NATIVE="native")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    monkeypatch.setattr(decoders, "nvdec_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_FakeSimpleDecoder, "drop_last", 0)
    return _FakeSimpleDecoder


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("nvdec") / "v.avi", num_frames=6, size=(32, 48))


def test_missing_package_or_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, video: Path) -> None:
    monkeypatch.setattr(decoders, "nvdec_available", lambda: False)
    monkeypatch.setattr(decoders, "decord_has_cuda", lambda: False)
    assert not decoders.nvdec_usable()  # explain.py then decodes a GPU-trained checkpoint's videos on the CPU
    for backend in ("nvdec", "auto"):
        with pytest.raises(ValueError, match=r"PyNvVideoCodec, which is not installed: pip install -e '\.\[gpu\]'"):
            resolve_backend(backend, "cuda")
    with pytest.raises(ValueError, match="PyNvVideoCodec"):
        open_video(video, backend="nvdec")  # the backend's own device is the GPU
    monkeypatch.setattr(decoders, "nvdec_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not decoders.nvdec_usable()
    with pytest.raises(ValueError, match=r"torch.cuda.is_available\(\) is False.*data.decode_device=cpu"):
        resolve_backend("nvdec", "cuda")
    with pytest.raises(ValueError, match=r"data.backend=nvdec decodes on the GPU: set data.decode_device=cuda"):
        resolve_backend("nvdec", "cpu")
    with pytest.raises(ValueError, match="NVDEC backend decodes on the GPU only"):
        NvdecDecoder(video, device="cpu")


def test_datamodule_refuses_nvdec_on_cpu_at_start_up(tmp_path: Path) -> None:
    from vidxai.data import VideoDataModule

    with pytest.raises(ValueError, match="data.backend=nvdec decodes on the GPU"):
        VideoDataModule(root=str(tmp_path), backend="nvdec", decode_device="cpu")


def test_cuda_prefers_nvdec_and_falls_back_to_cuda_decord(monkeypatch: pytest.MonkeyPatch, fake_nvdec) -> None:
    monkeypatch.setattr(decoders, "decord_has_cuda", lambda: True)
    assert resolve_backend("auto", "cuda") == "nvdec"
    assert resolve_backend("decord", "cuda") == "decord"
    monkeypatch.setattr(decoders, "nvdec_available", lambda: False)
    assert resolve_backend("auto", "cuda") == "decord"


def test_frames_match_cpu_decoder_in_order_with_clamping(fake_nvdec, video: Path) -> None:
    idx = [5, 0, 3, 3, 40]
    with open_video(video, backend="nvdec") as dec, PyAVDecoder(video) as ref:
        assert isinstance(dec, NvdecDecoder)
        assert (dec.num_frames, dec.height, dec.width) == (6, 32, 48)
        assert dec.fps == pytest.approx(8.0)
        got, want = dec.get_frames(idx), ref.get_frames(idx)
    assert got.shape == (5, 32, 48, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)  # same pixels from the stand-in: order, repeats, clamping
    np.testing.assert_array_equal(got[-1], got[0])  # index 40 clamped to the last frame (5)


def test_resize_on_device_is_close_to_the_cpu_resize(fake_nvdec, video: Path) -> None:
    with open_video(video, backend="nvdec", size=(16, 24)) as dec, PyAVDecoder(video, size=(16, 24)) as ref:
        tensor = dec.get_tensor([0, 2, 4])
        got, want = dec.get_frames([0, 2, 4]), ref.get_frames([0, 2, 4])
    assert tensor.shape == (3, 3, 16, 24) and tensor.dtype == torch.uint8
    assert got.shape == want.shape == (3, 16, 24, 3)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0


def test_short_stream_clamps_to_the_last_frame_that_decodes(fake_nvdec, video: Path) -> None:
    fake_nvdec.drop_last = 2  # the container says 6 frames, only 4 decode
    with open_video(video, backend="nvdec") as dec:
        frames = dec.get_frames([1, 3, 5])
        assert dec.num_frames == 4
        last = dec.get_frames([3])[0]
    np.testing.assert_array_equal(frames[2], last)


def test_broken_file_raises_naming_it(fake_nvdec, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    corrupt(bad)
    with pytest.raises(VideoDecodeError, match=r"bad.mp4: NVDEC cannot open it"):
        open_video(bad, backend="nvdec")
    with open_video(make_video(tmp_path / "ok.avi"), backend="nvdec") as dec:
        pass
    with pytest.raises(VideoDecodeError, match="closed"):
        dec.get_frames([0])


def test_datamodule_decodes_with_nvdec(fake_nvdec, tmp_path: Path) -> None:
    from vidxai.data import VideoDataModule

    root = make_synthetic_ucf11(tmp_path / "ucf11", **TINY)
    dm = VideoDataModule(root=str(root), num_frames=4, size=(24, 24), crop_size=16, batch_size=2,
                         backend="nvdec", decode_device="cuda", cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 4, 3, 24, 24) and batch["video"].dtype == torch.uint8
    assert dm.preprocess["backend"] == "nvdec"


def _smooth_video(path: Path, frames: int = 12, size: tuple[int, int] = (128, 160)) -> Path:
    """Low-saturation gradients that move: chroma subsampling and the colour matrix stay within tolerance."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    clip = np.stack([np.stack([80 + 60 * np.sin((xx + 4 * t) / 23), 100 + 50 * np.cos((yy + 3 * t) / 29),
                               120 + 40 * np.sin((xx + yy) / 31)], -1) for t in range(frames)])
    write_video(path, clip.clip(0, 255).astype(np.uint8), fps=8)
    return path


@pytest.mark.skipif(not (decoders.nvdec_available() and torch.cuda.is_available()),
                    reason="needs PyNvVideoCodec (pip install -e '.[gpu]') and an NVIDIA GPU")
def test_gpu_nvdec_matches_the_cpu_decoder_within_tolerance(tmp_path: Path) -> None:  # pragma: no cover - GPU
    path = _smooth_video(tmp_path / "smooth.avi")
    idx = [0, 5, 11, 2]
    with open_video(path, backend="nvdec") as dec, PyAVDecoder(path) as ref:
        tensor = dec.get_tensor(idx)
        assert tensor.is_cuda and tensor.dtype == torch.uint8 and tensor.shape == (4, 3, 128, 160)
        got, want = dec.get_frames(idx).astype(int), ref.get_frames(idx).astype(int)
    diff = np.abs(got - want)
    assert diff.mean() <= MEAN_TOL and diff.max() <= MAX_TOL, (diff.mean(), diff.max())
    with open_video(path, backend="nvdec", size=(64, 80)) as dec, PyAVDecoder(path, size=(64, 80)) as ref:
        small = np.abs(dec.get_frames(idx).astype(int) - ref.get_frames(idx).astype(int))
    assert small.mean() <= MEAN_TOL + 1.0, small.mean()
