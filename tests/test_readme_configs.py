"""The README's config table lists every option of the config groups in conf/, and nothing else."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT

CONF = ROOT / "conf"
#: groups whose options are not all top-level choices (callbacks: sub-configs of `default`), or internal
NOT_IN_TABLE = {"callbacks", "hydra", "paths"}


def _table() -> dict[str, set[str]]:
    """``group -> options`` of the table under README's "## Configs" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configs (`conf/`)", 1)[1].split("\n#", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        group = re.match(r"`([^`]+)`", cells[0]).group(1)
        rows[group] = set(re.findall(r"`([a-z0-9_]+)`", cells[1]))
    return rows


def _groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in NOT_IN_TABLE)


def test_every_config_group_has_a_row() -> None:
    missing = sorted(set(_groups()) - set(_table()))
    assert not missing, f"README.md's config table has no row for conf/{missing}"


@pytest.mark.parametrize("group", _groups())
def test_row_lists_exactly_the_options_in_conf(group: str) -> None:
    listed = _table().get(group, set())
    options = {p.stem for p in (CONF / group).glob("*.yaml")}
    assert listed - options == set(), f"README.md lists {group} options that conf/{group}/ lacks: {listed - options}"
    assert options - listed == set(), f"README.md's {group} row misses conf/{group}/ options {options - listed}"


def test_the_table_is_found() -> None:  # a renamed heading must not make the checks above vacuous
    assert {"data", "model", "trainer", "logger", "rule", "lrp"} <= set(_table())
