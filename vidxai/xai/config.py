"""``LRPConfig``: every setting of an LRP explainer in one value, and the one way to build one.

Explain, the explanation callback, the evaluation and the benchmarks all build their explainers through
:meth:`LRPConfig.build`; the Hydra group ``conf/lrp/`` holds the same fields. Old spellings are
accepted by :meth:`LRPConfig.from_dict` (``rule: {name, params}`` of explain, ``rules: {name: params}`` of
the callback, ``lstm_eps: null`` for "the default").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from torch import nn

from vidxai.errors import ConfigError
from vidxai.xai.explainer import VideoLRP
from vidxai.xai.recurrent import check_lstm_rule
from vidxai.xai.rules import resolve_rule

__all__ = ["LRPConfig"]


@dataclass(frozen=True)
class LRPConfig:
    """The settings of one LRP explainer (:class:`~vidxai.xai.VideoLRP`).

    Attributes:
        rule: a registered rule or composite name (``vidxai.xai.RULES``).
        params: the rule's parameters; those not given take the registry's defaults.
        lstm_rule: the LSTM / ConvLSTM gate rule (``signal_take_all``, ``half``, ``proportional``).
        lstm_eps: epsilon of the recurrent part and of the epsilon-rule head (Arras et al.: 1e-3).
        bias_factor: 0 (bias and stabiliser absorb their share) or 1 (spread over the inputs).
        chunk_frames: run a per-frame CNN on at most this many frames at a time; ``None``: all at once.
        attention_rule: the attention rule of a transformer (``attnlrp`` or ``cp``); ``None``: the
            explainer's default, and an error on a model without attention when set.
    """

    rule: str = "epsilon"
    params: Mapping[str, Any] = field(default_factory=dict)
    lstm_rule: str = "signal_take_all"
    lstm_eps: float = 1e-3
    bias_factor: float = 0.0
    chunk_frames: int | None = None
    attention_rule: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params or {}))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None = None, **overrides: Any) -> LRPConfig:
        """An ``LRPConfig`` from a plain mapping (a Hydra node converted with ``OmegaConf.to_container``).

        ``rule`` may be a name or ``{name, params}``; keys set to ``None`` keep the defaults; keys that are
        not fields are refused with one line naming the valid keys. ``overrides`` win over ``cfg``.
        """
        data = {k: v for k, v in {**dict(cfg or {}), **overrides}.items() if v is not None}
        rule = data.pop("rule", cls.rule)
        if isinstance(rule, Mapping):
            unknown = sorted(set(rule) - {"name", "params"})
            if unknown or "name" not in rule:
                raise ConfigError(f"rule must be a name or {{name, params}}, got keys {sorted(rule)}")
            data["params"] = {**dict(rule.get("params") or {}), **dict(data.get("params") or {})}
            rule = rule["name"]
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown LRP setting(s) {unknown}; valid settings are {sorted(valid)}")
        return cls(rule=rule, **data)

    def with_rule(self, rule: str, params: Mapping[str, Any] | None = None) -> LRPConfig:
        """The same settings with another rule (and its parameters)."""
        return replace(self, rule=rule, params=dict(params or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON, W&B and checkpoints)."""
        out = asdict(self)
        out["params"] = dict(self.params)
        return out

    def explainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~vidxai.xai.VideoLRP` for these settings."""
        kwargs: dict[str, Any] = {
            "lstm_rule": self.lstm_rule,
            "lstm_eps": self.lstm_eps,
            "bias_factor": self.bias_factor,
            "chunk_frames": self.chunk_frames,
        }
        if self.attention_rule is not None:
            kwargs["attention_rule"] = self.attention_rule
        return {**kwargs, **dict(self.params)}

    def check(self) -> LRPConfig:
        """These settings, checked without a network: rule and parameters against the rule registry, the gate
        rule, ``bias_factor`` and ``chunk_frames``; one :class:`~vidxai.errors.ConfigError` line otherwise."""
        try:
            resolve_rule(self.rule, **self.params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            check_lstm_rule(self.lstm_rule)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.bias_factor not in (0, 1):
            raise ConfigError(f"bias_factor={self.bias_factor!r}; choose 0 or 1")
        bad_chunk = isinstance(self.chunk_frames, bool) or not isinstance(self.chunk_frames, (int, type(None)))
        if bad_chunk or (self.chunk_frames is not None and self.chunk_frames < 1):
            raise ConfigError(f"chunk_frames={self.chunk_frames!r}; choose null or an integer >= 1")
        return self

    def build(self, net: nn.Module, preprocess: Mapping[str, Any] | None = None) -> Any:
        """The explainer of ``net`` (a network or a LightningModule whose ``.net`` is one) for these settings.

        ``preprocess``: the checkpoint's input normalisation (``mean``, ``std``), from which a box rule
        (``epsilon_gamma_box``) takes its input bounds unless ``params`` set ``low`` / ``high``.
        """
        return VideoLRP(net, self.rule, preprocess=preprocess, **self.explainer_kwargs())
