"""Speaker-level bootstrap of EER / minDCF (svlib.scoring.bootstrap) and the weighted metrics it rests on."""

import numpy as np
import pytest

from svlib.data.lists import Trial
from svlib.scoring.bootstrap import speaker_bootstrap, speaker_weights, trial_speakers
from svlib.scoring.metrics import compute_eer, compute_min_dcf, det_curve


def _simulate(rng, n_speakers, utts=4, non_per_speaker=30, spread=0.8):
    """A trial list whose speakers differ in difficulty: speaker s's target scores are 2 - d_s + noise and its
    non-target scores against o are (d_s + d_o) / 2 + noise, d ~ N(0, spread). Trials of one speaker share d_s."""
    d = rng.normal(0, spread, n_speakers)
    enroll, test, labels, scores = [], [], [], []
    for s in range(n_speakers):
        for _ in range(utts * (utts - 1) // 2):
            enroll.append(s), test.append(s), labels.append(1), scores.append(2.0 - d[s] + rng.normal())
        for o in rng.choice(np.delete(np.arange(n_speakers), s), non_per_speaker):
            enroll.append(s), test.append(o), labels.append(0), scores.append(0.5 * (d[s] + d[o]) + rng.normal())
    return np.array(scores), np.array(labels), [f"spk{e}" for e in enroll], [f"spk{t}" for t in test]


def test_integer_weights_give_the_metrics_of_the_repeated_trial_list():
    rng = np.random.default_rng(0)
    scores, labels = np.round(rng.normal(size=300), 1), rng.random(300) < 0.3  # ties included
    weights = rng.integers(0, 4, 300)
    weights[0], weights[np.flatnonzero(~labels)[0]] = 1, 1
    repeated = np.repeat(scores, weights), np.repeat(labels, weights)
    for got, want in zip(det_curve(scores, labels, weights), det_curve(*repeated)):
        np.testing.assert_allclose(got, want)
    assert compute_eer(scores, labels, weights) == pytest.approx(compute_eer(*repeated))
    assert compute_min_dcf(scores, labels, 0.01, weights=weights) == pytest.approx(compute_min_dcf(*repeated, 0.01))
    with pytest.raises(ValueError, match="non-negative"):
        compute_eer(scores, labels, -np.ones(300))
    with pytest.raises(ValueError, match="total weight of 0"):
        compute_eer(scores, labels, np.where(labels, 0.0, 1.0))


def test_a_resample_counts_each_trial_as_often_as_copies_of_its_speakers_form_it():
    """The weights of a resample against the trial list built explicitly from speaker copies."""
    rng = np.random.default_rng(1)
    scores, labels, enroll, test = _simulate(rng, 6, utts=3, non_per_speaker=4)
    speakers = sorted(set(enroll))
    counts = np.array([0, 2, 1, 3, 1, 0])
    copies = {s: range(c) for s, c in zip(speakers, counts)}
    explicit = []  # (score, label) of every trial of the resampled population, copies told apart
    for sc, y, e, t in zip(scores, labels, enroll, test):
        if y:
            explicit += [(sc, y) for _ in copies[e]]
        else:
            explicit += [(sc, y) for _ in copies[e] for _ in copies[t]]
    ex_scores, ex_labels = map(np.array, zip(*explicit))
    idx = {s: i for i, s in enumerate(speakers)}
    w = speaker_weights(counts, np.array([idx[e] for e in enroll]), np.array([idx[t] for t in test]), labels)
    assert w.sum() == len(explicit)
    assert compute_eer(scores, labels, w) == pytest.approx(compute_eer(ex_scores, ex_labels))
    assert compute_min_dcf(scores, labels, 0.05, weights=w) == pytest.approx(compute_min_dcf(ex_scores, ex_labels, 0.05))


def test_speaker_intervals_cover_the_population_eer_where_trial_resampling_does_not():
    """Monte Carlo: lists of 20 speakers drawn from a population with speaker effects. The 95 % speaker-level
    interval covers the population's EER in about 95 % of lists; resampling trials (computed here independently)
    ignores that a speaker's trials move together and covers it far less often."""
    rng = np.random.default_rng(0)
    population = _simulate(rng, 3000)
    true_eer = 100 * compute_eer(population[0], population[1])[0]
    n_lists, covered_speakers, covered_trials = 60, 0, 0
    for k in range(n_lists):
        scores, labels, enroll, test = _simulate(rng, 20)
        interval = speaker_bootstrap(scores, labels, enroll, test, n_boot=200, seed=k).interval("system")
        covered_speakers += interval.low <= true_eer <= interval.high
        trial_eers = []
        for _ in range(200):
            i = rng.integers(0, labels.size, labels.size)
            trial_eers.append(100 * compute_eer(scores[i], labels[i])[0])
        low, high = np.quantile(trial_eers, [0.025, 0.975])
        covered_trials += low <= true_eer <= high
    assert covered_speakers / n_lists >= 0.85, covered_speakers
    assert covered_trials / n_lists <= 0.75, covered_trials


def test_systems_are_resampled_together_so_differences_are_paired():
    rng = np.random.default_rng(2)
    scores, labels, enroll, test = _simulate(rng, 15)
    better = scores + np.where(labels == 1, 0.8, 0.0)  # every target trial scores higher
    boot = speaker_bootstrap({"base": scores, "better": better, "same": scores.copy()}, labels, enroll, test,
                             n_boot=300, seed=0)
    same = boot.difference("same", "base")
    assert same.estimate == same.low == same.high == 0.0
    diff = boot.difference("better", "base")
    np.testing.assert_allclose(
        np.quantile(boot.replicates["better"]["eer_percent"] - boot.replicates["base"]["eer_percent"], 0.025),
        diff.low)
    assert diff.estimate < 0 and diff.excludes_zero and diff.high < 0
    base = boot.interval("base")
    assert base.low <= base.estimate <= base.high
    assert base.estimate == pytest.approx(100 * compute_eer(scores, labels)[0])
    assert boot.n_speakers == 15 and list(boot.table().columns) == ["eer_percent", "min_dcf_0.01", "min_dcf_0.05"]
    again = speaker_bootstrap({"base": scores}, labels, enroll, test, n_boot=300, seed=0)
    np.testing.assert_array_equal(again.replicates["base"]["eer_percent"], boot.replicates["base"]["eer_percent"])


def test_bad_input_names_what_was_expected():
    rng = np.random.default_rng(3)
    scores, labels, enroll, test = _simulate(rng, 5)
    with pytest.raises(ValueError, match="one of each per trial"):
        speaker_bootstrap(scores, labels, enroll[:-1], test)
    boot = speaker_bootstrap(scores, labels, enroll, test, n_boot=20)
    with pytest.raises(KeyError, match="bootstrapped"):
        boot.interval("other")
    with pytest.raises(KeyError, match="no speaker"):
        trial_speakers([("a", "b", True)], {"a": "A"})
    assert trial_speakers([("m1", "b", True)], {"b": "B"}) == (["m1"], ["B"])
    assert trial_speakers([Trial("a", "b", False)], {"a": "A", "b": "B"}) == (["A"], ["B"])
    spk = {"e1": "A", "e2": "A", "x": "B", "y": "C"}
    assert trial_speakers([Trial("A-enroll", "x", False)], spk, {"A-enroll": ["e1", "e2"]}) == (["A"], ["B"])
    with pytest.raises(ValueError, match="expected exactly one"):
        trial_speakers([Trial("mix", "x", False)], spk, {"mix": ["e1", "y"]})


def test_verdicts_and_difference_tables_call_a_difference_real_only_when_its_interval_excludes_zero():
    from svlib.scoring.bootstrap import bootstrap_trials
    from svlib.data.lists import TrialList

    rng = np.random.default_rng(3)
    scores, labels, enroll, test = _simulate(rng, 20)
    trials = TrialList([Trial(f"{e}/u{i}", f"{t}/v{i}", bool(y)) for i, (e, t, y) in
                        enumerate(zip(enroll, test, labels))])
    utt2spk = {u: u.split("/")[0] for t in trials.trials for u in (t.enroll, t.test)}
    systems = {"good": scores, "same": scores + rng.normal(0, 1e-3, scores.size), "bad": 0.3 * scores + rng.normal(
        0, 1.0, scores.size)}
    boot = bootstrap_trials(systems, trials, utt2spk, n_boot=300, seed=0)
    assert boot.n_speakers == 20
    bad = boot.difference("bad", "good")
    assert bad.excludes_zero and bad.estimate > 0
    assert boot.verdict("bad", "good").endswith("good is better (the 95 % interval excludes 0)")
    assert "not a real difference" in boot.verdict("same", "good")
    table = boot.differences([("bad", "good"), ("same", "good")], metrics=("eer_percent", "min_dcf_0.01"))
    assert table[("eer_percent", "real")].tolist() == ["yes", "no"]
    assert table.index.tolist() == ["bad − good", "same − good"]
    assert table.loc["bad − good", ("eer_percent", "difference [interval]")] == bad.format(2)
