"""Which videos an evaluation runs on: a class-stratified sample or videos named by the user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["named_videos", "stratified"]


def stratified(labels: Sequence[int], limit: int | None, seed: int = 0) -> list[int]:
    """Indices of ``limit`` items taken round-robin over the classes (class order sorted), ``seed``-shuffled.

    Within each class the order is a permutation drawn from ``numpy.random.default_rng(seed)`` (one per class,
    in class order), so the sample is the same for the same ``seed`` and balanced to within one video per
    class; a class with fewer videos runs out and the others go on. ``limit=None``: every video. The returned
    indices are in the round-robin order (class 0's first, class 1's first, ...).
    """
    labels = [int(x) for x in labels]
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    n = len(labels) if limit is None else min(int(limit), len(labels))
    rng = np.random.default_rng(int(seed))
    queues = []
    for c in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == c]
        queues.append([members[j] for j in rng.permutation(len(members))])
    out: list[int] = []
    depth = 0
    while len(out) < n:
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        depth += 1
    return out


def _names(path: str, root: str | None) -> set[str]:
    p = Path(path)
    names = {str(p), p.name, p.stem}
    if root is not None:
        try:
            names.add(str(p.relative_to(root)))
        except ValueError:
            pass
    return names


def named_videos(paths: Sequence[str], wanted: Sequence[str], root: str | None = None) -> list[int]:
    """Indices of ``wanted`` videos in ``paths`` (matched by full path, path under ``root``, file name or stem).

    Raises ``ValueError`` naming the videos that match nothing or more than one, with a few valid names.
    """
    index: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        for name in _names(str(path), root):
            index.setdefault(name, []).append(i)
    out, missing, ambiguous = [], [], []
    for w in wanted:
        hits = sorted(set(index.get(str(w), [])))
        if not hits:
            missing.append(str(w))
        elif len(hits) > 1:
            ambiguous.append(str(w))
        else:
            out.append(hits[0])
    if missing or ambiguous:
        examples = ", ".join(Path(str(p)).name for p in list(paths)[:3])
        what = f"no video of the split matches {missing}" if missing else ""
        what += ("; " if what else "") + (f"{ambiguous} match several videos" if ambiguous else "")
        raise ValueError(f"videos=: {what}; name videos by file name or path, e.g. {examples}")
    return list(dict.fromkeys(out))
