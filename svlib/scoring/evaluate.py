"""Evaluate a speaker model on a trial list the way Table 1 does: cosine scoring, then AS-norm, then AS-norm + QMF.

:func:`evaluate_model` is the whole protocol in one call (what ``svlib score`` and the book chapters run);
:func:`score_trials` and :func:`fit_qmf` are its two steps for embeddings you already have.

The cohort is the whole training set (VoxCeleb2 dev: 1.09 M utterances), so :func:`evaluate_model` embeds through
an embedding cache on disk (:func:`~svlib.scoring.extract.extract_to_shards`): the cohort is streamed into speaker
means (:func:`~svlib.scoring.norm.cohort_from_shards`), QMF reads only the calibration trials' embeddings, and under
torchrun every rank extracts a share of the shards while rank 0 alone scores.

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
from svlib.core.distributed import init_distributed, module_device
from svlib.scoring.extract import (
    Segment,
    ShardCache,
    cosine_scores,
    embedding_cache,
    enroll_embeddings,
    extract_cached,
    model_fingerprint,
    probe_duration,
)
from svlib.scoring.bootstrap import SpeakerBootstrap, bootstrap_trials
from svlib.scoring.metrics import evaluate_scores
from svlib.scoring.norm import Cohort, asnorm_scores, cohort_from_shards, make_cohort
from svlib.scoring.qmf import (
    QMF,
    CalibrationSet,
    calibration_features,
    embedding_magnitudes,
    make_calibration_trials,
    trial_quality_features,
)

logger = logging.getLogger(__name__)

__all__ = ["Evaluation", "calibration_crops", "evaluate_model", "fit_qmf", "score_trials", "utterance_durations"]

Extractor = Callable[[Mapping[str, str | Path | Segment]], dict[str, torch.Tensor]]
"""``{key: path or Segment}`` → ``{key: (E,) raw embedding}`` (e.g.
:func:`~svlib.scoring.extract.extract_embeddings` with a model bound)."""


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
    bootstrap: dict | None = None
    """how the intervals in :attr:`metrics` were drawn (:meth:`add_intervals`): speakers, resamples, level, seed."""

    def add_intervals(self, trials: TrialList, utt2spk: Mapping[str, str], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> SpeakerBootstrap:
        """Speaker-level bootstrap intervals (:func:`~svlib.scoring.bootstrap.speaker_bootstrap`) of every scoring
        method, resampled together: each ``metrics[method]`` gains ``<metric>_low`` and ``<metric>_high`` for
        ``eer_percent``, ``min_dcf_0.01`` and ``min_dcf_0.05`` (scalars, so that a results record holds them);
        returns the bootstrap (for paired differences of the methods)."""
        boot = bootstrap_trials(self.scores, trials, utt2spk, n_boot=n_boot, level=level, seed=seed)
        self.take_intervals(boot, seed)
        return boot

    def take_intervals(self, boot: SpeakerBootstrap, seed: int, names: Mapping[str, str] | None = None) -> None:
        """Copy each method's intervals from ``boot`` (drawn with ``seed``) into :attr:`metrics`; ``names`` maps a
        method to its name in ``boot`` (default: the method's own)."""
        for method in self.metrics:
            name = (names or {}).get(method, method)
            for metric in boot.metrics:
                interval = boot.interval(name, metric)
                self.metrics[method][f"{metric}_low"] = interval.low
                self.metrics[method][f"{metric}_high"] = interval.high
        self.bootstrap = {"speakers": boot.n_speakers, "resamples": boot.n_boot, "level": boot.level, "seed": seed}

    def to_dict(self) -> dict:
        """JSON-ready summary (metrics, cohort size, QMF weights, bootstrap settings); scores are left out."""
        out: dict = {"results": self.metrics}
        if self.bootstrap is not None:
            out["bootstrap"] = self.bootstrap
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


def calibration_crops(cal: CalibrationSet, utt2path: Mapping[str, str | Path]) -> dict[str, Segment]:
    """``{key: Segment}`` of the calibration segments that are crops (the whole utterances are in the cohort)."""
    return {k: seg for k, seg in cal.sources(utt2path).items() if k != cal.segments[k][0]}


def fit_qmf(
    extract: Extractor,
    cohort_emb: Mapping[str, torch.Tensor] | ShardCache,
    utt2spk: Mapping[str, str],
    utt2path: Mapping[str, str | Path],
    n_trials: int = 10_000,
    top_n: int = 300,
    seed: int = 0,
    max_seconds: float = 60.0,
    *,
    cohort: Cohort | None = None,
    durations: Mapping[str, float] | None = None,
    calibration: CalibrationSet | None = None,
) -> QMF:
    """Fit QMF on calibration trials drawn from the training set (short crops and whole utterances).

    Whole-utterance sides are read from ``cohort_emb`` (from a :class:`~svlib.scoring.extract.ShardCache`, only the
    rows they need); short crops are embedded with ``extract``.

    Args:
        extract: embeds ``{key: Segment}`` (see :data:`Extractor`).
        cohort_emb: the training utterances' raw embeddings (the AS-norm cohort's): ``{utt: (E,)}`` or the
            embedding cache they were extracted into.
        utt2spk: ``{utt: speaker}`` of the training set.
        utt2path: ``{utt: path}`` of the training set (``wav.scp``).
        n_trials: calibration trials (half target).
        top_n: AS-norm top-N (as for the evaluation trials).
        seed: seed of the calibration-trial draw.
        max_seconds: utterance duration cap (as in extraction).
        cohort: the AS-norm cohort, when already built (default: built from ``cohort_emb``).
        durations: ``{utt: seconds}`` of the training utterances, capped at ``max_seconds`` (default: the cache's,
            or read from the audio headers).
        calibration: the calibration trials, when already drawn (default:
            :func:`~svlib.scoring.qmf.make_calibration_trials` with ``n_trials`` and ``seed``).
    """
    cached = isinstance(cohort_emb, ShardCache)
    if cohort is None:
        cohort = cohort_from_shards(cohort_emb.iter_shards(), utt2spk) if cached else make_cohort(cohort_emb, utt2spk)
    if calibration is None:
        if durations is None:
            durations = cohort_emb.durations() if cached else utterance_durations(utt2path, utt2spk, max_seconds)
        calibration = make_calibration_trials(utt2spk, durations, n_trials, seed=seed)
    crops = calibration_crops(calibration, utt2path)
    whole = [k for k in calibration.segments if k not in crops]
    cal_emb = cohort_emb.load(whole, strict=False) if cached else {k: cohort_emb[k] for k in whole if k in cohort_emb}
    crops.update({k: Segment(utt2path[k]) for k in whole if k not in cal_emb})  # not in the cohort: extract them
    cal_emb.update(extract(crops) if crops else {})
    return QMF().fit(*calibration_features(calibration, cal_emb, cohort, top_n=top_n))


def score_trials(
    emb: Mapping[str, torch.Tensor],
    trials: TrialList,
    *,
    cohort_emb: Mapping[str, torch.Tensor] | None = None,
    cohort_utt2spk: Mapping[str, str] | None = None,
    cohort: Cohort | None = None,
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
        cohort: the AS-norm cohort itself, e.g. from :func:`~svlib.scoring.norm.cohort_from_shards` (instead of
            ``cohort_emb`` and ``cohort_utt2spk``).
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
    if cohort is None and cohort_emb is None:
        if qmf is not None:
            raise ValueError("QMF uses the AS-norm cohort statistics: give a cohort (or cohort_emb and cohort_utt2spk)")
        return result
    if cohort is None:
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
    cache_dir: str | Path | None = None,
    qmf: bool = True,
    top_n: int = 300,
    calibration_trials: int = 10_000,
    calibration_seed: int = 0,
    max_seconds: float = 60.0,
    batch_seconds: float = 120.0,
    shard_size: int = 10_000,
    device: str | torch.device | None = None,
    progress: bool = True,
    bootstrap: int = 0,
    model_id: str | None = None,
) -> Evaluation | None:
    """The paper's evaluation protocol (§3.3, Table 1) for a speaker model and Kaldi data directories.

    Embeds every utterance of ``eval_dir`` the trials need, scores the trials by cosine; with ``cohort_dir``
    (the training set) also by AS-norm, and with ``qmf`` by AS-norm + QMF fitted on calibration trials drawn from
    ``cohort_dir``.

    Embeddings go through embedding caches (:func:`~svlib.scoring.extract.extract_cached`) under ``cache_dir``:
    one each for the evaluation set, the cohort and the QMF calibration crops. The cohort is streamed
    into speaker means (memory: one shard and one row per speaker), and QMF reads from the cohort cache only the
    whole utterances its calibration trials use. Under torchrun every rank must call this function: each extracts
    its share of every set's shards, then rank 0 scores and the other ranks return ``None``.

    Args:
        model: a :class:`~svlib.model.speaker.SpeakerModel`.
        eval_dir: Kaldi data directory of the evaluation utterances (its ``wav.scp`` is used).
        trials: a trial-list file (any format :func:`~svlib.data.lists.read_trials` reads) or a trial list.
        cohort_dir: Kaldi data directory of the training set (``wav.scp`` + ``utt2spk``), or ``None``.
        cache_dir: where the embedding caches are kept, so that a later run resumes or reuses them (default: a
            temporary folder, removed at the end).
        qmf: add QMF calibration (needs ``cohort_dir``).
        top_n: AS-norm top-N.
        calibration_trials, calibration_seed: QMF calibration-trial count and seed.
        max_seconds, batch_seconds, device, progress: as in :func:`~svlib.scoring.extract.extract_embeddings`.
        shard_size: utterances per cache shard (:func:`~svlib.scoring.extract.extract_to_shards`).
        bootstrap: resamples of the speaker-level bootstrap (:meth:`Evaluation.add_intervals`, speakers from
            ``eval_dir/utt2spk``); 0 (default): no intervals.
        model_id: ``model``'s :func:`~svlib.scoring.extract.model_fingerprint`, when already computed (hashing every
            weight of a large model takes seconds; :func:`~svlib.scoring.compare.compare_systems` hashes each model
            once for all its lists).

    Returns:
        The :class:`Evaluation` (``None`` on torchrun ranks other than 0).
    """
    trials = trials if isinstance(trials, TrialList) else read_trials(trials)
    eval_scp = read_key_value(Path(eval_dir) / "wav.scp", "wav.scp")
    eval_spk = read_key_value(Path(eval_dir) / "utt2spk", "utt2spk") if bootstrap else None
    needed = trials.utterances()
    missing = sorted(needed - set(eval_scp))
    if missing:
        raise KeyError(f"{eval_dir}/wav.scp lacks {len(missing)} utterances of the trials, e.g. {missing[:5]}")
    cohort_scp = utt2spk = None
    if cohort_dir is not None:
        cohort_scp = read_key_value(Path(cohort_dir) / "wav.scp", "wav.scp")
        utt2spk = read_key_value(Path(cohort_dir) / "utt2spk", "utt2spk")
        missing = sorted(set(utt2spk) - set(cohort_scp))
        if missing:
            raise KeyError(f"{cohort_dir}/wav.scp lacks {len(missing)} utterances of its utt2spk, e.g. {missing[:5]}")
    elif qmf:
        logger.info("no cohort_dir: cosine scoring only")
    device = torch.device(device) if device is not None else module_device(model)
    rank, _ = init_distributed(device)
    settings = dict(shard_size=shard_size, batch_seconds=batch_seconds, max_seconds=max_seconds, device=device,
                    progress=progress, model_id=model_id or model_fingerprint(model))

    with embedding_cache(cache_dir, device) as root:
        eval_cache = extract_cached(model, {u: eval_scp[u] for u in needed}, root, **settings)
        cohort_cache = calibration = crop_cache = None
        if cohort_dir is not None:
            cohort_cache = extract_cached(model, {u: cohort_scp[u] for u in utt2spk}, root, **settings)
            if qmf:  # every rank draws the same calibration trials and extracts its share of the crops
                calibration = make_calibration_trials(utt2spk, cohort_cache.durations(), calibration_trials,
                                                      seed=calibration_seed)
                crops = calibration_crops(calibration, cohort_scp)
                crop_cache = extract_cached(model, crops, root, **settings) if crops else None
        if rank != 0:
            return None

        emb = eval_cache.to_dict()
        if cohort_cache is None:
            result = score_trials(emb, trials)
        else:
            cohort = cohort_from_shards(cohort_cache.iter_shards(), utt2spk)
            fitted = durations = None
            if qmf:
                fitted = fit_qmf(lambda sources: crop_cache.load(sources), cohort_cache, utt2spk, cohort_scp,
                                 top_n=top_n, max_seconds=max_seconds, cohort=cohort, calibration=calibration)
                eval_durations = eval_cache.durations()
                durations = {u: eval_durations[u] for u in needed}
            result = score_trials(emb, trials, cohort=cohort, top_n=top_n, qmf=fitted, durations=durations)
    if bootstrap:
        result.add_intervals(trials, eval_spk, n_boot=bootstrap)
    return result
