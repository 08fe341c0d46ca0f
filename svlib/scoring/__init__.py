"""Scoring and evaluation (paper §3.3, Table 1): embedding extraction, cosine scoring, AS-norm, QMF calibration,
EER / minDCF / DET with speaker-level bootstrap intervals, and loading the authors' released checkpoints.

Typical use::

    trials = read_trials("veri_test2.txt")                     # TrialList of Trial(enroll, test, target)
    labels = trials.labels()                                   # (n_trials,) bool
    emb = extract_embeddings(model, read_key_value("wav.scp")) # {utt: (E,)}
    scores = cosine_scores(emb, trials)                        # (n_trials,)
    eer, threshold = compute_eer(scores, labels)
    min_dcf = compute_min_dcf(scores, labels, p_target=0.01)

Explained in the book chapter "Scoring and calibration".
"""

from svlib.data.lists import read_enroll_map, read_key_value, read_trials
from svlib.scoring.authors import AUTHORS_KEY_MAP, load_authors_checkpoint
from svlib.scoring.baseline import logmel_embeddings
from svlib.scoring.bootstrap import Interval, SpeakerBootstrap, bootstrap_trials, speaker_bootstrap, trial_speakers
from svlib.scoring.compare import Comparison, agreement_by_length, compare_systems, embedding_agreement
from svlib.scoring.evaluate import Evaluation, evaluate_model, fit_qmf, score_trials
from svlib.scoring.extract import (
    Segment,
    ShardCache,
    cached_embeddings,
    cosine_scores,
    embedding_cache,
    enroll_embeddings,
    extract_cached,
    extract_embeddings,
    extract_to_shards,
    model_cache_dir,
)
from svlib.scoring.metrics import compute_eer, compute_min_dcf, det_curve, evaluate_scores
from svlib.scoring.norm import (
    ASNormResult,
    Cohort,
    CohortAccumulator,
    asnorm_scores,
    cohort_from_shards,
    make_cohort,
)
from svlib.scoring.qmf import (
    FEATURE_NAMES,
    QMF,
    CalibrationSet,
    calibration_features,
    make_calibration_trials,
    quality_features,
    trial_quality_features,
)

__all__ = [
    "AUTHORS_KEY_MAP",
    "ASNormResult",
    "CalibrationSet",
    "Comparison",
    "Evaluation",
    "Interval",
    "SpeakerBootstrap",
    "Cohort",
    "CohortAccumulator",
    "FEATURE_NAMES",
    "QMF",
    "Segment",
    "ShardCache",
    "asnorm_scores",
    "calibration_features",
    "cohort_from_shards",
    "compute_eer",
    "compute_min_dcf",
    "cosine_scores",
    "det_curve",
    "embedding_cache",
    "enroll_embeddings",
    "evaluate_model",
    "evaluate_scores",
    "cached_embeddings",
    "extract_cached",
    "extract_embeddings",
    "extract_to_shards",
    "model_cache_dir",
    "fit_qmf",
    "logmel_embeddings",
    "load_authors_checkpoint",
    "make_calibration_trials",
    "make_cohort",
    "quality_features",
    "read_enroll_map",
    "read_key_value",
    "read_trials",
    "score_trials",
    "bootstrap_trials",
    "compare_systems",
    "agreement_by_length",
    "embedding_agreement",
    "bootstrap_trials",
    "speaker_bootstrap",
    "trial_quality_features",
    "trial_speakers",
]
