"""Profiles are plain configs; missing paths are reported by name before any work starts."""

import pytest

from svlib.core.paths import config_root, profile_of_config
from svlib.data.profiles import available_profiles, load_profile


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


def test_profile_data_names_every_unset_variable_and_missing_path(monkeypatch, tmp_path):
    from svlib.data.profiles import profile_data

    for var in ("VOX_TRAIN_DIR", "VOX1_DIR", "VOX1_O_TRIALS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=r"VOX_TRAIN_DIR.*VOX1_DIR.*VOX1_O_TRIALS"):
        profile_data("paper")
    monkeypatch.setenv("VOX_TRAIN_DIR", str(tmp_path))
    monkeypatch.setenv("VOX1_DIR", str(tmp_path / "nope"))
    monkeypatch.setenv("VOX1_O_TRIALS", str(tmp_path / "trials.txt"))
    with pytest.raises(FileNotFoundError, match=r"eval_dir=.*nope.*trials="):
        profile_data("paper")
    (tmp_path / "nope").mkdir()
    (tmp_path / "trials.txt").write_text("1 a.wav b.wav\n")
    data = profile_data("paper")
    assert data.eval_dir == tmp_path / "nope" and data.trials == tmp_path / "trials.txt"


def test_profile_of_config_is_the_configs_folder(tmp_path):
    assert profile_of_config(config_root() / "demo" / "s1_freeze.yaml") == "demo"
    assert profile_of_config(config_root() / "paper" / "prune" / "p1_prune.yaml") == "paper"
    assert profile_of_config(config_root() / "demo" / ".." / "paper" / "s3_lmft.yaml") == "paper"
    assert profile_of_config(tmp_path / "s1.yaml") is None
    assert profile_of_config(config_root() / "README.md") is None  # not inside a profile's folder
    copy = tmp_path / "elsewhere" / "paper"  # a copy of configs/paper (the rehearsal's) keeps its profile
    (copy / "prune").mkdir(parents=True)
    (copy / "profile.yaml").write_text("profile: paper\n")
    assert profile_of_config(copy / "prune" / "p1_prune.yaml") == "paper"
