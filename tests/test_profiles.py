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


def test_other_trial_lists_of_a_profile_come_after_the_main_one(monkeypatch, tmp_path):
    import svlib.data.profiles as profiles

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "data.yaml").write_text(
        "train_dir: ${LAB}/train\neval_dir: ${LAB}/eval\ntrials: ${LAB}/o.txt\ntest_name: vox1-o\n"
        "other_lists:\n  vox1-h:\n    eval_dir: ${LAB}/eval\n    trials: ${LAB}/h.txt\n")
    for d in ("train", "eval"):
        (tmp_path / d).mkdir()
    (tmp_path / "o.txt").write_text("1 a.wav b.wav\n")
    monkeypatch.setattr(profiles, "config_root", lambda: tmp_path)
    monkeypatch.setenv("LAB", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"other_lists\.vox1-h\.trials=.*h\.txt"):
        profiles.profile_data("lab")
    (tmp_path / "h.txt").write_text("0 a.wav c.wav\n")
    sets = profiles.profile_data("lab").trial_sets
    assert [(s.name, s.eval_dir, s.trials) for s in sets] == [
        ("vox1-o", tmp_path / "eval", tmp_path / "o.txt"), ("vox1-h", tmp_path / "eval", tmp_path / "h.txt")]


def test_the_paper_profiles_commented_other_lists_parse_when_uncommented():
    import yaml

    lines = (config_root() / "paper" / "data.yaml").read_text().splitlines()
    start = lines.index("# other_lists:")
    block = "\n".join(line[2:] for line in lines[start:] if line.startswith("# "))
    lists = yaml.safe_load(block)["other_lists"]
    assert set(lists) == {"vox1-e", "vox1-h"} and all(set(v) == {"eval_dir", "trials"} for v in lists.values())
