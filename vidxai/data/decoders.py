"""Video decoding backends behind one interface.

Three backends implement :class:`VideoDecoder`: decord (fast random access, the default
where installed) and PyAV (always available, decodes sequentially) on the CPU, and NVDEC
(NVIDIA's PyNvVideoCodec, optional extra ``gpu``) on the GPU. All resize while decoding and
return ``uint8`` arrays shaped ``(N, H, W, 3)``. A decoder never returns fewer frames than
asked: indices past the last decodable frame are clamped to it.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from vidxai.errors import ConfigError, UserError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav", "nvdec")
DEVICES = ("cpu", "cuda")

_CUDA_DECORD_MESSAGE = (
    "data.decode_device=cuda with data.backend=decord needs decord built with CUDA; the PyPI wheel is CPU only: "
    "use data.backend=nvdec (pip install -e '.[gpu]'), build decord with -DUSE_CUDA=ON, or set data.decode_device=cpu"
)
_NVDEC_MISSING_MESSAGE = (
    "data.decode_device=cuda decodes with NVDEC (data.backend=nvdec) through NVIDIA's PyNvVideoCodec, which is not "
    "installed: pip install -e '.[gpu]' on a machine with an NVIDIA GPU, or set data.decode_device=cpu"
)
_NVDEC_NO_GPU_MESSAGE = (
    "data.backend=nvdec decodes on an NVIDIA GPU but torch sees none (torch.cuda.is_available() is False): "
    "set data.decode_device=cpu"
)


class VideoDecodeError(UserError, RuntimeError):
    """A video file could not be opened or decoded; the message names the file and the failure."""


def decord_available() -> bool:
    """Whether the ``decord`` package is importable."""
    return importlib.util.find_spec("decord") is not None


def decord_has_cuda() -> bool:
    """Whether the installed decord was built with CUDA (it registers a GPU device API)."""
    if not decord_available():
        return False
    from decord._ffi import function as ffi_function

    return "device_api.gpu" in ffi_function.list_global_func_names()


def nvdec_available() -> bool:
    """Whether NVIDIA's ``PyNvVideoCodec`` (PyPI ``pynvvideocodec``, extra ``gpu``) is importable."""
    return importlib.util.find_spec("PyNvVideoCodec") is not None


def nvdec_usable() -> bool:
    """Whether the NVDEC backend can run here: PyNvVideoCodec installed and a CUDA GPU visible to torch."""
    if not nvdec_available():
        return False
    import torch

    return torch.cuda.is_available()


def check_nvdec() -> None:
    """One clear ``ConfigError`` (a ``ValueError``) unless PyNvVideoCodec is installed and torch sees a GPU."""
    if not nvdec_available():
        raise ConfigError(_NVDEC_MISSING_MESSAGE)
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(_NVDEC_NO_GPU_MESSAGE)


