"""Honest dependencies: every third-party module vidxai imports (at module level or inside a function) is a
runtime dependency in pyproject.toml, or belongs to an extra and is imported behind an availability check
whose error line names the extra (``pip install '.[gpu]'``)."""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

#: extras that only serve development (tests, lint): nothing in vidxai may import from them
DEV_EXTRAS = ("dev",)


def _norm(name: str) -> str:
    """A distribution name in the PEP 503 normal form (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _runtime() -> dict[str, str]:
    """Runtime requirement name -> its full line (a line with a marker, e.g. ``platform_machine``, is
    optional on the platforms it excludes)."""
    return {_requirement_name(r): r for r in _project()["dependencies"]}


def _extras() -> dict[str, set[str]]:
    return {extra: {_requirement_name(r) for r in reqs}
            for extra, reqs in _project().get("optional-dependencies", {}).items()}


@functools.cache
def _installed() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions that provide it (reads every distribution's files once)."""
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    """The distributions that install the top-level ``module`` (its own name when it is not installed here,
    as PyPI names most packages: ``PyNvVideoCodec`` -> ``pynvvideocodec``)."""
    return {_norm(d) for d in _installed().get(module, [module])}


def _third_party_imports() -> dict[str, list[tuple[Path, ast.AST]]]:
    """Top-level module -> every place in vidxai that imports it (module level and inside functions)."""
    found: dict[str, list[tuple[Path, ast.AST]]] = {}
    for path in sorted((ROOT / "vidxai").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "vidxai" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append((path, node))
    return found


def _checked_before_import(path: Path, module: str) -> bool:
    """Whether ``path`` tests ``find_spec("<module>")`` or imports ``module`` inside ``try ... except
    ImportError``: an optional module is looked for before it is used."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "find_spec"
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == module):
            return True
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            body = [n for stmt in node.body for n in ast.walk(stmt)]
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) and module in ast.unparse(n) for n in body):
                return True
    return False


def _names_the_fix(path: Path, extra: str, dists: set[str]) -> bool:
    """Whether a string in ``path`` tells the user what to install: the extra (``.[gpu]``) or the package."""
    text = " ".join(n.value for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return f"[{extra}]" in text or any(f"pip install {d}" in text.lower() for d in dists)


def test_the_scan_sees_the_imports_it_must_see() -> None:
    """Module-level and function-level imports are both found (the scan itself could fail silently)."""
    found = _third_party_imports()
    assert {"torch", "numpy", "pytorch_lightning", "transformers", "scipy"} <= set(found), sorted(found)
    inside_functions = {top for top, places in found.items() for path, node in places
                        if node.col_offset > 0}
    assert "transformers" in inside_functions or "wandb" in inside_functions, inside_functions


def test_every_imported_module_is_a_dependency_or_an_optional_extra() -> None:
    runtime, extras = _runtime(), _extras()
    problems = []
    for module, places in sorted(_third_party_imports().items()):
        dists = _distributions(module)
        where = ", ".join(sorted({f"{p.relative_to(ROOT)}:{n.lineno}" for p, n in places})[:3])
        required = [d for d in dists if d in runtime]
        if required:
            if ";" in runtime[required[0]]:  # a dependency on some platforms only: optional elsewhere
                unguarded = [p for p in {p for p, _ in places} if not _checked_before_import(p, module)]
                if unguarded:
                    problems.append(f"{module} ({required[0]}) is a dependency only where "
                                    f"'{runtime[required[0]].split(';', 1)[1].strip()}' but "
                                    f"{unguarded[0].relative_to(ROOT)} imports it without checking")
            continue
        optional = [e for e, reqs in extras.items() if reqs & dists and e not in DEV_EXTRAS]
        if not optional:
            dev = [e for e, reqs in extras.items() if reqs & dists]
            problems.append(f"{module} (distribution {sorted(dists)}) is imported at {where} but is "
                            + (f"only in the {dev} extra (tests)" if dev else "in no dependency list")
                            + ": add it to [project].dependencies in pyproject.toml")
            continue
        for path in sorted({p for p, _ in places}):
            if not _checked_before_import(path, module):
                problems.append(f"{module} belongs to the extra {optional} but {path.relative_to(ROOT)} "
                                "imports it without checking that it is installed")
            elif not any(_names_the_fix(path, e, dists) for e in optional):
                problems.append(f"{path.relative_to(ROOT)}: no error line names the extra {optional} of {module}")
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_an_undeclared_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: an import of a package in no list is reported."""
    real = _third_party_imports()

    def with_one_more() -> dict:
        return {**real, "some_undeclared_pkg": [(ROOT / "vidxai" / "__init__.py", ast.parse("import x").body[0])]}

    monkeypatch.setattr(sys.modules[__name__], "_third_party_imports", with_one_more)
    with pytest.raises(AssertionError, match="some_undeclared_pkg .* in no dependency list"):
        test_every_imported_module_is_a_dependency_or_an_optional_extra()
