"""One-time scan of a dataset: real frame counts, fps, size; bad files reported.

The manifest is cached as ``<cache_dir>/manifest-<hash>.json``, keyed by a hash of the
file list with sizes and modification times (and the backend), so it is recomputed when
files change. Unreadable, zero-frame or corrupt files go to ``bad_videos-<hash>.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from vidxai.data.decoders import VideoDecodeError, open_video, resolve_backend
from vidxai.data.layouts import VideoRecord

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


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
    """Open one video, check its first frame decodes and read frame count, fps and size."""
    with open_video(record.path, backend=backend) as dec:
        n = dec.num_frames  # decord: len(); PyAV: frames actually decoded
        if n <= 0:
            raise VideoDecodeError(f"{record.path}: zero frames")
        first = dec.get_frames([0])
        if first.ndim != 4 or first.shape[0] != 1 or first.shape[-1] != 3:
            raise VideoDecodeError(f"{record.path}: first frame has unexpected shape {first.shape}")
        return VideoEntry(record, int(n), float(dec.fps), int(first.shape[1]), int(first.shape[2]))


def scan(records: Sequence[VideoRecord], cache_dir: str | Path | None = None,
         backend: str = "auto") -> tuple[list[VideoEntry], list[tuple[str, str]]]:
    """Scan ``records`` once (cached); returns ``(entries, bad)`` with ``bad = [(path, reason)]``.

    Entries keep the order of ``records``. The report file is written on every fresh scan.
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
    for record in records:
        try:
            entries.append(probe(record, backend))
        except (VideoDecodeError, OSError) as exc:
            bad.append((record.path, str(exc)))
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
