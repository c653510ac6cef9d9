"""Small file helpers shared by the pipelines and the callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON and return the path."""
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2, allow_nan=True))
    return path
