"""Small file helpers shared by the pipelines and the callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidxai.journal import atomic_write_text

__all__ = ["write_json"]


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON and return the path (atomically: a reader, or an interrupted run, sees the
    old file or the new one, never a part of it)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True))
