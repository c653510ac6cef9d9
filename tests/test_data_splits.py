"""Group-disjoint, stratified splits and leave-one-group-out folds."""

from __future__ import annotations

import pytest

from vidxai.data.layouts import VideoRecord
from vidxai.data.splits import group_split, leave_one_group_out, num_folds


def ucf11_records(n_classes: int = 3, n_groups: int = 25, clips: int = 2) -> list[VideoRecord]:
    return [VideoRecord(f"/d/c{c}/g{g:02d}/v{k}.avi", c, f"c{c}", f"c{c}/g{g:02d}")
            for c in range(n_classes) for g in range(n_groups) for k in range(clips)]


def groups_of(records: list[VideoRecord], idx: list[int]) -> set[str]:
    return {records[i].group for i in idx}


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_random_split_is_group_disjoint_stratified_deterministic(seed: int) -> None:
    records = ucf11_records()
    split = group_split(records, val_fraction=0.1, test_fraction=0.2, seed=seed)
    assert sorted(i for s in split.values() for i in s) == list(range(len(records)))
    g = {s: groups_of(records, idx) for s, idx in split.items()}
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    for s in ("train", "val", "test"):  # every class in every split
        assert {records[i].label for i in split[s]} == {0, 1, 2}
    assert len(g["test"]) == 3 * 5 and len(g["val"]) == 3 * 2  # round(25*0.2), round(25*0.1) per class
    assert split == group_split(records, 0.1, 0.2, seed=seed)


def test_different_seeds_give_different_splits() -> None:
    records = ucf11_records()
    assert group_split(records, 0.1, 0.2, seed=0)["test"] != group_split(records, 0.1, 0.2, seed=1)["test"]


def test_shared_groups_split_across_classes() -> None:
    """UCF101: gGG is the same actors in every class, so a group id lives in one split only."""
    records = [VideoRecord(f"/d/C{c}/v_C{c}_g{g:02d}_c01.avi", c, f"C{c}", f"g{g:02d}")
               for c in range(4) for g in range(1, 11)]
    split = group_split(records, 0.2, 0.2, seed=3)
    g = {s: groups_of(records, idx) for s, idx in split.items()}
    assert len(g["val"]) == 2 and len(g["test"]) == 2 and len(g["train"]) == 6
    assert not (g["train"] & g["test"]) and not (g["train"] & g["val"]) and not (g["val"] & g["test"])


def test_not_group_disjoint_is_a_plain_stratified_split() -> None:
    records = ucf11_records(n_classes=2, n_groups=2, clips=10)
    split = group_split(records, 0.1, 0.2, seed=0, group_disjoint=False)
    assert len(split["test"]) == 2 * 4 and len(split["val"]) == 2 * 2
    with pytest.raises(ValueError, match="too few for group-disjoint"):
        group_split(records, 0.1, 0.2, seed=0)


def test_leave_one_group_out_folds() -> None:
    records = ucf11_records()
    assert num_folds(records) == 25
    seen_test: set[str] = set()
    for fold in range(25):
        split = leave_one_group_out(records, fold, val_fraction=0.1, seed=fold)
        g = {s: groups_of(records, idx) for s, idx in split.items()}
        assert g["test"] == {f"c{c}/g{fold:02d}" for c in range(3)}  # k-th group of every class
        assert not (g["train"] & g["val"]) and not (g["test"] & (g["train"] | g["val"]))
        assert {records[i].label for i in split["val"]} == {0, 1, 2}
        seen_test |= g["test"]
    assert len(seen_test) == 75  # the folds cover every group once


def test_fold_out_of_range_names_the_valid_range() -> None:
    with pytest.raises(ValueError, match=r"data.fold=25 is out of range: valid folds are 0..24"):
        leave_one_group_out(ucf11_records(), 25)
    with pytest.raises(ValueError, match=r"valid folds are 0..24"):
        leave_one_group_out(ucf11_records(), -1)


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        group_split(ucf11_records(), 1.5, 0.1)
