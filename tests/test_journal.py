"""The run journal (vidxai/journal.py): records survive any interruption; a cut last line is dropped; a resume
with other settings names the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidxai.journal import Journal, atomic_write_text, read_journal, run_settings, settings_difference


def test_records_come_back_and_a_cut_last_line_is_dropped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "rank0.jsonl"
    j = Journal(path, {"settings": {"a": 1}})
    j.append({"kind": "videos", "x": [1.5, float("nan"), 0.1 + 0.2], "n": np.int64(3)})
    j.append({"kind": "videos", "x": [2.0]})
    with path.open("a") as fh:
        fh.write('{"kind":"videos","x":[3')  # a SIGKILL in the middle of a write
    again = Journal(path, {"settings": {"a": 2}})  # an existing journal keeps its own header
    assert again.header == {"kind": "header", "settings": {"a": 1}}
    first, second = list(again.of_kind("videos"))
    assert first["x"][0] == 1.5 and np.isnan(first["x"][1]) and first["x"][2] == 0.1 + 0.2  # exact floats
    assert first["n"] == 3 and second["x"] == [2.0]
    assert path.read_bytes().endswith(b"[2.0]}\n")  # the cut line is gone: the next record starts cleanly
    again.append({"kind": "videos", "x": [4.0]})
    records = read_journal(path)
    assert len(records) == 4 and records[-1]["x"] == [4.0] and records[2]["x"] == [2.0]


def test_a_damaged_line_before_the_last_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"kind":"header"}\nnot json\n{"kind":"videos"}\n')
    with pytest.raises(ValueError, match="line 2 is not a journal record"):
        read_journal(path)


def test_arrays_and_files_are_written_whole(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal" / "rank0.jsonl")
    maps = {"m_epsilon": np.random.default_rng(0).normal(size=(2, 3, 3)).astype(np.float32)}
    j.save_arrays("maps/7", maps)
    back = j.load_arrays("maps/7")
    assert np.array_equal(back["m_epsilon"], maps["m_epsilon"])
    atomic_write_text(tmp_path / "out.json", json.dumps({"a": 1}))
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "journal").rglob(".*.tmp"))
    assert (tmp_path / "out.json").stat().st_mode & 0o044  # readable like a file open() makes


def test_settings_leave_out_where_and_how_a_run_logs() -> None:
    cfg = {"limit": 4, "paths": {"output_dir": "/a"}, "hydra": {"x": 1}, "resume": "/r", "logger": {"w": 1},
           "mprt": {"steps": None}, "trainer": {"devices": 2, "strategy": {"timeout": {"seconds": 600}}}}
    flat = run_settings(cfg)
    assert flat == {"limit": 4, "mprt.steps": None, "trainer.devices": 2}
    assert settings_difference(flat, {**flat, "limit": 8}) == "limit=8 here, limit=4 in the interrupted run"
    assert settings_difference(flat, dict(flat)) is None
