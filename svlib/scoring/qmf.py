"""Quality measure functions (QMF) score calibration (paper ref. [35]; Table 1, "+AS-norm+QMF").

A logistic regression maps a trial's score and *quality measures* to a calibrated log-odds. The quality measures
let the decision threshold move with the conditions of the trial: a short or noisy utterance shifts the
score distributions, and the regression learns by how much.

The features are symmetric in the two sides of a trial, as in WeSpeaker's QMF (RECIPE.md "Facts added after the
first version"): a trial ``(a, b)`` and its swap ``(b, a)`` get the same feature row, so the calibrated score does
not depend on which side is called the enrollment. Each quality measure ``q`` enters as ``min(q_e, q_t)`` and
``max(q_e, q_t)`` (plus, for durations, two other symmetric functions). The feature vector, in the order of
:data:`FEATURE_NAMES` (``d`` = duration in seconds capped at 20 s, ``‖e‖`` = norm of the raw embedding, ``μ`` =
top-``N`` cohort mean score of AS-norm):

====  ===================  ==========================================================
col   name                 value
====  ===================  ==========================================================
0     ``score``            the trial score ``s`` (AS-normed in the paper's setting)
1     ``min_duration``     ``min(d_e, d_t)``
2     ``max_duration``     ``max(d_e, d_t)``
3     ``duration_diff``    ``max(d_e, d_t) − min(d_e, d_t) = |d_e − d_t|``
4     ``duration_ratio``   ``min(d_e, d_t) / max(d_e, d_t)``
5     ``min_magnitude``    ``min(‖e_e‖, ‖e_t‖)``
6     ``max_magnitude``    ``max(‖e_e‖, ‖e_t‖)``
7     ``min_cohort_mean``  ``min(μ_e, μ_t)``
8     ``max_cohort_mean``  ``max(μ_e, μ_t)``
====  ===================  ==========================================================

The score itself is symmetric: cosine scoring is, and AS-norm averages the two sides' z-scores.

The regression is fitted on calibration trials drawn from the training set (:func:`make_calibration_trials`):
target and non-target pairs of short (2–4 s) crops and long (whole) segments, so the durations vary as they do
in evaluation. Features are standardised with the calibration set's mean and std; the loss is the mean logistic
loss plus a small L2 penalty on the (standardised) weights, minimised with L-BFGS in float64.

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F

from svlib.scoring.extract import Segment, _trial_pairs
from svlib.scoring.norm import Cohort, asnorm_scores

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_NAMES",
    "quality_features",
    "trial_quality_features",
    "embedding_magnitudes",
    "calibration_features",
    "QMF",
    "CalibrationSet",
    "make_calibration_trials",
]

FEATURE_NAMES: tuple[str, ...] = (
    "score",
    "min_duration",
    "max_duration",
    "duration_diff",
    "duration_ratio",
    "min_magnitude",
    "max_magnitude",
    "min_cohort_mean",
    "max_cohort_mean",
)
"""The QMF feature columns, in order (the table in the module docstring defines each)."""


def _vector(x, name: str, n: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} values; expected {n} (one per trial)")
    return t


def quality_features(
    scores,
    enroll_duration,
    test_duration,
    enroll_magnitude,
    test_magnitude,
    enroll_cohort_mean,
    test_cohort_mean,
    max_duration: float = 20.0,
) -> torch.Tensor:
    """The QMF feature matrix of :data:`FEATURE_NAMES`, symmetric in the two sides of each trial.

    Swapping the ``enroll_*`` and ``test_*`` arguments gives the same matrix: each quality measure enters as the
    min and max over the two sides (see the module docstring for the columns).

    Args:
        scores: ``(n_trials,)`` trial scores (AS-normed in the paper's setting).
        enroll_duration, test_duration: ``(n_trials,)`` seconds of speech per side (capped at ``max_duration``).
        enroll_magnitude, test_magnitude: ``(n_trials,)`` norms of the raw embeddings.
        enroll_cohort_mean, test_cohort_mean: ``(n_trials,)`` top-N cohort mean scores from AS-norm.
        max_duration: duration cap in seconds (20 s in the recipe).

    Returns:
        ``(n_trials, 9)`` float64 features.
    """
    s = _vector(scores, "scores")
    n = s.shape[0]
    d_e = _vector(enroll_duration, "enroll_duration", n).clamp(max=max_duration)
    d_t = _vector(test_duration, "test_duration", n).clamp(max=max_duration)
    if (d_e <= 0).any() or (d_t <= 0).any():
        raise ValueError("durations must be positive (seconds of audio per side)")
    m_e, m_t = _vector(enroll_magnitude, "enroll_magnitude", n), _vector(test_magnitude, "test_magnitude", n)
    c_e, c_t = _vector(enroll_cohort_mean, "enroll_cohort_mean", n), _vector(test_cohort_mean, "test_cohort_mean", n)
    d_min, d_max = torch.minimum(d_e, d_t), torch.maximum(d_e, d_t)
    columns = [
        s,
        d_min,
        d_max,
        d_max - d_min,
        d_min / d_max,
        torch.minimum(m_e, m_t),
        torch.maximum(m_e, m_t),
        torch.minimum(c_e, c_t),
        torch.maximum(c_e, c_t),
    ]
    return torch.stack(columns, dim=1)


def trial_quality_features(
    trials: Iterable,
    scores,
    enroll_cohort_mean,
    test_cohort_mean,
    magnitudes: Mapping[str, float],
    durations: Mapping[str, float],
    max_duration: float = 20.0,
) -> torch.Tensor:
    """:func:`quality_features` for a trial list: durations and embedding magnitudes looked up by key (the rows do
    not depend on which side of a trial is the enrollment).

    Args:
        trials: a :class:`~svlib.data.lists.TrialList` (``Trial`` objects) or ``[(enroll, test[, label]), ...]``.
        scores, enroll_cohort_mean, test_cohort_mean: ``(n_trials,)``, e.g. from
            :class:`~svlib.scoring.norm.ASNormResult` (``scores``, ``enroll_mean``, ``test_mean``).
        magnitudes: ``{key: norm of the raw embedding}`` (see :func:`embedding_magnitudes`).
        durations: ``{key: seconds}`` of audio behind each embedding.
    """
    enroll, test = _trial_pairs(trials)
    for what, table in (("duration", durations), ("embedding magnitude", magnitudes)):
        missing = sorted({k for k in (*enroll, *test) if k not in table})
        if missing:
            raise KeyError(f"no {what} for {len(missing)} trial keys, e.g. {missing[:5]}")
    return quality_features(
        scores,
        [durations[k] for k in enroll],
        [durations[k] for k in test],
        [magnitudes[k] for k in enroll],
        [magnitudes[k] for k in test],
        enroll_cohort_mean,
        test_cohort_mean,
        max_duration=max_duration,
    )


def embedding_magnitudes(emb: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``{key: ‖emb[key]‖}``, the norms of raw (not normalised) embeddings."""
    return {k: float(torch.as_tensor(v).float().norm()) for k, v in emb.items()}


def calibration_features(
    cal: "CalibrationSet", emb: Mapping[str, torch.Tensor], cohort: Cohort, top_n: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """QMF training data from calibration trials: AS-norm them against ``cohort`` and build the features.

    The calibration utterances come from the training set, so each speaker's own mean is in the cohort: its
    top-N statistics are slightly higher than for an unseen test speaker. The regression sees this in the
    cohort-mean features; the paper's recipe accepts it (the cohort and calibration trials share the set).

    Args:
        cal: from :func:`make_calibration_trials`.
        emb: ``{segment key: (E,) raw embedding}`` for every segment of ``cal``.
        cohort: the AS-norm cohort (:func:`~svlib.scoring.norm.make_cohort`).
        top_n: AS-norm top-N.

    Returns:
        ``(features (n, 9), labels (n,))``.
    """
    result = asnorm_scores(emb, cal.trials, cohort, top_n=top_n)
    features = trial_quality_features(
        cal.trials, result.scores, result.enroll_mean, result.test_mean, embedding_magnitudes(emb), cal.durations
    )
    return features, torch.tensor([t[2] for t in cal.trials])


# ----------------------------------------------------------------------------------------------------------------
# The logistic regression
# ----------------------------------------------------------------------------------------------------------------
def logistic_objective(weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor, y: torch.Tensor, l2: float):
    """``mean_i softplus(−y_i (z_i·w + b)) + (l2/2)·‖w‖²`` with ``y ∈ {−1, +1}``; ``z`` is ``(n, F)``."""
    logits = z @ weight + bias  # (n,)
    return F.softplus(-y * logits).mean() + 0.5 * l2 * weight.pow(2).sum()


@dataclass
class QMF:
    """QMF calibration: standardise features, then logistic regression (fitted with :meth:`fit`).

    :meth:`predict` returns log-odds of "target" (the calibrated score): with balanced calibration trials this
    is a log-likelihood ratio; use it like any score (higher = same speaker).
    """

    l2: float = 1e-4
    """L2 penalty on the standardised weights (keeps the fit well-posed when features are collinear)."""
    max_iter: int = 1000
    """L-BFGS iterations at most."""
    feature_names: tuple[str, ...] = FEATURE_NAMES
    """names of the feature columns (checked against the feature count)."""
    mean: torch.Tensor | None = field(default=None, repr=False)
    """``(F,)`` feature means of the calibration set."""
    std: torch.Tensor | None = field(default=None, repr=False)
    """``(F,)`` feature standard deviations (1 where a feature is constant)."""
    weight: torch.Tensor | None = field(default=None, repr=False)
    """``(F,)`` weights on the standardised features."""
    bias: float | None = None

    def __post_init__(self) -> None:
        if self.l2 < 0:
            raise ValueError(f"QMF.l2={self.l2!r} must be >= 0")
        if self.max_iter < 1:
            raise ValueError(f"QMF.max_iter={self.max_iter!r} must be >= 1")
        self.feature_names = tuple(self.feature_names)

    def _check_features(self, features) -> torch.Tensor:
        x = torch.as_tensor(features, dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features have shape {tuple(x.shape)}; expected (n_trials, {len(self.feature_names)}) "
                f"with columns {self.feature_names}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("features hold NaN or inf values")
        return x

    def standardize(self, features) -> torch.Tensor:
        """``(x − mean) / std`` with the calibration set's statistics: ``(n, F)`` → ``(n, F)``."""
        if self.mean is None:
            raise RuntimeError("QMF is not fitted: call fit() or load() first")
        return (self._check_features(features) - self.mean) / self.std

    def fit(self, features, labels) -> "QMF":
        """Fit on calibration trials.

        Args:
            features: ``(n_trials, F)`` from :func:`quality_features`.
            labels: ``(n_trials,)`` 1 = target, 0 = non-target (both present).
        """
        x = self._check_features(features)
        y01 = torch.as_tensor(labels).reshape(-1)
        if y01.shape[0] != x.shape[0]:
            raise ValueError(f"{y01.shape[0]} labels for {x.shape[0]} trials")
        if not torch.isin(y01.unique(), torch.tensor([0, 1], dtype=y01.dtype)).all() or y01.unique().numel() != 2:
            raise ValueError(f"labels must hold both 0 and 1, found {y01.unique().tolist()}")
        y = y01.to(torch.float64) * 2 - 1  # {-1, +1}
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        z = (x - self.mean) / self.std
        weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=self.max_iter,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            loss = logistic_objective(weight, bias, z, y, self.l2)
            loss.backward()
            return loss

        optimizer.step(closure)
        loss = closure()
        grad_norm = torch.cat([weight.grad.reshape(-1), bias.grad.reshape(-1)]).norm().item()
        if grad_norm > 1e-6:
            logger.warning(
                "QMF fit stopped with gradient norm %.2e (loss %.6f); raise max_iter", grad_norm, loss.item()
            )
        self.weight, self.bias = weight.detach(), float(bias.detach())
        logger.info("QMF fitted on %d trials: loss %.4f, weights %s", x.shape[0], loss.item(), self.weight.tolist())
        return self

    def predict(self, features) -> torch.Tensor:
        """Calibrated scores (log-odds of target): ``(n_trials, F)`` → ``(n_trials,)`` float64."""
        if self.weight is None:
            raise RuntimeError("QMF is not fitted: call fit() or load() first")
        return self.standardize(features) @ self.weight + self.bias

    # -- persistence ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        if self.weight is None:
            raise RuntimeError("QMF is not fitted: nothing to save")
        return {
            "l2": self.l2,
            "max_iter": self.max_iter,
            "feature_names": list(self.feature_names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "weight": self.weight.tolist(),
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "QMF dict") -> "QMF":
        required = {"feature_names", "mean", "std", "weight", "bias"}
        missing = required - set(d)
        if missing:
            raise ValueError(f"{source}: missing keys {sorted(missing)}")
        n = len(d["feature_names"])
        for key in ("mean", "std", "weight"):
            if len(d[key]) != n:
                raise ValueError(f"{source}: {key!r} has {len(d[key])} values for {n} features")
        return cls(
            l2=float(d.get("l2", 1e-4)),
            max_iter=int(d.get("max_iter", 1000)),
            feature_names=tuple(d["feature_names"]),
            mean=torch.tensor(d["mean"], dtype=torch.float64),
            std=torch.tensor(d["std"], dtype=torch.float64),
            weight=torch.tensor(d["weight"], dtype=torch.float64),
            bias=float(d["bias"]),
        )

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "QMF":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), source=str(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e


# ----------------------------------------------------------------------------------------------------------------
# Calibration trials
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CalibrationSet:
    """Calibration trials over segments of training utterances."""

    trials: list[tuple[str, str, int]]
    """``(enroll_key, test_key, label)``."""
    segments: dict[str, tuple[str, float, float]]
    """``{key: (utt, start_s, duration_s)}``; a whole utterance has key ``utt`` and start 0."""

    @property
    def durations(self) -> dict[str, float]:
        """``{key: duration_s}`` of every segment (the QMF duration features)."""
        return {k: d for k, (_, _, d) in self.segments.items()}

    def sources(self, utt2path: Mapping[str, str | Path]) -> dict[str, Segment]:
        """``{key: Segment}`` to pass to :func:`~svlib.scoring.extract.extract_embeddings`."""
        missing = sorted({u for u, _, _ in self.segments.values()} - set(utt2path))
        if missing:
            raise KeyError(f"no audio path for {len(missing)} calibration utterances, e.g. {missing[:5]}")
        return {k: Segment(utt2path[u], start, dur) for k, (u, start, dur) in self.segments.items()}


def _draw_segment(rng: random.Random, utt: str, duration: float, short: bool, short_range) -> tuple[str, tuple]:
    if not short:
        return utt, (utt, 0.0, duration)
    crop = min(round(rng.uniform(*short_range), 2), duration)
    start = round(rng.uniform(0.0, max(duration - crop, 0.0)), 2)
    crop = round(min(crop, duration - start), 2)
    return f"{utt}@{start:.2f}+{crop:.2f}", (utt, start, crop)


def make_calibration_trials(
    utt2spk: Mapping[str, str],
    utt2dur: Mapping[str, float],
    n: int,
    seed: int = 0,
    short_long: bool = True,
    short_range: tuple[float, float] = (2.0, 4.0),
) -> CalibrationSet:
    """Draw ``n`` QMF calibration trials from the training set: ``n // 2`` target and the rest non-target.

    Each trial picks two different utterances (same speaker for a target trial, two speakers otherwise). With
    ``short_long`` each side is, with probability ½, a short crop of ``U(short_range)`` seconds at a random
    offset (its cropped duration is recorded) and otherwise the whole utterance; without it both sides are whole
    utterances.

    Args:
        utt2spk: ``{utt: speaker}`` of the training set.
        utt2dur: ``{utt: seconds}``.
        n: number of trials (at least 2).
        seed: seed of the random draw (the result is reproducible).
        short_long: mix short crops and long segments.
        short_range: ``(min, max)`` seconds of a short crop.
    """
    if n < 2:
        raise ValueError(f"n={n!r}: need at least 2 calibration trials (one target, one non-target)")
    if not 0 < short_range[0] <= short_range[1]:
        raise ValueError(f"short_range={short_range!r} must be (min, max) seconds with 0 < min <= max")
    missing = [u for u in utt2spk if u not in utt2dur]
    if missing:
        raise KeyError(f"no duration for {len(missing)} utterances, e.g. {missing[:5]}")
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    speakers = sorted(spk2utt)
    multi = [s for s in speakers if len(spk2utt[s]) >= 2]
    if not multi or len(speakers) < 2:
        raise ValueError(
            f"calibration needs a speaker with 2+ utterances and 2+ speakers; got {len(speakers)} speakers, "
            f"{len(multi)} with 2+ utterances"
        )
    rng = random.Random(seed)
    trials: list[tuple[str, str, int]] = []
    segments: dict[str, tuple[str, float, float]] = {}
    n_target = n // 2
    for i in range(n):
        if i < n_target:
            a, b = rng.sample(spk2utt[rng.choice(multi)], 2)
        else:
            s1, s2 = rng.sample(speakers, 2)
            a, b = rng.choice(spk2utt[s1]), rng.choice(spk2utt[s2])
        keys = []
        for utt in (a, b):
            short = short_long and rng.random() < 0.5
            key, seg = _draw_segment(rng, utt, float(utt2dur[utt]), short, short_range)
            segments[key] = seg
            keys.append(key)
        trials.append((keys[0], keys[1], int(i < n_target)))
    logger.info("drew %d calibration trials (%d targets) over %d segments", n, n_target, len(segments))
    return CalibrationSet(trials=trials, segments=segments)
