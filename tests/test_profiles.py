"""Profiles are plain configs; missing paths are reported by name before any work starts."""

import pytest

from svlib.profiles import available_profiles, load_profile


def test_profiles_exist_and_resolve(monkeypatch):
    assert {"demo", "paper"} <= set(available_profiles())
    assert load_profile("demo")["encoder"] == "tiny"
    monkeypatch.setenv("W2V_BERT_2_0", "/models/w2v-bert-2.0")
    assert load_profile("paper")["encoder"] == "/models/w2v-bert-2.0"
    assert load_profile("paper", encoder="/x")["encoder"] == "/x"


def test_missing_variable_and_unknown_profile_are_clear(monkeypatch):
    monkeypatch.delenv("W2V_BERT_2_0", raising=False)
    with pytest.raises(ValueError, match="W2V_BERT_2_0"):
        load_profile("paper")
    with pytest.raises(ValueError, match="unknown profile 'dmeo'"):
        load_profile("dmeo")
