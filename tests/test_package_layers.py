"""The package graph points one way: models compute, callbacks draw and log, only pipelines know Hydra."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidxai"


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_do_not_import_drawing_or_logging(path: Path) -> None:
    upward = ("vidxai.viz", "vidxai.callbacks", "vidxai.pipelines", "vidxai.io", "vidxai.wandb_media")
    bad = sorted(m for m in _imports(path) if m.startswith(upward))
    assert not bad, f"vidxai/models/{path.name} imports {bad}: models compute, callbacks draw and log"


def test_only_pipelines_import_hydra() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "pipelines" in path.relative_to(PACKAGE).parts:
            continue
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in ("hydra", "omegaconf"))
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}; only vidxai/pipelines may"
