"""QMF: features, the logistic regression against a scipy reference fit, calibration gains, calibration trials."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from svlib.data.lists import Trial, TrialList
from svlib.scoring.evaluate import score_trials
from svlib.scoring.metrics import compute_eer, compute_min_dcf
from svlib.scoring.norm import make_cohort
from svlib.scoring.qmf import (
    FEATURE_NAMES,
    QMF,
    CalibrationSet,
    calibration_features,
    make_calibration_trials,
    quality_features,
    trial_quality_features,
)


def synthetic_trials(n, seed):
    """Trials whose score distributions shift with the shorter side's duration (a quality effect QMF can learn).

    Non-target scores ~ N(0.04·d_min, 0.1), target scores 0.3 higher: one global threshold is poor, a threshold
    that moves with duration separates the classes well.
    """
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    d_e, d_t = rng.uniform(1, 30, n), rng.uniform(1, 30, n)
    d_min = np.minimum(np.minimum(d_e, d_t), 20)
    scores = 0.04 * d_min + 0.3 * labels + 0.1 * rng.normal(size=n)
    features = quality_features(
        scores,
        d_e,
        d_t,
        rng.uniform(5, 10, n),  # magnitudes and cohort means: uninformative here
        rng.uniform(5, 10, n),
        rng.normal(0.2, 0.05, n),
        rng.normal(0.2, 0.05, n),
    )
    return features, labels.astype(int), scores


def reference_fit(z, y01, l2):
    """The same penalised logistic loss minimised by scipy's L-BFGS-B (numpy, analytic gradient)."""
    y = 2.0 * y01 - 1.0

    def loss_grad(p):
        w, b = p[:-1], p[-1]
        m = -y * (z @ w + b)
        loss = np.logaddexp(0, m).mean() + 0.5 * l2 * w @ w
        g = -y / (1 + np.exp(-m)) / len(y)  # d loss / d logit
        return loss, np.concatenate([z.T @ g + l2 * w, [g.sum()]])

    options = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000}
    res = minimize(loss_grad, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options=options)
    return res.x[:-1], res.x[-1]


