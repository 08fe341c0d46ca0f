"""Verification metrics: DET curve, equal error rate (EER) and normalised minimum detection cost (minDCF).

The paper reports EER and minDCF with ``C_miss = C_fa = 1`` and ``p_target = 0.01`` (§3.3, Table 1); svlib also
reports ``p_target = 0.05`` (the VoxSRC convention). All three functions are exact: they sort the scores once and
evaluate every distinct operating point, so tied scores are handled as one threshold.

Decision rule: a trial is *accepted* when ``score >= threshold``. For the ``K`` distinct score values
``u_0 < … < u_{K-1}`` the operating points are the thresholds ``u_0, …, u_{K-1}, +inf``:

* ``P_miss(t) = #{targets with score < t} / #targets`` (false negative rate, non-decreasing in ``t``);
* ``P_fa(t)   = #{non-targets with score >= t} / #non-targets`` (false positive rate, non-increasing).

Threshold ``u_0`` accepts everything (``P_miss = 0``, ``P_fa = 1``) and ``+inf`` rejects everything.

Inputs are 1-D arrays or tensors of equal length ``(n_trials,)``: ``scores`` (finite floats) and ``labels``
(``1``/``True`` = target, ``0``/``False`` = non-target; both classes must be present). Optional ``weights``
``(n_trials,)`` (non-negative) count a trial that many times: integer weights give exactly the numbers of the trial
list with each trial repeated, which is how :mod:`svlib.scoring.bootstrap` evaluates a resample of speakers.

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["det_curve", "det_points", "compute_eer", "compute_min_dcf", "evaluate_scores"]


def _as_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (n_trials,), found shape {arr.shape}")
    return arr


def _check_weights(weights, y: np.ndarray) -> np.ndarray | None:
    """Validated ``weights float64 (n,)`` (``None`` stays ``None``): finite, non-negative, both classes weighted."""
    if weights is None:
        return None
    w = _as_numpy(weights, "weights").astype(np.float64)
    if w.shape != y.shape:
        raise ValueError(f"weights has {w.shape[0]} entries but there are {y.shape[0]} trials; expected equal lengths")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative (a trial's count)")
    if w[y].sum() <= 0 or w[~y].sum() <= 0:
        raise ValueError("weights give the targets or the non-targets a total weight of 0; expected both positive")
    return w


def _check_inputs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(scores float64 (n,), labels bool (n,))``."""
    s = _as_numpy(scores, "scores").astype(np.float64)
    y = _as_numpy(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"scores has {s.shape[0]} trials but labels has {y.shape[0]}; expected equal lengths")
    if not np.isfinite(s).all():
        bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"scores holds {bad} non-finite values (NaN/inf); expected finite scores")
    values = np.unique(y)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(f"labels must be 0/1 or bool (1 = target), found values {values[:10].tolist()}")
    y = y.astype(bool)
    n_tar = int(y.sum())
    if n_tar == 0 or n_tar == y.size:
        raise ValueError(
            f"labels hold {n_tar} targets and {y.size - n_tar} non-targets; expected at least one of each"
        )
    return s, y