def resolve_backend(backend: str = "auto", device: str | None = None) -> str:
    """Validate ``backend``/``device`` at start-up and return the concrete backend name.

    On the CPU ``"auto"`` picks decord when importable, else PyAV. ``device="cuda"`` decodes with
    NVDEC (``"auto"`` or ``"nvdec"``; PyNvVideoCodec and a GPU are checked here), or with a decord
    built with CUDA (``"decord"``, or ``"auto"`` when PyNvVideoCodec is missing). ``device=None``
    means the backend's own device (the GPU for ``"nvdec"``, else the CPU). Anything else raises
    one clear ``ValueError``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"data.backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}")
    if device is None:
        device = "cuda" if backend == "nvdec" else "cpu"
    if device not in DEVICES:
        raise ConfigError(f"data.decode_device={device!r} is unknown: use 'cpu' or 'cuda'")
    if backend == "decord" and not decord_available():
        raise ConfigError("data.backend=decord but decord is not installed: pip install decord2 (same API) or set "
                         "data.backend=pyav")
    if device == "cuda":
        if backend == "pyav":
            raise ConfigError("data.decode_device=cuda but the PyAV backend decodes on the CPU only: use "
                             "data.backend=nvdec (or auto), or set data.decode_device=cpu")
        if backend == "decord" or (backend == "auto" and not nvdec_available() and decord_has_cuda()):
            if not decord_has_cuda():
                raise ConfigError(_CUDA_DECORD_MESSAGE)
            return "decord"
        check_nvdec()
        return "nvdec"
    if backend == "nvdec":
        raise ConfigError("data.backend=nvdec decodes on the GPU: set data.decode_device=cuda as well, or use "
                         "data.backend=auto for CPU decoding")
    if backend == "auto":
        return "decord" if decord_available() else "pyav"
    return backend


def _check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f"decode size must be (height, width) with positive entries, got {size!r}")
    return int(size[0]), int(size[1])


class VideoDecoder(ABC):
    """One opened video file; resizes while decoding to ``size=(H, W)`` when given."""

    def __init__(self, path: str | Path, size: Sequence[int] | None = None, device: str = "cpu") -> None:
        self.path = str(path)
        self.size = _check_size(size)
        self.device = device

    @property
    @abstractmethod
    def num_frames(self) -> int:
        """Number of frames the backend reports (decodable frames for PyAV after decoding)."""

    @property
    def fps(self) -> float:
        """Average frame rate (backends set ``_fps`` when opening)."""
        return self._fps

    def _source_size(self) -> tuple[int, int]:
        """Source ``(H, W)``; backends set ``_h`` / ``_w`` when opening or override this."""
        return self._h, self._w

    @property
    def height(self) -> int:
        """Source frame height (before resizing)."""
        return self._source_size()[0]

    @property
    def width(self) -> int:
        """Source frame width (before resizing)."""
        return self._source_size()[1]

    @abstractmethod
    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` as ``uint8 (N, H, W, 3)``; indices past the end are clamped."""

    def close(self) -> None:  # noqa: B027 - optional hook: decoders without handles need nothing
        """Release the underlying file handle."""

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _clamp(self, indices: Sequence[int] | np.ndarray, n_available: int) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if n_available <= 0:
            raise VideoDecodeError(f"{self.path}: no decodable frames")
        return np.clip(idx, 0, n_available - 1)


class DecordDecoder(VideoDecoder):
    """decord backend: random access; ``device="cuda"`` uses ``decord.gpu(0)``."""

    def __init__(self, path: str | Path, size: Sequence[int] | None = None, device: str = "cpu") -> None:
        super().__init__(path, size, device)
        import decord

        decord.bridge.set_bridge("native")
        ctx = decord.gpu(0) if device == "cuda" else decord.cpu(0)
        kwargs: dict[str, Any] = {"ctx": ctx}
        if self.size is not None:
            kwargs["height"], kwargs["width"] = self.size
        try:
            self._reader = decord.VideoReader(self.path, **kwargs)
            self._length = len(self._reader)
            self._fps = float(self._reader.get_avg_fps())
        except Exception as exc:  # decord raises DECORDError / RuntimeError with C++ traces
            raise VideoDecodeError(f"{self.path}: decord cannot open it ({_short(exc)})") from exc
        self._source_hw: tuple[int, int] | None = None
        # frames that failed to decode at the end of the stream shrink the usable length
        self._usable = self._length
        self._row_padded = False

    @property
    def num_frames(self) -> int:
        return self._usable

    def _source_size(self) -> tuple[int, int]:
        if self._source_hw is None:
            if self.size is None:
                h, w = self._reader[0].shape[:2]  # (H, W, C): H and W are right even when C is not
                self._source_hw = (int(h), int(w))
            else:
                self._source_hw = _probe_size_pyav(self.path)
        return self._source_hw

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        if self._reader is None:
            raise VideoDecodeError(f"{self.path}: the decoder is closed")
        idx = self._clamp(indices, self._usable)
        while True:
            try:
                return np.ascontiguousarray(self._read(idx.tolist()), dtype=np.uint8)
            except Exception as exc:
                # Container frame counts can lie: treat the highest requested frame and everything after
                # it as undecodable and retry (at most one retry per distinct requested index).
                top = int(idx.max())
                if top > 0:
                    log.warning("%s: frame %d does not decode (%s); clamping to the frames before it",
                                self.path, top, _short(exc))
                    self._usable = top
                    idx = np.clip(idx, 0, top - 1)
                    continue
                raise VideoDecodeError(
                    f"{self.path}: decord failed to decode frames ({_short(exc)})") from exc

    def _read(self, idx: list[int]) -> np.ndarray:
        if not self._row_padded:
            try:
                return self._reader.get_batch(idx).asnumpy()
            except Exception as exc:
                if "must exactly match" not in str(exc):
                    raise
                self._row_padded = True  # decord bug for some widths: rows padded, channels mis-reported
        cache = {i: _unpad_rows(self._reader[i].asnumpy()) for i in sorted(set(idx))}
        return np.stack([cache[i] for i in idx])

    def close(self) -> None:
        self._reader = None  # type: ignore[assignment]