def test_quality_features_columns():
    assert FEATURE_NAMES == ("score", "min_duration", "max_duration", "duration_diff", "duration_ratio",
                             "min_magnitude", "max_magnitude", "min_cohort_mean", "max_cohort_mean")
    # enroll: 30 s (capped at 20), magnitude 9, cohort mean 0.3; test: 4 s, magnitude 8, cohort mean 0.1
    f = quality_features([0.5], [30.0], [4.0], [9.0], [8.0], [0.3], [0.1])
    assert f.shape == (1, len(FEATURE_NAMES))
    # durations min 4, max 20, diff 16, ratio 0.2; magnitudes min 8, max 9; cohort means min 0.1, max 0.3
    torch.testing.assert_close(f[0], torch.tensor([0.5, 4.0, 20.0, 16.0, 0.2, 8.0, 9.0, 0.1, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="one per trial"):
        quality_features([0.5, 0.6], [3.0], [3.0, 3.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0])


def test_trial_quality_features_hand_computed_row():
    """One trial by hand: the enroll side is the long, quiet, low-cohort-mean one, the test side the other."""
    features = trial_quality_features(
        [("a", "b", 1)], [0.7], [0.4], [0.1], magnitudes={"a": 6.0, "b": 9.0}, durations={"a": 25.0, "b": 3.0}
    )
    expected = [0.7, 3.0, 20.0, 17.0, 0.15, 6.0, 9.0, 0.1, 0.4]  # score, durations, magnitudes, cohort means
    torch.testing.assert_close(features, torch.tensor([expected], dtype=torch.float64))


def test_features_and_calibrated_scores_are_symmetric_in_the_two_sides():
    """Swapping enroll and test of every trial gives the same feature rows and the same calibrated scores."""
    gen = torch.Generator().manual_seed(0)
    utt2spk = {f"s{s}_u{u}": f"s{s}" for s in range(8) for u in range(3)}
    centres = torch.randn(8, 16, generator=gen)
    emb = {u: (2 + int(s[1:]) % 3) * (centres[int(s[1:])] + 0.5 * torch.randn(16, generator=gen))
           for u, s in utt2spk.items()}  # magnitudes vary by speaker
    cohort = make_cohort(emb, utt2spk)
    cal = make_calibration_trials(utt2spk, {u: 3.0 + i for i, u in enumerate(sorted(utt2spk))}, n=60, seed=1,
                                  short_long=False)
    swapped = CalibrationSet(trials=[(t, e, y) for e, t, y in cal.trials], segments=cal.segments)
    features, labels = calibration_features(cal, emb, cohort, top_n=4)
    features_swapped, labels_swapped = calibration_features(swapped, emb, cohort, top_n=4)
    torch.testing.assert_close(features_swapped, features, rtol=0, atol=1e-12)
    assert torch.equal(labels_swapped, labels)
    qmf = QMF().fit(features, labels)
    torch.testing.assert_close(qmf.predict(features_swapped), qmf.predict(features), rtol=0, atol=1e-12)

    # The same through score_trials on a TrialList (cosine, AS-norm and AS-norm + QMF scores)
    trials = TrialList([Trial(e, t, bool(y)) for e, t, y in cal.trials])
    trials_swapped = TrialList([Trial(t.test, t.enroll, t.target) for t in trials])
    durations = cal.durations
    kwargs = dict(cohort_emb=emb, cohort_utt2spk=utt2spk, top_n=4, qmf=qmf, durations=durations)
    result, result_swapped = score_trials(emb, trials, **kwargs), score_trials(emb, trials_swapped, **kwargs)
    for method, scores in result.scores.items():
        torch.testing.assert_close(result_swapped.scores[method], scores, rtol=0, atol=1e-6, msg=method)


def test_fit_matches_scipy_reference():
    features, labels, _ = synthetic_trials(3000, seed=0)
    qmf = QMF(l2=1e-3).fit(features, labels)
    z = ((features - qmf.mean) / qmf.std).numpy()
    w_ref, b_ref = reference_fit(z, labels.astype(float), 1e-3)
    np.testing.assert_allclose(qmf.weight.numpy(), w_ref, atol=1e-3)
    assert qmf.bias == pytest.approx(b_ref, abs=1e-3)


def test_qmf_improves_eer_and_min_dcf():
    train_x, train_y, _ = synthetic_trials(4000, seed=1)
    test_x, test_y, raw = synthetic_trials(4000, seed=2)
    calibrated = QMF().fit(train_x, train_y).predict(test_x)
    raw_eer, cal_eer = compute_eer(raw, test_y)[0], compute_eer(calibrated, test_y)[0]
    assert cal_eer < 0.5 * raw_eer, (raw_eer, cal_eer)
    assert compute_min_dcf(calibrated, test_y, 0.05) < compute_min_dcf(raw, test_y, 0.05)


def test_save_load_round_trip(tmp_path):
    features, labels, _ = synthetic_trials(500, seed=3)
    qmf = QMF().fit(features, labels)
    loaded = QMF.load(qmf.save(tmp_path / "qmf.json"))
    torch.testing.assert_close(loaded.predict(features), qmf.predict(features))
    (tmp_path / "bad.json").write_text('{"weight": [1]}')
    with pytest.raises(ValueError, match="missing keys"):
        QMF.load(tmp_path / "bad.json")


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        QMF().predict(torch.zeros(1, len(FEATURE_NAMES)))
    with pytest.raises(ValueError, match="expected \\(n_trials, 9\\)"):
        QMF().fit(torch.zeros(4, 3), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="both 0 and 1"):
        QMF().fit(torch.zeros(4, 9), [1, 1, 1, 1])


def test_make_calibration_trials():
    utt2spk = {f"s{s}_u{u}": f"s{s}" for s in range(5) for u in range(3)}
    utt2dur = {u: 3.0 + i for i, u in enumerate(sorted(utt2spk))}
    cal = make_calibration_trials(utt2spk, utt2dur, n=200, seed=7)
    assert len(cal.trials) == 200 and sum(t[2] for t in cal.trials) == 100
    kinds = set()
    for enroll, test, label in cal.trials:
        (ue, _, _), (ut, _, _) = cal.segments[enroll], cal.segments[test]
        assert ue != ut
        assert (utt2spk[ue] == utt2spk[ut]) == bool(label)
    for key, (utt, start, dur) in cal.segments.items():
        if key == utt:
            kinds.add("long")
            assert (start, dur) == (0.0, utt2dur[utt])
        else:
            kinds.add("short")
            assert 2.0 <= dur <= 4.0 and start + dur <= utt2dur[utt] + 1e-9
    assert kinds == {"short", "long"}
    assert make_calibration_trials(utt2spk, utt2dur, n=200, seed=7) == cal  # reproducible
    long_only = make_calibration_trials(utt2spk, utt2dur, 20, short_long=False)
    assert all(k == u for k, (u, _, _) in long_only.segments.items())
    sources = cal.sources({u: f"/data/{u}.wav" for u in utt2spk})
    assert all(str(s.path).startswith("/data/") for s in sources.values())
    with pytest.raises(ValueError, match="2\\+ utterances"):
        make_calibration_trials({"a": "s1", "b": "s2"}, {"a": 3.0, "b": 3.0}, n=10)
