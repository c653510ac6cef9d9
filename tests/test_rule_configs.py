"""The rule registry is the single source of rule names and defaults: conf/rule/, CLI and callback follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from vidxai.callbacks import ExplanationCallback
from vidxai.pipelines.rule_configs import CONF_RULE_DIR, render_rule_config, write_rule_configs
from vidxai.xai import RULES, get_rule, resolve_rule


def test_every_rule_config_equals_the_registry() -> None:
    """One YAML per registry rule with the registry's name and defaults, and no YAML without a rule."""
    files = {p.stem: p for p in Path(CONF_RULE_DIR).glob("*.yaml")}
    assert set(files) == set(RULES)
    for name, spec in RULES.items():
        cfg = OmegaConf.to_container(OmegaConf.load(files[name]))
        assert cfg == {"name": name, "params": dict(spec.defaults)}, name
        assert files[name].read_text() == render_rule_config(spec), (
            f"conf/rule/{name}.yaml is out of date: run python -m vidxai.pipelines.rule_configs"
        )


def test_generator_writes_the_registry_and_drops_stale_files(tmp_path: Path) -> None:
    (tmp_path / "retired_rule.yaml").write_text("name: retired_rule\nparams: {}\n")
    written = write_rule_configs(tmp_path)
    assert sorted(p.stem for p in tmp_path.glob("*.yaml")) == sorted(RULES) == sorted(p.stem for p in written)
    assert OmegaConf.load(tmp_path / "gamma.yaml").params.gamma == RULES["gamma"].defaults["gamma"]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_composed_rule_config_resolves_to_the_defaults(rule: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="explain", overrides=["ckpt=x", f"rule={rule}"])
    params = OmegaConf.to_container(cfg.rule.params)
    assert cfg.rule.name == rule
    assert resolve_rule(rule, **params) == resolve_rule(rule) == get_rule(rule).resolve()


def test_names_and_parameters_are_checked_by_the_registry_everywhere() -> None:
    with pytest.raises(ValueError, match=r"unknown LRP rule 'lrp_magic'; choose one of \['alpha_beta'"):
        get_rule("lrp_magic")
    with pytest.raises(ValueError, match="explanation callback: unknown LRP rule 'nope'"):
        ExplanationCallback(rules={"nope": {}})
    with pytest.raises(ValueError, match=r"explanation callback: rule 'epsilon' has no parameter\(s\) \['gamma'\]"):
        ExplanationCallback(rules={"epsilon": {"gamma": 1.0}})
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        ExplanationCallback(rules={"alpha_beta": {"alpha": 3.0}})
    callback = ExplanationCallback(rules={"epsilon": {}, "gamma": {"gamma": 0.5}})  # defaults fill the rest
    assert {k: c.params for k, c in callback.configs.items()} == {"epsilon": {}, "gamma": {"gamma": 0.5}}
