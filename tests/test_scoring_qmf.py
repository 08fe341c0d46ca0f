"""QMF: features, the logistic regression against a scipy reference fit, calibration gains, calibration trials."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from svlib.scoring.metrics import compute_eer, compute_min_dcf
from svlib.scoring.qmf import FEATURE_NAMES, QMF, make_calibration_trials, quality_features


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
    f = quality_features([0.5], [30.0], [4.0], [7.0], [8.0], [0.1], [0.2])
    assert f.shape == (1, len(FEATURE_NAMES))
    # durations capped at 20 s: min 4, max 20, diff 16, ratio 0.2
    torch.testing.assert_close(f[0], torch.tensor([0.5, 4.0, 20.0, 16.0, 0.2, 7.0, 8.0, 0.1, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match="one per trial"):
        quality_features([0.5, 0.6], [3.0], [3.0, 3.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0])


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
