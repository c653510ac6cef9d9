"""One-time scan of a dataset: real frame counts, fps, size; bad files reported.

The manifest is cached as ``<cache_dir>/manifest-<hash>.json``, keyed by a hash of the
file list with sizes and modification times (and the backend), so it is recomputed when
files change. Unreadable, zero-frame or corrupt files go to ``bad_videos-<hash>.txt``.

Every probe is bounded: it runs in a watchdog child process (a small pool), so a decoder that
hangs (decord on some files whose header promises more frames than they hold) or crashes the
process (a segfault in a native decoder) costs one timeout and lists that one file as bad.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from vidxai.data.decoders import VideoDecodeError, open_video, resolve_backend
from vidxai.data.layouts import VideoRecord

log = logging.getLogger(__name__)

MANIFEST_VERSION = 2

#: Seconds one video's probe may take before it is listed as bad (a hung decoder).
PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class VideoEntry:
    """A scanned video: its record plus the real decodable frame count, fps and source size."""

    record: VideoRecord
    num_frames: int
    fps: float
    height: int
    width: int

    def to_json(self) -> dict:
        """Flat JSON-serialisable dict (path, class, group, frames, fps, size)."""
        return {**asdict(self.record), "num_frames": self.num_frames, "fps": self.fps,
                "height": self.height, "width": self.width}

    @classmethod
    def from_json(cls, d: dict) -> VideoEntry:
        """Inverse of :meth:`to_json`."""
        record = VideoRecord(d["path"], int(d["label"]), d["class_name"], d["group"])
        return cls(record, int(d["num_frames"]), float(d["fps"]), int(d["height"]), int(d["width"]))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vidxai`` (or ``~/.cache/vidxai``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidxai"


def manifest_key(records: Sequence[VideoRecord], backend: str) -> str:
    """Hash of the file list with labels, groups, sizes and mtimes; changes when any file changes."""
    h = hashlib.sha256(f"v{MANIFEST_VERSION}|{backend}".encode())
    for r in sorted(records, key=lambda r: r.path):
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"|{r.path}|{r.label}|{r.class_name}|{r.group}|{stamp}".encode())
    return h.hexdigest()[:16]


def manifest_paths(records: Sequence[VideoRecord], cache_dir: str | Path | None,
                   backend: str = "auto") -> tuple[Path, Path]:
    """Where :func:`scan` keeps the manifest and the bad-video report for these records."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = manifest_key(records, resolve_backend(backend))
    return folder / f"manifest-{key}.json", folder / f"bad_videos-{key}.txt"


def probe(record: VideoRecord, backend: str = "auto") -> VideoEntry:
    """Open one video, check that its first and last frames decode; read frame count, fps and size.

    The frame count is what really decodes: when the container promises more frames than its data
    holds, the count shrinks to the last decodable frame (decord) or is counted (PyAV).
    """
    path = Path(record.path)
    if path.is_dir():
        raise VideoDecodeError(f"{path}: a folder named like a video, not a video file")
    if not path.is_file():
        raise VideoDecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(f"{path}: not readable (permission denied): fix its permissions")
    with open_video(record.path, backend=backend) as dec:
        n = dec.num_frames  # decord: len(); PyAV: frames actually decoded
        if n <= 0:
            raise VideoDecodeError(f"{record.path}: zero frames")
        first = dec.get_frames([0])
        if first.ndim != 4 or first.shape[0] != 1 or first.shape[-1] != 3:
            raise VideoDecodeError(f"{record.path}: first frame has unexpected shape {first.shape}")
        dec.get_frames([n - 1])  # decord shrinks num_frames when the end of the stream does not decode
        usable = int(dec.num_frames)
        if usable < n:
            log.info("%s: the container promises %d frames, %d decode", record.path, n, usable)
        return VideoEntry(record, usable, float(dec.fps), int(first.shape[1]), int(first.shape[2]))


