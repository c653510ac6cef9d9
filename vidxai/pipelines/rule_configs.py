"""Write ``conf/rule/<name>.yaml`` from the rule registry (:data:`vidxai.xai.RULES`), the single source.

Run ``python -m vidxai.pipelines.rule_configs [conf/rule]`` after adding a rule or changing a default;
``tests/test_rule_configs.py`` fails while the files and the registry disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vidxai.xai.rules import RULES, RuleSpec

#: ``conf/rule/`` of this checkout.
CONF_RULE_DIR = Path(__file__).resolve().parents[2] / "conf" / "rule"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else repr(value)


def render_rule_config(spec: RuleSpec) -> str:
    """The YAML text of one rule's config group entry: its name and its parameters with their defaults."""
    lines = [
        f"# {spec.description}",
        "# generated from the rule registry (vidxai.xai.RULES): python -m vidxai.pipelines.rule_configs",
        f"name: {spec.name}",
    ]
    if spec.defaults:
        lines.append("params:")
        lines.extend(f"  {key}: {_yaml_value(value)}" for key, value in spec.defaults.items())
    else:
        lines.append("params: {}")
    return "\n".join(lines) + "\n"


def write_rule_configs(conf_dir: str | Path = CONF_RULE_DIR) -> list[Path]:
    """Write one YAML file per registered rule into ``conf_dir`` and delete those of unregistered rules."""
    out = Path(conf_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.glob("*.yaml")):
        if stale.stem not in RULES:
            stale.unlink()
    written = []
    for name, spec in RULES.items():
        path = out / f"{name}.yaml"
        path.write_text(render_rule_config(spec))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_rule_configs(sys.argv[1] if len(sys.argv) > 1 else CONF_RULE_DIR):
        print(p)
