"""Training: the three speaker-verification stages of §3.3 (:mod:`svlib.training.sv`) and the two pruning stages of
§2.6 / §3.4 (:mod:`svlib.training.distill`), on one stage runner (:mod:`svlib.training.stage`).

``train(yaml)`` and ``prune(yaml)`` are what ``svlib train`` and ``svlib prune`` run; both work under ``torchrun``.
"""

from svlib.training.distill import DistillConfig, DistillTrainer, prune
from svlib.training.stage import (
    CLASSIFIER_NAME,
    DONE_NAME,
    DistInfo,
    StageTrainer,
    find_done,
    finished_model,
    init_distributed,
    latest_checkpoint,
    read_metrics,
    record_stage,
    run_stage,
    stage_fingerprint,
    stage_summary,
)
from svlib.training.sv import ScheduleConfig, StageConfig, Trainer, describe_stage, train

__all__ = [
    "CLASSIFIER_NAME",
    "DONE_NAME",
    "DistInfo",
    "DistillConfig",
    "DistillTrainer",
    "ScheduleConfig",
    "StageConfig",
    "StageTrainer",
    "Trainer",
    "describe_stage",
    "find_done",
    "finished_model",
    "init_distributed",
    "latest_checkpoint",
    "prune",
    "read_metrics",
    "record_stage",
    "run_stage",
    "stage_fingerprint",
    "stage_summary",
    "train",
]
