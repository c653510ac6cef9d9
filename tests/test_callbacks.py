"""The explanation callback's selection and scheduling (its full run is covered by the training test)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vidxai.callbacks import ExplanationCallback, stratified_indices


def test_stratified_indices_round_robin_over_classes() -> None:
    labels = [2, 0, 0, 1, 2, 1, 0]
    assert stratified_indices(labels, 3) == [1, 3, 0]
    assert stratified_indices(labels, 5) == [1, 3, 0, 2, 5]
    assert stratified_indices(labels, 100) == [1, 3, 0, 2, 5, 4, 6]
    assert stratified_indices([], 4) == []


def _trainer(epoch: int, zero: bool = True, sanity: bool = False) -> SimpleNamespace:
    return SimpleNamespace(current_epoch=epoch, is_global_zero=zero, sanity_checking=sanity)


def test_callback_runs_on_schedule_and_rank_zero_only() -> None:
    cb = ExplanationCallback(every_n_epochs=2)
    assert [cb._due(_trainer(e)) for e in range(4)] == [False, True, False, True]
    assert not cb._due(_trainer(1, zero=False))  # other ranks never run (nor wait on) it
    assert not cb._due(_trainer(1, sanity=True))
    assert not ExplanationCallback(every_n_epochs=0)._due(_trainer(0))


def test_callback_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown LRP rule"):
        ExplanationCallback(rules={"nope": {}})
    with pytest.raises(ValueError, match="num_clips"):
        ExplanationCallback(num_clips=0)
    with pytest.raises(ValueError, match="scale"):
        ExplanationCallback(scale="global")


def test_callback_passes_recurrent_settings_and_checks_them_when_fitting_starts() -> None:
    from vidxai.models import build_network

    module = SimpleNamespace(net=build_network("convlstm", 2, hidden_channels=[4], stem_channels=2))
    cb = ExplanationCallback(rules={"epsilon": {}, "z": {}}, lstm_eps=0.01, bias_factor=1)
    cb.setup(None, module, "fit")
    explainer = cb._explainer(module, "epsilon")
    assert (explainer.lstm_eps, explainer.bias_factor) == (0.01, 1.0)
    assert ExplanationCallback()._explainer(module, "epsilon").bias_factor == 0.0  # VideoLRP's default
    with pytest.raises(ValueError, match=r"explanation callback: bias_factor=2; choose 0 or 1"):
        ExplanationCallback(bias_factor=2)  # checked when the callback is built, before any training
    clip_cnn = SimpleNamespace(net=build_network("r2plus1d", 2, width=0.125))
    with pytest.raises(ValueError, match=r"explanation callback: chunk_frames=2 does not apply.*every_n_epochs=0"):
        ExplanationCallback(chunk_frames=2).setup(None, clip_cnn, "fit")
    ExplanationCallback(chunk_frames=2, every_n_epochs=0).setup(None, module, "fit")  # off: nothing to check