def det_curve(scores, labels, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every operating point of the detection error trade-off (DET) curve.

    Args:
        scores: ``(n_trials,)`` verification scores (higher = more likely the same speaker).
        labels: ``(n_trials,)`` 1/True for target trials, 0/False for non-target trials.
        weights: optional ``(n_trials,)`` non-negative counts of each trial (default: 1 each); the result is that
            of the list with each trial repeated as often (a weight of 0 drops the trial).

    Returns:
        ``(fpr, fnr, thresholds)``, each of shape ``(K+1,)`` for ``K`` distinct scores: ``thresholds`` are the
        distinct scores in increasing order followed by ``+inf``; ``fpr = P_fa`` decreases from 1 to 0 and
        ``fnr = P_miss`` increases from 0 to 1.
    """
    s, y = _check_inputs(scores, labels)
    w = _check_weights(weights, y)
    if w is not None:  # a trial counted 0 times is not in the list: its score is no operating point
        s, y, w = s[w > 0], y[w > 0], w[w > 0]
    unique, inverse = np.unique(s, return_inverse=True)  # sorted distinct scores; inverse maps trials to them
    return det_points(unique, inverse.ravel(), y, w)


def det_points(unique: np.ndarray, inverse: np.ndarray, y: np.ndarray,
               w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`det_curve` from scores already sorted once: ``unique`` ``(K,)`` the distinct scores in increasing order,
    ``inverse`` ``(n,)`` each trial's index into them, ``y`` ``(n,)`` bool labels, ``w`` ``(n,)`` trial counts or
    ``None`` (a resampling bootstrap sorts once and calls this per resample)."""
    w_tar, w_non = (None, None) if w is None else (w[y], w[~y])
    tar_counts = np.bincount(inverse[y], weights=w_tar, minlength=unique.size)  # (K,) targets per distinct score
    non_counts = np.bincount(inverse[~y], weights=w_non, minlength=unique.size)  # (K,)
    n_tar, n_non = tar_counts.sum(), non_counts.sum()
    # Threshold k accepts the trials with score >= u_k: the targets below it are missed.
    tar_below = np.concatenate([[0], np.cumsum(tar_counts)])  # (K+1,)
    non_below = np.concatenate([[0], np.cumsum(non_counts)])  # (K+1,)
    fnr = tar_below / n_tar
    fpr = (n_non - non_below) / n_non
    thresholds = np.concatenate([unique, [np.inf]])
    return fpr, fnr, thresholds


def compute_eer(scores, labels, weights=None) -> tuple[float, float]:
    """Equal error rate: where the DET curve crosses ``P_miss = P_fa``.

    ``d = P_miss − P_fa`` is non-decreasing over the operating points of :func:`det_curve`. If some point has
    ``d = 0`` the EER is its error rate; otherwise it is the crossing of the straight segment between the last
    point with ``d < 0`` and the first with ``d > 0`` (linear interpolation of both rates, so the two agree there).

    Args:
        scores: ``(n_trials,)``; labels: ``(n_trials,)`` with 1 = target; weights: optional trial counts.

    Returns:
        ``(eer, threshold)``: the EER as a fraction in [0, 1] (multiply by 100 for %), and the threshold of the
        operating point closest to the crossing (the one of the two segment ends with the smaller ``|d|``).
    """
    fpr, fnr, thresholds = det_curve(scores, labels, weights)
    return _eer_from_det(fpr, fnr, thresholds)


def _eer_from_det(fpr: np.ndarray, fnr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """:func:`compute_eer` on the operating points of :func:`det_curve`."""
    d = fnr - fpr  # (K+1,), from -1 to +1
    k = int(np.searchsorted(d, 0.0, side="left"))  # first point with d >= 0
    if d[k] == 0.0:
        return float(fnr[k]), float(thresholds[k])
    # d[k-1] < 0 < d[k]: interpolate both rates along the segment.
    w = -d[k - 1] / (d[k] - d[k - 1])
    eer = fnr[k - 1] + w * (fnr[k] - fnr[k - 1])
    closest = k - 1 if -d[k - 1] <= d[k] else k
    return float(eer), float(thresholds[closest])


def compute_min_dcf(scores, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0, weights=None) -> float:
    """Normalised minimum detection cost over all thresholds (NIST SRE definition).

    ``DCF(t) = C_miss · p_target · P_miss(t) + C_fa · (1 − p_target) · P_fa(t)``, normalised by the cost of the
    best trivial system ``min(C_miss · p_target, C_fa · (1 − p_target))``; the minimum is over every operating
    point of :func:`det_curve` (the trivial accept-all / reject-all points included, so the result is ≤ 1).

    Args:
        scores: ``(n_trials,)``; labels: ``(n_trials,)`` with 1 = target.
        p_target: prior probability of a target trial, in (0, 1) (0.01 in the paper, 0.05 for VoxSRC).
        c_miss, c_fa: costs of a miss and of a false alarm (both 1 in the paper).
        weights: optional ``(n_trials,)`` trial counts.
    """
    fpr, fnr, _ = det_curve(scores, labels, weights)
    return _min_dcf_from_det(fpr, fnr, p_target, c_miss, c_fa)


def _min_dcf_from_det(fpr: np.ndarray, fnr: np.ndarray, p_target: float, c_miss: float = 1.0,
                      c_fa: float = 1.0) -> float:
    """:func:`compute_min_dcf` on the operating points of :func:`det_curve`."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target={p_target!r} must lie strictly between 0 and 1")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss!r}, c_fa={c_fa!r}")
    dcf = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr  # (K+1,)
    default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf.min() / default)


def evaluate_scores(scores, labels, p_targets: tuple[float, ...] = (0.01, 0.05)) -> dict[str, float]:
    """The numbers the paper reports for a trial list: ``{"eer_percent", "eer_threshold", "min_dcf_0.01",
    "min_dcf_0.05", "n_trials", "n_targets"}`` (one ``min_dcf_<p>`` per entry of ``p_targets``, C_miss = C_fa = 1).
    """
    eer, threshold = compute_eer(scores, labels)
    y = _check_inputs(scores, labels)[1]
    out = {"eer_percent": 100.0 * eer, "eer_threshold": threshold}
    for p in p_targets:
        out[f"min_dcf_{p:g}"] = compute_min_dcf(scores, labels, p)
    out.update(n_trials=int(y.size), n_targets=int(y.sum()))
    return out
