"""Dataset layouts: find the videos under a root folder, with class labels and groups.

A *group* is the unit that must not be split across train/val/test (the same actors and
scene): UCF11 group folders, UCF101 ``gGG`` ids (shared across classes), or sub-folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vidxai.errors import ConfigError, MissingPathError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mpg", ".mpeg", ".mkv", ".webm", ".mov", ".m4v"})
LAYOUTS = ("ucf11", "ucf101", "folder")
_SKIP_DIRS = frozenset({"annotation", "annotations", "ucftraintestlist"})
_UCF101_NAME = re.compile(r"^v_(?P<cls>.+)_(?P<group>g\d+)_c\d+$", re.IGNORECASE)

_EXPECTED = {
    "ucf11": "root/<class>/<group_dir>/<video>.mpg|avi|mp4 (UCF11_updated_mpg)",
    "ucf101": "root/<Class>/v_<Class>_gGG_cCC.avi (UCF-101)",
    "folder": "root/<class>/<video> or root/<class>/<group>/<video>",
}


@dataclass(frozen=True)
class VideoRecord:
    """One video: absolute ``path``, integer ``label``, its ``class_name`` and ``group`` id."""

    path: str
    label: int
    class_name: str
    group: str


def is_video(path: Path) -> bool:
    """Whether ``path`` is a regular file with a known video extension (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def named_like_video(path: Path) -> bool:
    """A video file, or anything else (a folder, a link to nothing) whose name says it is one.

    Such entries are listed so that the scan reports them as bad instead of silently passing them over.
    """
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in _SKIP_DIRS
                  and not named_like_video(p))


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if named_like_video(p))


def _check_root(layout: str, root: str | Path) -> Path:
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r} is unknown: use one of {', '.join(LAYOUTS)}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MissingPathError(f"data.root={str(path)!r} is not a folder: point data.root at a dataset "
                                f"laid out as {_EXPECTED[layout]}")
    return path.resolve()


def _grouped(class_dir: Path, class_name: str) -> list[tuple[Path, str]]:
    """Videos under ``class_dir``: sub-folders are groups; loose files form a group each."""
    found = [(p, f"{class_name}/{p.stem}") for p in _videos(class_dir)]
    for sub in _subdirs(class_dir):
        found += [(p, f"{class_name}/{sub.name}") for p in sorted(sub.rglob("*"))
                  if named_like_video(p) and not any(part.lower() in _SKIP_DIRS or named_like_video(Path(part))
                                                     for part in p.relative_to(sub).parts[:-1])]
    return found


def _ucf101(class_dir: Path, class_name: str) -> list[tuple[Path, str]]:
    found = []
    for p in sorted(class_dir.rglob("*")):
        if not named_like_video(p) or any(named_like_video(Path(part)) for part in p.relative_to(class_dir).parts[:-1]):
            continue
        match = _UCF101_NAME.match(p.stem)
        found.append((p, match.group("group").lower() if match else f"{class_name}/{p.stem}"))
    return found


def discover(layout: str, root: str | Path) -> tuple[list[VideoRecord], list[str]]:
    """Find all videos of a ``layout`` under ``root``; returns (records, sorted class names).

    Classes are the immediate sub-folders; ``Annotation`` folders (any case) and
    ``ucfTrainTestlist`` are skipped. A class folder without any video is an error (a class the model
    could never learn). Entries named like videos that are not files (a folder ``clip.avi/``) are
    returned too, so that the scan lists them as bad.
    """
    base = _check_root(layout, root)
    per_class: dict[str, list[tuple[Path, str]]] = {}
    empty: list[str] = []
    for class_dir in _subdirs(base):
        find = _ucf101 if layout == "ucf101" else _grouped
        found = find(class_dir, class_dir.name)
        if found:
            per_class[class_dir.name] = found
        else:
            empty.append(class_dir.name)
    if per_class and empty:
        raise ConfigError(f"class folder(s) {empty} under data.root={str(base)!r} hold no video "
                          f"({', '.join(sorted(VIDEO_EXTENSIONS))}): add videos or remove the folder(s)")
    if not per_class:
        raise ConfigError(f"no videos found under data.root={str(base)!r} for data.layout={layout}: "
                         f"expected {_EXPECTED[layout]}")
    class_names = sorted(per_class)
    records = [VideoRecord(str(path), label, name, group)
               for label, name in enumerate(class_names) for path, group in per_class[name]]
    return records, class_names


def _find_list_dir(root: Path) -> Path | None:
    for candidate in (root / "ucfTrainTestlist", root):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return None


def split_lists(root: str | Path, split_id: int = 1) -> dict[str, list[str]] | None:
    """UCF101 official split ``split_id`` (1..3) as relative paths ``{"train": [...], "test": [...]}``.

    Looks in ``root/ucfTrainTestlist`` and then ``root``; returns ``None`` when no lists exist.
    """
    if split_id not in (1, 2, 3):
        raise ConfigError(f"data.split_id={split_id} is invalid: UCF101 has official splits 1, 2 and 3")
    list_dir = _find_list_dir(Path(root).expanduser())
    if list_dir is None:
        return None
    out: dict[str, list[str]] = {}
    for split, stem in (("train", "trainlist"), ("test", "testlist")):
        file = list_dir / f"{stem}0{split_id}.txt"
        if not file.is_file():
            raise MissingPathError(f"{file} is missing: the UCF101 split lists in {list_dir} are "
                                    "incomplete; "
                                    "restore ucfTrainTestlist or remove classInd.txt to use random splits")
        # lines are "Class/v_Class_g01_c01.avi [label]"
        out[split] = [line.split()[0].replace("\\", "/") for line in file.read_text().splitlines()
                      if line.strip()]
    return out
