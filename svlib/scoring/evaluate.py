"""Evaluate a speaker model on a trial list the way Table 1 does: cosine scoring, then AS-norm, then AS-norm + QMF.

:func:`evaluate_model` is the whole protocol in one call (what ``svlib score`` and the book chapters run);
:func:`score_trials` and :func:`fit_qmf` are its two steps for embeddings you already have.

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from svlib.data.lists import TrialList, read_key_value, read_trials
from svlib.scoring.extract import Segment, cosine_scores, enroll_embeddings, extract_embeddings, probe_duration
from svlib.scoring.metrics import evaluate_scores
from svlib.scoring.norm import asnorm_scores, make_cohort
from svlib.scoring.qmf import (
    QMF,
    calibration_features,
    embedding_magnitudes,
    make_calibration_trials,
    trial_quality_features,
)

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "evaluate_model", "fit_qmf", "score_trials", "utterance_durations"]

Extractor = Callable[[Mapping[str, str | Path | Segment]], dict[str, torch.Tensor]]
"""``{key: path or Segment}`` → ``{key: (E,) raw embedding}`` (e.g. :func:`extract_embeddings` with a model bound)."""


@dataclass
class Evaluation:
    """Scores and metrics of one trial list, per scoring method (``cosine``, ``asnorm``, ``asnorm+qmf``)."""

    labels: np.ndarray
    """``(n_trials,)`` bool, True for target trials."""
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    """``{method: (n_trials,) scores}`` in trial order."""
    metrics: dict[str, dict] = field(default_factory=dict)
    """``{method: evaluate_scores(...)}``: EER (%), minDCF(0.01), minDCF(0.05), counts."""
    qmf: QMF | None = None
    """the fitted QMF calibration, when it was used."""
    cohort_speakers: int | None = None
    """AS-norm cohort size (speakers), when AS-norm was used."""

    def to_dict(self) -> dict:
        """JSON-ready summary (metrics, cohort size, QMF weights); scores are left out."""
        out: dict = {"results": self.metrics}
        if self.cohort_speakers is not None:
            out["cohort_speakers"] = self.cohort_speakers
        if self.qmf is not None:
            out["qmf"] = self.qmf.to_dict()
        return out


def utterance_durations(utt2path: Mapping[str, str | Path], keys, max_seconds: float = 60.0) -> dict[str, float]:
    """``{key: seconds}`` read from the audio headers, capped at ``max_seconds`` (what the model saw)."""
    missing = sorted(set(keys) - set(utt2path))
    if missing:
        raise KeyError(f"no audio path for {len(missing)} utterances, e.g. {missing[:5]}")
    return {k: min(probe_duration(utt2path[k]), max_seconds) for k in keys}


def fit_qmf(
    extract: Extractor,
    cohort_emb: Mapping[str, torch.Tensor],
    utt2spk: Mapping[str, str],
    utt2path: Mapping[str, str | Path],
    n_trials: int = 10_000,
    top_n: int = 300,
    seed: int = 0,
    max_seconds: float = 60.0,
) -> QMF:
    """Fit QMF on calibration trials drawn from the training set (short crops and whole utterances).

    Whole-utterance sides reuse ``cohort_emb``; short crops are embedded with ``extract``.

    Args:
        extract: embeds ``{key: Segment}`` (see :data:`Extractor`).
        cohort_emb: ``{utt: (E,) raw embedding}`` of the training utterances (the AS-norm cohort's).
        utt2spk: ``{utt: speaker}`` of the training set.
        utt2path: ``{utt: path}`` of the training set (``wav.scp``).
        n_trials: calibration trials (half target).
        top_n: AS-norm top-N (as for the evaluation trials).
        seed: seed of the calibration-trial draw.
        max_seconds: utterance duration cap (as in extraction).
    """
    cohort = make_cohort(cohort_emb, utt2spk)
    durations = utterance_durations(utt2path, utt2spk, max_seconds)
    cal = make_calibration_trials(utt2spk, durations, n_trials, seed=seed)
    crops = {k: s for k, s in cal.sources(utt2path).items() if k not in cohort_emb}
    cal_emb = {**{k: cohort_emb[k] for k in cal.segments if k in cohort_emb}, **(extract(crops) if crops else {})}
    return QMF().fit(*calibration_features(cal, cal_emb, cohort, top_n=top_n))


def score_trials(
    emb: Mapping[str, torch.Tensor],
    trials: TrialList,
    *,
    cohort_emb: Mapping[str, torch.Tensor] | None = None,
    cohort_utt2spk: Mapping[str, str] | None = None,
    top_n: int = 300,
    qmf: QMF | None = None,
    durations: Mapping[str, float] | None = None,
) -> Evaluation:
    """Score ``trials`` by cosine, and by AS-norm (and QMF) when a cohort (and a fitted QMF) is given.

    Args:
        emb: ``{utt: (E,) raw embedding}`` of every utterance the trials need.
        trials: the trial list; with an enrollment map, enrollment sides are averaged
            (:func:`~svlib.scoring.extract.enroll_embeddings`, CN-Celeb).
        cohort_emb, cohort_utt2spk: training-set embeddings and speakers (AS-norm cohort, §3.3).
        top_n: AS-norm top-N cohort scores per side.
        qmf: a fitted :class:`~svlib.scoring.qmf.QMF` (needs the cohort and ``durations``).
        durations: ``{utt: seconds}`` of the evaluation utterances (QMF features; enrollments sum theirs).
    """
    labels = trials.labels()
    utt_emb = dict(emb)
    if trials.enroll_map is not None:
        emb = {**emb, **enroll_embeddings(emb, trials.enroll_map)}
    result = Evaluation(labels=labels)

    def add(name: str, scores: torch.Tensor) -> None:
        result.scores[name] = scores
        result.metrics[name] = evaluate_scores(scores, labels)

    add("cosine", cosine_scores(emb, trials))
    if cohort_emb is None:
        if qmf is not None:
            raise ValueError("QMF uses the AS-norm cohort statistics: give cohort_emb and cohort_utt2spk too")
        return result
    if cohort_utt2spk is None:
        raise ValueError("AS-norm needs cohort_utt2spk (the training speakers) next to cohort_emb")
    cohort = make_cohort(cohort_emb, cohort_utt2spk)
    norm = asnorm_scores(emb, trials, cohort, top_n=top_n)
    result.cohort_speakers = len(cohort.speakers)
    add("asnorm", norm.scores)
    if qmf is None:
        return result
    if durations is None:
        raise ValueError("QMF needs the durations of the evaluation utterances")
    durations = dict(durations)
    magnitudes = embedding_magnitudes(utt_emb)
    for spk, utts in (trials.enroll_map or {}).items():
        durations[spk] = sum(durations[u] for u in utts)
        magnitudes[spk] = sum(magnitudes[u] for u in utts) / len(utts)
    features = trial_quality_features(trials, norm.scores, norm.enroll_mean, norm.test_mean, magnitudes, durations)
    add("asnorm+qmf", qmf.predict(features))
    result.qmf = qmf
    return result


def evaluate_model(
    model: torch.nn.Module,
    eval_dir: str | Path,
    trials: str | Path | TrialList,
    *,
    cohort_dir: str | Path | None = None,
    qmf: bool = True,
    top_n: int = 300,
    calibration_trials: int = 10_000,
    calibration_seed: int = 0,
    max_seconds: float = 60.0,
    batch_seconds: float = 120.0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Evaluation:
    """The paper's evaluation protocol (§3.3, Table 1) for a speaker model and Kaldi data directories.

    Embeds every utterance of ``eval_dir`` the trials need, scores the trials by cosine; with ``cohort_dir``
    (the training set) also by AS-norm, and with ``qmf`` by AS-norm + QMF fitted on calibration trials drawn from
    ``cohort_dir``.

    Args:
        model: a :class:`~svlib.model.SpeakerModel`.
        eval_dir: Kaldi data directory of the evaluation utterances (its ``wav.scp`` is used).
        trials: a trial-list file (any format :func:`~svlib.data.lists.read_trials` reads) or a trial list.
        cohort_dir: Kaldi data directory of the training set (``wav.scp`` + ``utt2spk``), or ``None``.
        qmf: add QMF calibration (needs ``cohort_dir``).
        top_n: AS-norm top-N.
        calibration_trials, calibration_seed: QMF calibration-trial count and seed.
        max_seconds, batch_seconds, device, progress: as in :func:`~svlib.scoring.extract.extract_embeddings`.
    """
    trials = trials if isinstance(trials, TrialList) else read_trials(trials)
    eval_scp = read_key_value(Path(eval_dir) / "wav.scp", "wav.scp")
    needed = trials.utterances()
    missing = sorted(needed - set(eval_scp))
    if missing:
        raise KeyError(f"{eval_dir}/wav.scp lacks {len(missing)} utterances of the trials, e.g. {missing[:5]}")

    def extract(sources):
        return extract_embeddings(
            model, sources, batch_seconds=batch_seconds, max_seconds=max_seconds, device=device, progress=progress
        )

    emb = extract({u: eval_scp[u] for u in sorted(needed)})
    if cohort_dir is None:
        if qmf:
            logger.info("no cohort_dir: cosine scoring only")
        return score_trials(emb, trials)
    cohort_scp = read_key_value(Path(cohort_dir) / "wav.scp", "wav.scp")
    utt2spk = read_key_value(Path(cohort_dir) / "utt2spk", "utt2spk")
    cohort_emb = extract({u: cohort_scp[u] for u in utt2spk})
    fitted = durations = None
    if qmf:
        fitted = fit_qmf(extract, cohort_emb, utt2spk, cohort_scp, calibration_trials, top_n, calibration_seed,
                         max_seconds)
        durations = utterance_durations(eval_scp, needed, max_seconds)
    return score_trials(
        emb, trials, cohort_emb=cohort_emb, cohort_utt2spk=utt2spk, top_n=top_n, qmf=fitted, durations=durations
    )
