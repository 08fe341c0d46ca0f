"""EER, minDCF and DET against a brute-force evaluation of every threshold, on random and hand-made scores."""

import numpy as np
import pytest
import torch

from svlib.scoring.metrics import compute_eer, compute_min_dcf, det_curve


def brute_force_points(scores, labels):
    """(fpr, fnr) at every candidate threshold (each score and +inf), by direct counting; sorted by threshold."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    thresholds = sorted(set(scores.tolist())) + [np.inf]
    fpr, fnr = [], []
    for t in thresholds:
        accept = scores >= t
        fnr.append(np.sum(~accept & labels) / labels.sum())
        fpr.append(np.sum(accept & ~labels) / (~labels).sum())
    return np.array(fpr), np.array(fnr), np.array(thresholds)


def brute_force_eer(scores, labels):
    """EER as the crossing of the piecewise-linear DET with fnr = fpr, found by scanning every segment."""
    fpr, fnr, _ = brute_force_points(scores, labels)
    for i in range(len(fpr)):
        if fnr[i] == fpr[i]:
            return fnr[i]
        if i > 0 and fnr[i - 1] < fpr[i - 1] and fnr[i] > fpr[i]:
            # solve fnr[i-1] + w (fnr[i]-fnr[i-1]) = fpr[i-1] + w (fpr[i]-fpr[i-1])
            w = (fpr[i - 1] - fnr[i - 1]) / ((fnr[i] - fnr[i - 1]) - (fpr[i] - fpr[i - 1]))
            return fnr[i - 1] + w * (fnr[i] - fnr[i - 1])
    raise AssertionError("no crossing")


def brute_force_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0):
    fpr, fnr, _ = brute_force_points(scores, labels)
    best = min(c_miss * p * m + c_fa * (1 - p) * f for m, f in zip(fnr, fpr))
    return best / min(c_miss * p, c_fa * (1 - p))


def random_case(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 1.5 * labels
    if ties:
        scores = np.round(scores, 1)  # many tied scores, across classes
    labels[0], labels[1] = True, False
    return scores, labels


CASES = {
    "random": random_case(0),
    "random_ties": random_case(1, ties=True),
    "random_small": random_case(2, n=7),
    "perfect": (np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])),
    "inverted": (np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])),
    "all_equal": (np.full(6, 0.5), np.array([1, 0, 1, 0, 0, 0])),
    "cross_ties": (np.array([0.3, 0.3, 0.3, 0.7, 0.1]), np.array([1, 0, 0, 1, 0])),
}


@pytest.mark.parametrize("name", CASES)
def test_det_curve_matches_brute_force(name):
    scores, labels = CASES[name]
    fpr, fnr, thr = det_curve(scores, labels)
    bf_fpr, bf_fnr, bf_thr = brute_force_points(scores, labels)
    np.testing.assert_array_equal(thr, bf_thr)
    np.testing.assert_allclose(fpr, bf_fpr, atol=1e-12)
    np.testing.assert_allclose(fnr, bf_fnr, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_eer_matches_brute_force(name):
    scores, labels = CASES[name]
    eer, threshold = compute_eer(scores, labels)
    assert eer == pytest.approx(brute_force_eer(scores, labels), abs=1e-12)
    assert threshold in set(scores.tolist()) | {np.inf}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.5])
def test_min_dcf_matches_brute_force(name, p_target):
    scores, labels = CASES[name]
    assert compute_min_dcf(scores, labels, p_target) == pytest.approx(
        brute_force_min_dcf(scores, labels, p_target), abs=1e-12
    )
    assert compute_min_dcf(scores, labels, p_target, c_miss=10, c_fa=1) == pytest.approx(
        brute_force_min_dcf(scores, labels, p_target, 10, 1), abs=1e-12
    )


def test_hand_computed_values():
    # Perfect separation: EER 0 at the lowest target score, minDCF 0.
    assert compute_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == (0.0, 0.8)
    assert compute_min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 0.01) == 0.0
    # All scores equal: the system is uninformative, EER 50 %, minDCF 1 (no better than a trivial system).
    assert compute_eer([0.5] * 4, [1, 0, 1, 0])[0] == 0.5
    assert compute_min_dcf([0.5] * 4, [1, 0, 1, 0], 0.01) == 1.0
    # One non-target above one of two targets: at t=0.3, P_miss = 1/2 and P_fa = 1/2.
    assert compute_eer([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]) == (0.5, 0.3)
    # Interpolated crossing: P_miss 0 -> 1/2 while P_fa stays 1/3: EER = 1/3.
    eer, _ = compute_eer([0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 1, 0, 1])
    assert eer == pytest.approx(1 / 3)
    # A tie across classes moves both rates at once: (P_fa, P_miss) from (1/2, 0) to (0, 1/2): EER = 1/4.
    eer, _ = compute_eer([0.1, 0.2, 0.2, 0.3], [0, 1, 0, 1])
    assert eer == pytest.approx(0.25)


def test_torch_inputs_and_bool_labels():
    scores, labels = random_case(3)
    expected = compute_eer(scores, labels)
    assert compute_eer(torch.tensor(scores), torch.tensor(labels)) == expected
    assert compute_eer(scores, labels.astype(int)) == expected


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [1, 1], "at least one of each"),
        ([0.1, 0.2], [1, 2], "0/1 or bool"),
        ([0.1, float("nan")], [1, 0], "non-finite"),
        ([0.1, 0.2, 0.3], [1, 0], "equal lengths"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
    ],
)
def test_bad_inputs(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(scores, labels)


def test_bad_p_target():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf([0.1, 0.2], [0, 1], 1.0)
