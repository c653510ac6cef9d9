"""Dataset layouts: UCF11, UCF101 (with official split lists) and plain class folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_video

from vidxai.data.layouts import discover, split_lists


@pytest.fixture(scope="module")
def one_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("src") / "src.avi", num_frames=3, size=(16, 16))


def _place(src: Path, *paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(src)


def test_ucf11_groups_and_annotation_skipped(tmp_path: Path, one_video: Path) -> None:
    root = tmp_path / "UCF11_updated_mpg"
    _place(one_video,
           root / "biking" / "v_biking_01" / "v_biking_01_01.mpg",
           root / "biking" / "v_biking_01" / "v_biking_01_02.mpg",
           root / "biking" / "v_biking_02" / "v_biking_02_01.avi",
           root / "basketball" / "v_shooting_01" / "v_shooting_01_01.MPG",
           root / "basketball" / "Annotation" / "v_shooting_01_01.mpg",
           root / "basketball" / "v_shooting_01" / "annotation" / "x.mpg",
           root / "Annotation" / "a" / "b.avi")
    (root / "biking" / "v_biking_01" / "notes.txt").write_text("not a video")
    records, classes = discover("ucf11", root)
    assert classes == ["basketball", "biking"]
    assert len(records) == 4
    assert not any("nnotation" in r.path for r in records)
    by_name = {Path(r.path).name: r for r in records}
    assert by_name["v_shooting_01_01.MPG"].label == 0
    assert by_name["v_biking_01_02.mpg"].group == "biking/v_biking_01"
    assert by_name["v_biking_02_01.avi"].group == "biking/v_biking_02"
    assert {r.class_name for r in records if r.label == 1} == {"biking"}


def test_ucf101_groups_are_shared_across_classes_and_split_lists(tmp_path: Path, one_video: Path) -> None:
    root = tmp_path / "UCF-101"
    names = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in ("Archery", "ApplyLipstick") for g in (1, 2, 8)
             for k in (1, 2)]
    _place(one_video, *(root / n for n in names))
    records, classes = discover("ucf101", root)
    assert classes == ["ApplyLipstick", "Archery"]
    assert len(records) == 12
    assert {r.group for r in records} == {"g01", "g02", "g08"}
    assert split_lists(root, 1) is None  # no lists: random group splits
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyLipstick\n2 Archery\n")
    train = [n for n in names if "_g08_" not in n]
    (lists / "trainlist01.txt").write_text("".join(f"{n} 1\n" for n in train))
    (lists / "testlist01.txt").write_text("".join(f"{n}\n" for n in names if "_g08_" in n))
    got = split_lists(root, 1)
    assert got == {"train": train, "test": [n for n in names if "_g08_" in n]}
    assert len(discover("ucf101", root)[0]) == 12  # the list folder is not a class
    with pytest.raises(FileNotFoundError, match="trainlist02.txt is missing"):
        split_lists(root, 2)
    with pytest.raises(ValueError, match="split_id=4"):
        split_lists(root, 4)


def test_folder_layout_file_groups_and_subfolder_groups(tmp_path: Path, one_video: Path) -> None:
    root = tmp_path / "folder"
    _place(one_video, root / "cats" / "a.MP4", root / "cats" / "b.webm", root / "dogs" / "park" / "c.mkv",
           root / "dogs" / "park" / "d.mov", root / "dogs" / "beach" / "e.mpeg")
    (root / "cats" / "readme.md").write_text("x")
    (root / ".hidden_class").mkdir()
    records, classes = discover("folder", root)
    assert classes == ["cats", "dogs"]
    groups = {Path(r.path).name: r.group for r in records}
    assert groups == {"a.MP4": "cats/a", "b.webm": "cats/b", "c.mkv": "dogs/park", "d.mov": "dogs/park",
                      "e.mpeg": "dogs/beach"}
    (root / "empty_class").mkdir()  # a class the model could never learn: an error naming the folder
    with pytest.raises(ValueError, match=r"class folder\(s\) \['empty_class'\].*hold no video"):
        discover("folder", root)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*is not a folder.*<class>/<group_dir>"):
        discover("ucf11", tmp_path / "nowhere")
    (tmp_path / "empty" / "someclass").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no videos found under .*empty.*layout=folder"):
        discover("folder", tmp_path / "empty")
    with pytest.raises(ValueError, match="data.layout='kinetics' is unknown"):
        discover("kinetics", tmp_path)
