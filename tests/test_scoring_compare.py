"""svlib.scoring.compare: systems on several trial lists, with speaker-bootstrap intervals and paired differences."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from svlib.data.lists import read_key_value, read_trials
from svlib.model import SpeakerModel
import svlib.scoring.compare as compare_module
import svlib.scoring.evaluate as evaluate_module
import svlib.scoring.extract as extract_module
from svlib.scoring import (cached_embeddings, compare_systems, cosine_scores, embedding_agreement, extract_embeddings,
                           logmel_embeddings, model_cache_dir, speaker_bootstrap, trial_speakers)
from test_train import write_corpus


def _no_extraction(*args, **kwargs):
    raise AssertionError("embedded again although the workspace cache holds these embeddings")


def _trial_set(root, name, pairs):
    lines = [f"{e} {t} {'target' if e.split('-')[0] == t.split('-')[0] else 'nontarget'}" for e, t in pairs]
    path = root / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    return SimpleNamespace(name=name, eval_dir=root, trials=path)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = write_corpus(tmp_path_factory.mktemp("compare") / "eval", speakers=6, utts=3, seconds=1.0)
    utts = sorted(read_key_value(root / "wav.scp"))
    pairs = list(itertools.combinations(utts, 2))
    return [_trial_set(root, "all", pairs), _trial_set(root, "half", pairs[::2])]


def test_each_system_gets_the_intervals_of_its_own_bootstrap_and_pairs_are_paired(lists):
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    comparison = compare_systems({"log-mel mean": logmel_embeddings, "untrained": model}, lists, n_boot=200, seed=3)
    assert comparison.lists == ["all", "half"]
    for trial_set in lists:
        trials = read_trials(trial_set.trials)
        utt2spk = read_key_value(trial_set.eval_dir / "utt2spk")
        enroll, test = trial_speakers(trials.trials, utt2spk)
        wav_scp = read_key_value(trial_set.eval_dir / "wav.scp")
        alone = cosine_scores(logmel_embeddings(wav_scp), trials).numpy()
        # bootstrapped alone with the same seed: the same resamples, so the same interval
        expected = speaker_bootstrap(alone, trials.labels(), enroll, test, n_boot=200, seed=3).interval("system")
        got = comparison.interval(trial_set.name, "log-mel mean")
        assert (got.estimate, got.low, got.high) == pytest.approx((expected.estimate, expected.low, expected.high))
        metrics = comparison.evaluations[trial_set.name]["log-mel mean"].metrics["cosine"]
        assert (metrics["eer_percent_low"], metrics["eer_percent_high"]) == pytest.approx((got.low, got.high))
        d = comparison.difference(trial_set.name, "untrained", "log-mel mean")
        a, b = (comparison.bootstraps[trial_set.name].replicates[s]["eer_percent"] for s in ("untrained", "log-mel mean"))
        assert (d.low, d.high) == pytest.approx(tuple(np.quantile(a - b, [0.025, 0.975])))
        assert comparison.verdict(trial_set.name, "untrained", "log-mel mean").startswith("untrained − log-mel mean")
    table = comparison.table()
    assert table.index.tolist() == [("log-mel mean", "cosine"), ("untrained", "cosine")]
    assert table.columns.tolist() == [(n, m) for n in ("all", "half") for m in ("EER (%)", "minDCF(0.01)")]
    diffs = comparison.differences([("untrained", "log-mel mean")])
    d = comparison.difference("all", "untrained", "log-mel mean")
    assert diffs.loc["untrained − log-mel mean", ("all", "real")] == ("yes" if d.excludes_zero else "no")
    assert diffs.loc["untrained − log-mel mean", ("all", "difference [interval]")] == d.format(2)


def test_bad_systems_and_duplicate_list_names_are_named(lists):
    with pytest.raises(TypeError, match="system 'x' is a int"):
        compare_systems({"x": 3}, lists[:1], n_boot=10)
    with pytest.raises(ValueError, match="two trial lists are called 'all'"):
        compare_systems({"log-mel mean": logmel_embeddings}, [lists[0], lists[0]], n_boot=10)
    with pytest.raises(KeyError, match="no trial list 'nope'"):
        compare_systems({"log-mel mean": logmel_embeddings}, lists[:1], n_boot=10).interval("nope", "log-mel mean")


def test_models_share_a_cache_folder_by_weights_and_reuse_it_across_lists_names_and_calls(lists, tmp_path,
                                                                                           monkeypatch):
    torch.manual_seed(0)
    a = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    torch.manual_seed(1)
    b = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    root = lists[0].eval_dir
    first = compare_systems({"a": a, "b b": b}, lists, n_boot=20, cohort_dir=root, calibration_trials=40,
                            cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(model_cache_dir(tmp_path, m).name for m in (a, b))
    # the same models under other names, in a later call: every set is read back, nothing is embedded again
    monkeypatch.setattr(extract_module, "extract_embeddings", _no_extraction)
    again = compare_systems({"x": a, "y": b}, lists, n_boot=20, cohort_dir=root, calibration_trials=40,
                            cache_dir=tmp_path)
    again.evaluations = {n: {{"x": "a", "y": "b b"}[s]: e for s, e in ev.items()} for n, ev in again.evaluations.items()}
    for name in ("all", "half"):
        for system in ("a", "b b"):
            assert set(first.evaluations[name][system].metrics) == {"cosine", "asnorm", "asnorm+qmf"}
            for method, s in first.evaluations[name][system].scores.items():
                torch.testing.assert_close(again.evaluations[name][system].scores[method], s)


def test_cached_embeddings_are_extract_embeddings_read_back_and_shared_with_evaluations(lists, tmp_path, monkeypatch):
    """svlib.scoring.cached_embeddings: the embeddings extract_embeddings computes, stored under the model's weights;
    a second call, and compare_systems' evaluation of the same set, read them back."""
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    torch.manual_seed(1)
    other = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    wav_scp = read_key_value(lists[0].eval_dir / "wav.scp")
    direct = extract_embeddings(model, wav_scp, progress=False)
    cached = cached_embeddings(model, wav_scp, tmp_path, progress=False)
    assert list(cached) == list(wav_scp)
    for utt in wav_scp:
        torch.testing.assert_close(cached[utt], direct[utt], rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(extract_module, "extract_embeddings", _no_extraction)
    again = cached_embeddings(model, dict(reversed(list(wav_scp.items()))), tmp_path, progress=False)
    assert all(torch.equal(again[u], cached[u]) for u in wav_scp)
    compare_systems({"m": model}, lists[:1], n_boot=10, cache_dir=tmp_path)  # the trials use every utterance
    with pytest.raises(AssertionError, match="embedded again"):  # another model's weights: another folder
        cached_embeddings(other, wav_scp, tmp_path, progress=False)
    assert model_cache_dir(tmp_path, model) != model_cache_dir(tmp_path, other)


def test_embedding_agreement_through_the_cache_equals_it_without(lists, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    torch.manual_seed(1)
    other = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    plain = embedding_agreement(model, {"itself": model, "other": other}, lists)
    cached = embedding_agreement(model, {"itself": model, "other": other}, lists, cache_dir=tmp_path)
    assert cached.loc["itself", "min cosine"] == pytest.approx(1.0, abs=1e-6)
    assert cached.loc["other", "min cosine"] == pytest.approx(plain.loc["other", "min cosine"], abs=1e-5)
    assert (cached["utterances"] == plain["utterances"]).all()
    monkeypatch.setattr(extract_module, "extract_embeddings", _no_extraction)
    compare_systems({"m": model, "o": other}, lists, n_boot=10, cache_dir=tmp_path)  # read back, list by list


def test_the_cache_folder_changes_with_the_code_that_computes_embeddings(monkeypatch, tmp_path):
    """A change to svlib's front end or model code (or to torch / transformers) must not read back embeddings the
    old code computed: model_cache_dir hashes embedding_code_digest with the weights."""
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    before = model_cache_dir(tmp_path, model)
    assert model_cache_dir(tmp_path, model) == before
    digest = extract_module.embedding_code_digest()
    assert len(digest) == 64 and digest == extract_module.embedding_code_digest()
    monkeypatch.setattr(extract_module, "embedding_code_digest", lambda: "edited " + digest)
    assert model_cache_dir(tmp_path, model) != before


def test_each_model_is_hashed_once_for_all_lists(lists, tmp_path, monkeypatch):
    """Hashing every weight of a full-size model takes seconds: compare_systems hashes each model once and passes
    the fingerprint to its cache folder and to evaluate_model, for every list."""
    calls, fingerprint = [], extract_module.model_fingerprint

    def counting(model):
        calls.append(model)
        return fingerprint(model)

    for module in (compare_module, evaluate_module, extract_module):
        monkeypatch.setattr(module, "model_fingerprint", counting)
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    compare_systems({"m": model, "log-mel mean": logmel_embeddings}, lists, n_boot=10, cache_dir=tmp_path)
    assert len(lists) == 2 and calls == [model]
