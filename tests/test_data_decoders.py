"""Decoder backends: same interface, same shapes, near-identical pixels, clamping, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import corrupt, make_video

from vidxai.data import decoders
from vidxai.data.decoders import DecordDecoder, PyAVDecoder, VideoDecodeError, open_video, resolve_backend

BACKENDS = ["decord", "pyav"]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("dec") / "v.avi", num_frames=6, size=(32, 48))


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_and_resize_while_decoding(video: Path, backend: str) -> None:
    with open_video(video, backend=backend, size=(16, 24)) as dec:
        assert isinstance(dec, DecordDecoder if backend == "decord" else PyAVDecoder)
        assert dec.num_frames == 6
        assert (dec.height, dec.width) == (32, 48)
        assert dec.fps == pytest.approx(8.0)
        frames = dec.get_frames([0, 2, 5])
    assert frames.shape == (3, 16, 24, 3) and frames.dtype == np.uint8


def test_backends_agree(video: Path) -> None:
    idx = [5, 0, 3, 3]
    with open_video(video, backend="decord", size=(16, 24)) as a, open_video(video, backend="pyav",
                                                                             size=(16, 24)) as b:
        fa, fb = a.get_frames(idx), b.get_frames(idx)
    assert fa.shape == fb.shape == (4, 16, 24, 3)
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() < 4.0
    # frame order is respected: frame t has mean ~ 20 t + 24
    assert fa[0].mean() > fa[1].mean() + 60 and fb[0].mean() > fb[1].mean() + 60
    np.testing.assert_array_equal(fa[2], fa[3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_indices_past_the_end_are_clamped(video: Path, backend: str) -> None:
    with open_video(video, backend=backend) as dec:
        frames = dec.get_frames([4, 5, 6, 40])
        last = dec.get_frames([5])[0]
    assert frames.shape[0] == 4
    for f in frames[1:]:
        np.testing.assert_array_equal(f, last)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_and_missing_files_raise_naming_the_file(tmp_path: Path, backend: str) -> None:
    bad = tmp_path / "bad.avi"
    corrupt(bad)
    with pytest.raises(VideoDecodeError, match="bad.avi"):
        open_video(bad, backend=backend)
    with pytest.raises(VideoDecodeError, match="missing.avi: file not found"):
        open_video(tmp_path / "missing.avi", backend=backend)


def test_resolve_backend() -> None:
    assert resolve_backend("auto") == ("decord" if decoders.decord_available() else "pyav")
    assert resolve_backend("pyav") == "pyav"
    with pytest.raises(ValueError, match="data.backend='ffmpeg' is unknown"):
        resolve_backend("ffmpeg")
    with pytest.raises(ValueError, match="decode_device='tpu'"):
        resolve_backend("auto", "tpu")


def test_cuda_without_cuda_decord_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoders, "decord_has_cuda", lambda: False)
    monkeypatch.setattr(decoders, "nvdec_available", lambda: False)
    with pytest.raises(ValueError, match=r"decode_device=cuda.*with data.backend=decord needs decord built with CUDA"
                                         r".*-DUSE_CUDA=ON"):
        resolve_backend("decord", "cuda")
    with pytest.raises(ValueError, match=r"decode_device=cuda decodes with NVDEC.*PyNvVideoCodec.*not installed"):
        resolve_backend("auto", "cuda")
    with pytest.raises(ValueError, match="decode_device=cuda"):
        resolve_backend("pyav", "cuda")
    monkeypatch.setattr(decoders, "decord_has_cuda", lambda: True)
    assert resolve_backend("auto", "cuda") == "decord"


def test_installed_decord_is_cpu_only() -> None:
    """The PyPI wheel has no CUDA; this documents the check the start-up error relies on."""
    if not decoders.decord_available():
        pytest.skip("decord not installed")
    assert decoders.decord_has_cuda() in (True, False)
    if not decoders.decord_has_cuda():
        with pytest.raises(ValueError, match="decode_device=cuda"):
            resolve_backend("decord", "cuda")


def test_auto_falls_back_to_pyav_without_decord(monkeypatch: pytest.MonkeyPatch, video: Path) -> None:
    monkeypatch.setattr(decoders, "decord_available", lambda: False)
    assert resolve_backend("auto") == "pyav"
    with open_video(video, backend="auto") as dec:
        assert isinstance(dec, PyAVDecoder)
    with pytest.raises(ValueError, match="decord is not installed"):
        resolve_backend("decord")


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_file_never_returns_fewer_frames(tmp_path: Path, backend: str) -> None:
    """Frames past the decodable end are clamped to the last decodable frame."""
    full = make_video(tmp_path / "full.avi", num_frames=24, size=(32, 32))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.9)])
    with open_video(cut, backend=backend) as dec:
        frames = dec.get_frames(list(range(24)))
        n = dec.num_frames
    assert frames.shape == (24, 32, 32, 3)
    assert 0 < n < 24
    np.testing.assert_array_equal(frames[-1], frames[n - 1])
