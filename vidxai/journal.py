"""What a long run has finished, on disk as soon as it is finished: an append-only journal and atomic writes.

A split-wide explain mode (``mode=evaluate``, ``mode=profile``) appends one JSON line per finished unit of work
(a group of videos, a randomisation step of one method) to ``<run>/journal/rank<r>.jsonl`` and flushes it to
the disk (``fsync``) before going on; arrays a later phase needs (maps) go to ``.npz`` files written to a
temporary name and renamed, so a file is either complete or absent. Whatever stops the run (SIGTERM, Ctrl-C,
SIGKILL, a power cut), ``resume=<run>`` reads the journal back and does only what is missing. A last line cut
short by the interruption is dropped (and cut off the file), so the next record starts on a line of its own.

The journal's first record is its header: the settings of the run (:func:`run_settings`). A resume with other
settings is refused, naming the first key that differs (:func:`settings_difference`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Journal", "atomic_write_bytes", "atomic_write_text", "journal_path", "run_settings",
           "settings_difference"]

#: keys of the config that do not change what a run computes (where it writes, how it logs, resume itself)
NOT_SETTINGS = ("resume", "paths", "hydra", "logger", "task_name", "tags")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path`` (flushed to the disk), then rename it to ``path``: a
    reader sees the old file or the new one, never a part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would make it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode())


def journal_path(run_dir: str | Path, rank: int = 0) -> Path:
    """The journal of process ``rank`` in the run folder ``run_dir``."""
    return Path(run_dir) / "journal" / f"rank{int(rank)}.jsonl"


class Journal:
    """The append-only journal of one process (``records``: what an earlier, interrupted run of it finished).

    Args:
        path: the ``.jsonl`` file (its folder holds the arrays, :meth:`save_arrays`).
        header: the first record of a new journal (the run's settings); an existing journal keeps its own.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.folder = self.path.parent
        self.records: list[dict[str, Any]] = read_journal(self.path, repair=True)
        if not self.records and header is not None:
            self.append({"kind": "header", **header})

    @property
    def header(self) -> dict[str, Any] | None:
        return self.records[0] if self.records and self.records[0].get("kind") == "header" else None

    def of_kind(self, kind: str) -> Iterator[dict[str, Any]]:
        """The records of one kind, in the order they were written."""
        return (r for r in self.records if r.get("kind") == kind)

    def append(self, record: Mapping[str, Any]) -> None:
        """Add ``record`` as one line and flush it to the disk before returning."""
        line = json.dumps(record, allow_nan=True, separators=(",", ":"), default=_plain) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(json.loads(line))

    def save_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """``<journal folder>/<name>.npz`` with ``arrays``, written atomically (before the record naming it)."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return atomic_write_bytes(self.folder / f"{name}.npz", buf.getvalue())

    def load_arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays :meth:`save_arrays` wrote under ``name``."""
        with np.load(self.folder / f"{name}.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the journal")


def read_journal(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of the journal at ``path`` (none when it does not exist). A last line that an interruption
    cut short is dropped; with ``repair`` it is also cut off the file. A bad line before the last one means
    the file was changed by hand: a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    records, good = [], 0
    for n, line in enumerate(lines):
        if not line.strip():
            good += len(line) + 1
            continue
        last = n == len(lines) - 1 or all(not rest.strip() for rest in lines[n + 1:])
        try:
            if last and not data.endswith(b"\n"):
                raise ValueError("no line end")
            records.append(json.loads(line))
        except ValueError:
            if not last:
                raise ValueError(f"{path}: line {n + 1} is not a journal record; the journal was edited or "
                                 "damaged: start a new run without resume=") from None
            log.warning("%s: dropped its last record, cut short by the interruption", path)
            if repair:
                with path.open("r+b") as fh:
                    fh.truncate(good)
            break
        good += len(line) + 1
    return records


# ---------------------------------------------------------------------------- settings of a run
def run_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run as ``{dotted key: value}`` (``lrp.rule``, ``mprt.steps``...) without the keys of
    :data:`NOT_SETTINGS` and the collectives' timeouts: what a resumed run must share with the one it resumes."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                key = f"{prefix}{k}"
                if key in NOT_SETTINGS or "timeout" in str(k):
                    continue
                walk(v, f"{key}.")
        else:
            out[prefix[:-1]] = node

    walk(cfg, "")
    return out


def settings_difference(before: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """The first key whose value differs, as ``key=<now> (the interrupted run: key=<before>)``; ``None`` when
    the settings are the same."""
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key, "<unset>"), now.get(key, "<unset>")
        if a != b:
            return f"{key}={_show(b)} here, {key}={_show(a)} in the interrupted run"
    return None


def _show(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