def _unpad_rows(frame: np.ndarray) -> np.ndarray:
    """Undo decord's row padding for widths whose RGB rows are not aligned (shape (H, W, C!=3))."""
    if frame.shape[-1] == 3:
        return frame
    h, w, c = frame.shape
    return frame.reshape(h, w * c)[:, : w * 3].reshape(h, w, 3)


class PyAVDecoder(VideoDecoder):
    """PyAV backend: decodes the (short) video sequentially once and keeps the requested frames."""

    def __init__(self, path: str | Path, size: Sequence[int] | None = None, device: str = "cpu") -> None:
        if device != "cpu":
            raise ConfigError(f"the PyAV backend decodes on the CPU only, got device={device!r}: "
                             "set data.decode_device=cpu or data.backend=decord")
        super().__init__(path, size, device)
        import av

        try:
            self._container = av.open(self.path)
            if not self._container.streams.video:
                raise VideoDecodeError(f"{self.path}: no video stream")
            stream = self._container.streams.video[0]
            self._stream_frames = int(stream.frames or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self._fps = float(rate) if rate else 0.0
            self._h = int(stream.codec_context.height)
            self._w = int(stream.codec_context.width)
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(f"{self.path}: PyAV cannot open it ({_short(exc)})") from exc
        self._decoded_count: int | None = None

    @property
    def num_frames(self) -> int:
        """Real decodable frame count (decodes the video once if not done yet)."""
        if self._decoded_count is None:
            self._decoded_count = self._count_frames()
        return self._decoded_count

    def _frames(self):  # noqa: ANN202 - generator of av.VideoFrame
        self._container.seek(0)
        return self._container.decode(video=0)

    def _count_frames(self) -> int:
        count = 0
        try:
            for _ in self._frames():
                count += 1
        except Exception as exc:
            if count == 0:
                raise VideoDecodeError(f"{self.path}: PyAV failed to decode ({_short(exc)})") from exc
        return count

    def _to_array(self, frame: Any) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(height=self.size[0], width=self.size[1], format="rgb24")

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one index")
        wanted = set(np.clip(idx, 0, None).tolist())
        last_wanted = max(wanted)
        kept: dict[int, np.ndarray] = {}
        last_frame: np.ndarray | None = None
        count = 0
        try:
            for i, frame in enumerate(self._frames()):
                count = i + 1
                if i in wanted:
                    kept[i] = self._to_array(frame)
                if i >= last_wanted:
                    break
                last_frame = frame
        except Exception as exc:
            if count == 0:
                raise VideoDecodeError(f"{self.path}: PyAV failed to decode ({_short(exc)})") from exc
        if count == 0:
            raise VideoDecodeError(f"{self.path}: no decodable frames")
        if count <= last_wanted:  # the stream ended early: clamp to the last decodable frame
            self._decoded_count = count
            if count - 1 not in kept and last_frame is not None:
                kept[count - 1] = self._to_array(last_frame)
        clamped = np.clip(idx, 0, count - 1)
        return np.stack([kept[int(i)] for i in clamped]).astype(np.uint8, copy=False)

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None


class NvdecDecoder(VideoDecoder):
    """NVDEC backend (NVIDIA PyNvVideoCodec ``SimpleDecoder``): indexed, batched decoding on the GPU.

    Frames are decoded to RGB in GPU memory and resized there (bilinear, antialiased) when ``size`` is
    given. :meth:`get_tensor` returns them as a CUDA ``uint8 (N, 3, H, W)`` tensor without leaving the
    GPU; :meth:`get_frames` copies them to the host as ``(N, H, W, 3)``, the :class:`VideoDecoder`
    contract. Colours should match the CPU decoders within a small tolerance, not bit for bit (colour
    conversion and resampling run on different hardware): mean absolute difference <= 3/255 and
    max <= 20/255 at the source size, checked by ``tests/test_data_nvdec.py`` on a machine with a GPU
    (it skips elsewhere; not yet run on one).
    """

    def __init__(self, path: str | Path, size: Sequence[int] | None = None, device: str = "cuda",
                 gpu_id: int = 0) -> None:
        if device != "cuda":
            raise ConfigError(f"the NVDEC backend decodes on the GPU only, got device={device!r}: "
                             "set data.decode_device=cuda or data.backend=auto")
        super().__init__(path, size, device)
        self._decoder: Any = None
        check_nvdec()
        import PyNvVideoCodec as nvc

        self.gpu_id = int(gpu_id)
        try:
            self._decoder = nvc.SimpleDecoder(self.path, gpu_id=self.gpu_id, use_device_memory=True,
                                              output_color_type=nvc.OutputColorType.RGB)
            meta = self._decoder.get_stream_metadata()
            self._length = int(len(self._decoder))
            self._fps = float(getattr(meta, "average_fps", 0.0) or 0.0)
            self._h, self._w = int(meta.height), int(meta.width)
        except Exception as exc:  # PyNvVideoCodec raises its own exception types with C++ messages
            raise VideoDecodeError(f"{self.path}: NVDEC cannot open it ({_short(exc)})") from exc
        self._usable = self._length

    @property
    def num_frames(self) -> int:
        return self._usable

    def get_tensor(self, indices: Sequence[int] | np.ndarray) -> Any:
        """Frames at ``indices`` as a ``uint8 (N, 3, H, W)`` tensor on the decoding GPU."""
        import torch
        import torch.nn.functional as F

        if self._decoder is None:
            raise VideoDecodeError(f"{self.path}: the decoder is closed")
        idx = self._clamp(indices, self._usable)
        unique = sorted(set(idx.tolist()))
        try:
            decoded = list(self._decoder.get_batch_frames_by_index(unique))
            frames = torch.stack([_rgb_chw(torch.from_dlpack(f), self.path) for f in decoded]) if decoded else None
        except VideoDecodeError:
            raise
        except Exception as exc:
            raise VideoDecodeError(f"{self.path}: NVDEC failed to decode frames ({_short(exc)})") from exc
        if frames is None:
            raise VideoDecodeError(f"{self.path}: no decodable frames")
        if len(decoded) < len(unique):  # the stream ended early: clamp to the last frame that came back
            log.warning("%s: NVDEC returned %d of %d frames; clamping to the frames before frame %d",
                        self.path, len(decoded), len(unique), unique[len(decoded)])
            self._usable = unique[len(decoded) - 1] + 1
        if self.size is not None and tuple(frames.shape[-2:]) != self.size:
            frames = F.interpolate(frames.float(), size=self.size, mode="bilinear", align_corners=False,
                                   antialias=True).round_().clamp_(0, 255).to(torch.uint8)
        position = {u: k for k, u in enumerate(unique[: len(decoded)])}
        last = len(decoded) - 1
        order = torch.tensor([position.get(i, last) for i in idx.tolist()], device=frames.device)
        return frames.index_select(0, order)

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.get_tensor(indices).permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def close(self) -> None:
        self._decoder = None


def _rgb_chw(frame: Any, path: str) -> Any:
    """One decoded RGB frame as ``(3, H, W)``, from interleaved ``(H, W, 3)`` or planar ``(3, H, W)``."""
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return frame.permute(2, 0, 1)
    if frame.ndim == 3 and frame.shape[0] == 3:
        return frame
    raise VideoDecodeError(f"{path}: NVDEC returned a frame of unexpected shape {tuple(frame.shape)}")


def _probe_size_pyav(path: str) -> tuple[int, int]:
    import av

    with av.open(path) as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.height), int(ctx.width)


def _short(exc: BaseException) -> str:
    """First line of an exception message (decord appends long C++ stack traces)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


#: Backend name -> decoder class (what :func:`resolve_backend` may return).
DECODERS: dict[str, type[VideoDecoder]] = {"decord": DecordDecoder, "pyav": PyAVDecoder, "nvdec": NvdecDecoder}


def open_video(path: str | Path, backend: str = "auto", size: Sequence[int] | None = None,
               device: str | None = None) -> VideoDecoder:
    """Open ``path`` with the chosen backend (see :func:`resolve_backend`; ``device=None``: the backend's own)."""
    name = resolve_backend(backend, device)
    if not Path(path).is_file():
        raise VideoDecodeError(f"{path}: file not found")
    return DECODERS[name](path, size=size, device=device or ("cuda" if name == "nvdec" else "cpu"))
