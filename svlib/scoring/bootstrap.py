"""Confidence intervals for EER and minDCF by resampling speakers, and paired intervals for differences.

Trials of one speaker are not independent: they share the speaker's voice, session and channel, so resampling
*trials* treats a list of 900 trials from 15 people as if it held 900 independent draws and gives intervals far too
narrow. The bootstrap here resamples *speakers*, in the spirit of the "subsets bootstrap" of Bolle, Ratha &
Pankanti for biometric error rates (resample the groups of correlated trials, not the trials): each replicate draws the speakers of the list with replacement, ``m_s`` copies
of speaker ``s``, and counts every trial as often as its speakers' copies can form it:

* a target trial of speaker ``s`` (enrolment and test from ``s``): ``m_s`` times, once per copy;
* a non-target trial of speakers ``a`` and ``b``: ``m_a · m_b`` times, once per pair of copies.

The replicate's EER and minDCF are computed exactly on those integer weights
(:func:`svlib.scoring.metrics.det_curve` with ``weights``, the same numbers as the list with each trial repeated).
The interval is the percentile interval of the replicates; the point estimate is the metric on the list itself.

Several systems scored on the same trials are resampled together, so the difference of two systems in one replicate
is a *paired* difference: :meth:`SpeakerBootstrap.difference` gives its interval, and a difference is real at the
chosen level only when that interval excludes 0.

Typical use::

    boot = speaker_bootstrap({"s2": scores_s2, "s3": scores_s3}, labels, enroll_speakers, test_speakers)
    boot.interval("s3", "eer_percent")            # Interval(estimate, low, high, level)
    boot.difference("s3", "s2", "eer_percent")    # s3 minus s2, paired
    boot.table()                                  # systems x metrics, "estimate [low, high]"

``svlib score --bootstrap N`` and :meth:`svlib.scoring.evaluate.Evaluation.add_intervals` put the intervals on
every scoring method of a trial list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from svlib.scoring.metrics import _check_inputs, _eer_from_det, _min_dcf_from_det, det_points

logger = logging.getLogger(__name__)

__all__ = ["Interval", "SpeakerBootstrap", "bootstrap_trials", "speaker_bootstrap", "speaker_weights",
           "trial_speakers"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval at ``level`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        """Whether 0 lies outside the interval (for a difference: the difference is real at this level)."""
        return self.low > 0.0 or self.high < 0.0

    def format(self, digits: int = 2) -> str:
        """``"5.61 [4.02, 7.60]"``."""
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.format()


def metric_digits(metric: str) -> int:
    """Decimals a metric is shown with: 2 for an EER in %, 3 for a minDCF."""
    return 2 if metric == "eer_percent" else 3


def trial_speakers(trials: Sequence, utt2spk: Mapping[str, str],
                   enroll_map: Mapping[str, Sequence[str]] | None = None) -> tuple[list[str], list[str]]:
    """The enrolment and test speaker of each trial (``Trial(enroll, test, target)`` or ``(enroll, test, ...)``),
    looked up in ``utt2spk``. An enrolment id of ``enroll_map`` (CN-Celeb) is the speaker of its utterances; any
    other enrolment id that is not an utterance is taken as its own speaker."""
    def enroll_speaker(e: str) -> str:
        if enroll_map is not None and e in enroll_map:
            speakers = {utt2spk[u] for u in enroll_map[e] if u in utt2spk}
            if len(speakers) != 1:
                raise ValueError(f"enrollment {e!r} has utterances of {len(speakers)} speakers in utt2spk "
                                 f"({sorted(speakers)[:3]}); expected exactly one")
            return speakers.pop()
        return utt2spk.get(e, e)

    enroll, test = [], []
    for trial in trials:
        e, t = (trial.enroll, trial.test) if hasattr(trial, "enroll") else (trial[0], trial[1])
        if t not in utt2spk:
            raise KeyError(f"test utterance {t!r} of a trial has no speaker in utt2spk")
        enroll.append(enroll_speaker(e))
        test.append(utt2spk[t])
    return enroll, test


def speaker_weights(counts: np.ndarray, enroll_idx: np.ndarray, test_idx: np.ndarray,
                    labels: np.ndarray) -> np.ndarray:
    """Trial weights ``(n_trials,)`` of one resample with ``counts[s]`` copies of speaker ``s``: ``m_s`` for a
    target trial, ``m_a · m_b`` for a non-target trial (module docstring)."""
    return np.where(labels, counts[enroll_idx], counts[enroll_idx] * counts[test_idx]).astype(np.float64)


@dataclass
class _Prepared:
    """One system's scores sorted once: the distinct scores and each trial's index into them."""

    unique: np.ndarray
    inverse: np.ndarray

    def metrics(self, labels: np.ndarray, weights: np.ndarray | None, p_targets: Sequence[float]) -> list[float]:
        fpr, fnr, thresholds = det_points(self.unique, self.inverse, labels, weights)
        eer, _ = _eer_from_det(fpr, fnr, thresholds)
        return [100.0 * eer] + [_min_dcf_from_det(fpr, fnr, p) for p in p_targets]


@dataclass
class SpeakerBootstrap:
    """The replicates of a speaker-level bootstrap of one or more systems on one trial list.

    ``estimates[system][metric]`` is the metric on the list itself, ``replicates[system][metric]`` its ``(n_boot,)``
    values over the resamples (the same resamples for every system). Metrics: ``eer_percent`` and
    ``min_dcf_<p>`` for each ``p_target``.
    """

    estimates: dict[str, dict[str, float]]
    replicates: dict[str, dict[str, np.ndarray]]
    level: float
    n_speakers: int
    n_boot: int
    metrics: list[str] = field(default_factory=list)

    def _interval(self, estimate: float, values: np.ndarray, level: float | None) -> Interval:
        level = self.level if level is None else level
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        return Interval(float(estimate), float(low), float(high), level)

    def _check(self, system: str, metric: str) -> None:
        if system not in self.estimates:
            raise KeyError(f"no system {system!r}; bootstrapped: {sorted(self.estimates)}")
        if metric not in self.metrics:
            raise KeyError(f"no metric {metric!r}; bootstrapped: {self.metrics}")

    def interval(self, system: str, metric: str = "eer_percent", level: float | None = None) -> Interval:
        """The metric of ``system`` with its percentile interval."""
        self._check(system, metric)
        return self._interval(self.estimates[system][metric], self.replicates[system][metric], level)

    def difference(self, system: str, baseline: str, metric: str = "eer_percent",
                   level: float | None = None) -> Interval:
        """``system`` minus ``baseline`` (negative: ``system`` has the lower EER / cost), paired over the same
        resamples; real at ``level`` when :attr:`Interval.excludes_zero`."""
        self._check(system, metric)
        self._check(baseline, metric)
        estimate = self.estimates[system][metric] - self.estimates[baseline][metric]
        values = self.replicates[system][metric] - self.replicates[baseline][metric]
        return self._interval(estimate, values, level)

    def verdict(self, system: str, baseline: str, metric: str = "eer_percent", level: float | None = None) -> str:
        """One sentence on ``system`` − ``baseline``: the paired difference with its interval, and whether it is
        real (the interval excludes 0) — what the book prints instead of calling a difference by eye."""
        d = self.difference(system, baseline, metric, level)
        label = "EER (% points)" if metric == "eer_percent" else metric.replace("min_dcf_", "minDCF(") + ")"
        text = f"{system} − {baseline}, {label}: {d.format(metric_digits(metric))}"
        if not d.excludes_zero:
            return f"{text}; not a real difference (the {100 * d.level:g} % interval holds 0)"
        better = system if d.estimate < 0 else baseline
        return f"{text}; {better} is better (the {100 * d.level:g} % interval excludes 0)"

    def differences(self, pairs: Sequence[tuple[str, str]], metrics: Sequence[str] = ("eer_percent",),
                    level: float | None = None) -> pd.DataFrame:
        """Paired differences ``system − baseline`` for each pair (rows) and metric: ``"estimate [low, high]"`` and
        whether 0 lies outside the interval (``real``)."""
        rows = {}
        for system, baseline in pairs:
            row = {}
            for metric in metrics:
                d = self.difference(system, baseline, metric, level)
                row[(metric, "difference [interval]")] = d.format(metric_digits(metric))
                row[(metric, "real")] = "yes" if d.excludes_zero else "no"
            rows[f"{system} − {baseline}"] = row
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.columns = pd.MultiIndex.from_tuples(table.columns)
        return table

    def table(self, digits: int = 2) -> pd.DataFrame:
        """Systems × metrics, each cell ``"estimate [low, high]"``."""
        rows = {s: {m: self.interval(s, m).format(digits if m == "eer_percent" else 3) for m in self.metrics}
                for s in self.estimates}
        return pd.DataFrame.from_dict(rows, orient="index")


def speaker_bootstrap(
    scores: Mapping[str, object] | object,
    labels,
    enroll_speakers: Sequence[str],
    test_speakers: Sequence[str],
    n_boot: int = 1000,
    level: float = 0.95,
    p_targets: Sequence[float] = (0.01, 0.05),
    seed: int = 0,
) -> SpeakerBootstrap:
    """Bootstrap EER and minDCF over speakers (module docstring).

    Args:
        scores: ``{system: (n_trials,) scores}`` of systems scored on the same trials, or one ``(n_trials,)`` array
            (the system is then called ``"system"``).
        labels: ``(n_trials,)`` 1/True for target trials.
        enroll_speakers, test_speakers: the speaker of each trial's two sides (:func:`trial_speakers`).
        n_boot: number of resamples.
        level: coverage of the percentile intervals.
        p_targets: the minDCF operating points (C_miss = C_fa = 1).
        seed: the resampling generator's seed (the same seed gives the same intervals).
    """
    if not isinstance(scores, Mapping):
        scores = {"system": scores}
    if not scores:
        raise ValueError("no system to bootstrap; expected {name: scores}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie strictly between 0 and 1")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r}; expected at least 1 resample")
    prepared, y = {}, None
    for name, s in scores.items():
        s, y = _check_inputs(s, labels)
        unique, inverse = np.unique(s, return_inverse=True)
        prepared[name] = _Prepared(unique, inverse.ravel())
    if len(enroll_speakers) != y.size or len(test_speakers) != y.size:
        raise ValueError(f"{y.size} trials but {len(enroll_speakers)} enrolment and {len(test_speakers)} test "
                         "speakers; expected one of each per trial")
    speakers, index = np.unique(np.asarray([*enroll_speakers, *test_speakers], dtype=object).astype(str),
                                return_inverse=True)
    enroll_idx, test_idx = index[: y.size], index[y.size:]
    names = ["eer_percent"] + [f"min_dcf_{p:g}" for p in p_targets]
    estimates = {n: dict(zip(names, p.metrics(y, None, p_targets))) for n, p in prepared.items()}
    rng = np.random.default_rng(seed)
    values = {n: np.empty((n_boot, len(names))) for n in prepared}
    done = redrawn = 0
    while done < n_boot:
        counts = np.bincount(rng.integers(0, speakers.size, speakers.size), minlength=speakers.size)
        w = speaker_weights(counts, enroll_idx, test_idx, y)
        if w[y].sum() == 0 or w[~y].sum() == 0:  # a resample without targets or non-targets: draw again
            redrawn += 1
            if redrawn > 100 * n_boot:
                raise ValueError(f"{speakers.size} speakers rarely give a resample with both targets and "
                                 "non-targets; too few speakers for a speaker-level bootstrap")
            continue
        for n, p in prepared.items():
            values[n][done] = p.metrics(y, w, p_targets)
        done += 1
    if redrawn:
        logger.info("speaker bootstrap: %d resamples without targets or non-targets drawn again", redrawn)
    replicates = {n: {m: v[:, j] for j, m in enumerate(names)} for n, v in values.items()}
    return SpeakerBootstrap(estimates, replicates, level, int(speakers.size), n_boot, names)


def bootstrap_trials(scores: Mapping[str, object], trials, utt2spk: Mapping[str, str], **kwargs) -> SpeakerBootstrap:
    """:func:`speaker_bootstrap` of systems scored on a :class:`~svlib.data.lists.TrialList`: labels and the
    speakers of both sides are read from the list and ``utt2spk`` (an enrolment id of ``enroll_map`` included);
    ``kwargs`` go to :func:`speaker_bootstrap` (``n_boot``, ``level``, ``p_targets``, ``seed``)."""
    enroll, test = trial_speakers(trials.trials, utt2spk, trials.enroll_map)
    scores = {name: s.numpy() if hasattr(s, "numpy") else s for name, s in scores.items()}
    return speaker_bootstrap(scores, trials.labels(), enroll, test, **kwargs)