def _probe_worker(conn: Connection, probe_fn: Callable[[VideoRecord, str], VideoEntry], backend: str) -> None:
    """Child process: probe the records it is sent, one at a time, until it gets ``None``."""
    logging.getLogger("vidxai.data.decoders").setLevel(logging.ERROR)  # the parent reports what matters
    while True:
        try:
            record = conn.recv()
        except EOFError:
            return
        if record is None:
            return
        try:
            conn.send(("ok", probe_fn(record, backend).to_json()))
        except (VideoDecodeError, OSError) as exc:
            conn.send(("bad", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a decoder bug is one bad file, not a failed scan
            conn.send(("bad", f"{record.path}: the decoder failed ({type(exc).__name__}: {exc})"))


class _Slot:
    """One watchdog child and the record it is probing."""

    def __init__(self, ctx: mp.context.BaseContext, probe_fn: Callable, backend: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_probe_worker, args=(child, probe_fn, backend), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def send(self, index: int, record: VideoRecord) -> None:
        self.index, self.started = index, time.monotonic()
        self.conn.send(record)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def probe_all(records: Sequence[VideoRecord], backend: str = "auto", timeout: float = PROBE_TIMEOUT,
              workers: int | None = None, probe_fn: Callable[[VideoRecord, str], VideoEntry] = probe,
              ) -> list[VideoEntry | str]:
    """Probe ``records`` in watchdog child processes; per record a :class:`VideoEntry` or the reason it is bad.

    A probe that takes longer than ``timeout`` seconds, or whose process dies (a crash in a native
    decoder), makes that record bad ("timed out" / "crashed") and the child is replaced.
    """
    results: list[VideoEntry | str | None] = [None] * len(records)
    if not records:
        return []
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    n_workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(records)))
    todo = list(range(len(records)))[::-1]
    slots = [_Slot(ctx, probe_fn, backend) for _ in range(n_workers)]
    try:
        for slot in slots:
            if todo:
                i = todo.pop()
                slot.send(i, records[i])
        while any(slot.index is not None for slot in slots):
            busy = [slot for slot in slots if slot.index is not None]
            remaining = min(slot.started + timeout for slot in busy) - time.monotonic()
            ready = wait([slot.conn for slot in busy], timeout=max(0.0, remaining))
            now = time.monotonic()
            for k, slot in enumerate(slots):
                if slot.index is None:
                    continue
                i = slot.index
                path = records[i].path
                if slot.conn in ready:
                    try:
                        status, payload = slot.conn.recv()
                        results[i] = VideoEntry.from_json(payload) if status == "ok" else payload
                        slot.index = None
                    except (EOFError, OSError):  # the child died while probing: a crash in the decoder
                        slot.proc.join(timeout=5)
                        code = slot.proc.exitcode
                        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        results[i] = f"{path}: the decoder crashed the probing process ({how})"
                        slot.stop(kill=True)
                        slots[k] = slot = _Slot(ctx, probe_fn, backend)
                elif now - slot.started >= timeout:
                    results[i] = f"{path}: decoding did not finish within {timeout:g} s (a hung decoder)"
                    slot.stop(kill=True)
                    slots[k] = slot = _Slot(ctx, probe_fn, backend)
                if slot.index is None and todo:
                    j = todo.pop()
                    slot.send(j, records[j])
    finally:
        for slot in slots:
            slot.stop(kill=slot.index is not None)
    return [r if r is not None else f"{records[i].path}: not probed" for i, r in enumerate(results)]


def scan(records: Sequence[VideoRecord], cache_dir: str | Path | None = None,
         backend: str = "auto", timeout: float = PROBE_TIMEOUT) -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """Scan ``records`` once (cached); returns ``(entries, bad)`` with ``bad = [(path, reason)]``.

    Entries keep the order of ``records``. The report file is written on every fresh scan. Each probe
    is bounded by ``timeout`` seconds (see :func:`probe_all`).
    """
    manifest_path, report_path = manifest_paths(records, cache_dir, backend)
    if manifest_path.is_file():
        try:
            data = json.loads(manifest_path.read_text())
            entries = [VideoEntry.from_json(d) for d in data["entries"]]
            bad = [(b["path"], b["reason"]) for b in data["bad"]]
            if not report_path.is_file():
                write_report(report_path, bad)
            return entries, bad
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable manifest cache %s; rescanning", manifest_path)
    entries: list[VideoEntry] = []
    bad: list[tuple[str, str]] = []
    for record, result in zip(records, probe_all(records, backend, timeout)):
        if isinstance(result, VideoEntry):
            entries.append(result)
        else:
            bad.append((record.path, result))
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": MANIFEST_VERSION, "backend": resolve_backend(backend),
               "entries": [e.to_json() for e in entries],
               "bad": [{"path": p, "reason": r} for p, r in bad]}
    tmp = manifest_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(manifest_path)  # atomic: parallel runs never read a half-written manifest
    write_report(report_path, bad)
    return entries, bad


def write_report(path: Path, bad: Sequence[tuple[str, str]]) -> None:
    """One ``path<TAB>reason`` line per bad video."""
    text = "".join(f"{p}\t{r}\n" for p, r in bad)
    path.write_text(text or "# no unreadable, zero-frame or corrupt videos\n")
