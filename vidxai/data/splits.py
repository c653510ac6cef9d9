"""Group-disjoint, class-stratified train/val/test splits and leave-one-group-out folds.

When every group belongs to one class (UCF11, folder layouts) groups are split within each
class, so every split sees every class. When groups are shared across classes (UCF101's
``gGG`` ids: the same actors in every class) whole group ids are split across classes.
All results are deterministic given ``seed`` and are sorted lists of record indices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from vidxai.data.layouts import VideoRecord
from vidxai.errors import ConfigError

SPLITS = ("train", "val", "test")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"data.{name}={value} must be in [0, 1)")


def _groups_are_per_class(records: Sequence[VideoRecord]) -> bool:
    owner: dict[str, int] = {}
    for r in records:
        if owner.setdefault(r.group, r.label) != r.label:
            return False
    return True


def _blocks(records: Sequence[VideoRecord]) -> dict[str, list[str]]:
    """Units to split independently: per class (groups owned by one class) or one global block."""
    if _groups_are_per_class(records):
        blocks: dict[str, set[str]] = defaultdict(set)
        for r in records:
            blocks[r.class_name].add(r.group)
        return {name: sorted(groups) for name, groups in sorted(blocks.items())}
    return {"all classes": sorted({r.group for r in records})}


def _count(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, int(round(n * fraction)))


def _indices_by_group(records: Sequence[VideoRecord], assignment: dict[str, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, r in enumerate(records):
        out[assignment[r.group]].append(i)
    return out


def group_split(records: Sequence[VideoRecord], val_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0, group_disjoint: bool = True) -> dict[str, list[int]]:
    """Split record indices into ``train``/``val``/``test`` with no group in two splits.

    Fractions count groups (within each class when groups are per class). With
    ``group_disjoint=False`` every video is its own group (a plain stratified split).
    """
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if not records:
        raise ValueError("cannot split an empty list of videos")
    if not group_disjoint:
        records = [VideoRecord(r.path, r.label, r.class_name, f"{r.class_name}/{r.path}") for r in records]
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for block, groups in _blocks(records).items():
        order = [groups[i] for i in rng.permutation(len(groups))]
        n_test, n_val = _count(len(order), test_fraction), _count(len(order), val_fraction)
        if n_test + n_val >= len(order):
            raise ConfigError(
                f"{block!r} has {len(order)} group(s), too few for group-disjoint train/val/test splits with "
                f"val_fraction={val_fraction}, test_fraction={test_fraction}: add data or lower the "
                "fractions")
        for g in order[:n_test]:
            assignment[g] = "test"
        for g in order[n_test:n_test + n_val]:
            assignment[g] = "val"
        for g in order[n_test + n_val:]:
            assignment[g] = "train"
    return _indices_by_group(records, assignment)


def num_folds(records: Sequence[VideoRecord]) -> int:
    """Number of leave-one-group-out folds: the group count of the smallest block."""
    return min(len(groups) for groups in _blocks(records).values())


def leave_one_group_out(records: Sequence[VideoRecord], fold: int, val_fraction: float = 0.1,
                        seed: int = 0) -> dict[str, list[int]]:
    """Fold ``fold``: test = the ``fold``-th group (sorted) of every class; val held out from the rest.

    For UCF11 (25 groups per class) ``fold`` in 0..24 gives the usual LOGO cross-validation.
    ``val_fraction`` of the remaining groups (at least one when > 0) is chosen by ``seed``.
    """
    _check_fraction("val_fraction", val_fraction)
    if not records:
        raise ValueError("cannot split an empty list of videos")
    blocks = _blocks(records)
    n_folds = min(len(groups) for groups in blocks.values())
    if not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise ConfigError(f"data.fold={fold} is out of range: valid folds are 0..{n_folds - 1} "
                         f"(the smallest class has {n_folds} groups)")
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for block, groups in blocks.items():
        rest = [g for i, g in enumerate(groups) if i != fold]
        n_val = _count(len(rest), val_fraction)
        if n_val >= len(rest):
            raise ConfigError(f"{block!r} has {len(groups)} group(s): too few to hold out a test group, "
                             f"val groups and train groups; lower data.val_fraction")
        val = {rest[i] for i in rng.permutation(len(rest))[:n_val]}
        assignment[groups[fold]] = "test"
        for g in rest:
            assignment[g] = "val" if g in val else "train"
    return _indices_by_group(records, assignment)
