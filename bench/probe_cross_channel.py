"""Probe (issue 13): every demo system on the plain and the cross-channel demo lists, with intervals.

Systems: the log-mel mean (no training), the untrained model (stage 1's initialisation), the three stages and the
pruned model after its stage 3, each by cosine, AS-norm and AS-norm + QMF (cohort and calibration: the demo training
set, the scoring chapter's settings); EER and minDCF(0.01) with speaker-level bootstrap 95 % intervals (1,000
resamples, svlib.scoring.compare_systems) and the paired differences the book's prose rests on. Run from the
checkout after `make book` (it scores the demo models in exp/demo/):

    .venv/bin/python bench/probe_cross_channel.py [--data data] [--exp exp/demo] [--seed 42]

Measured numbers are in the closing note of issue 13 (and the chapters print the same comparisons).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

import svlib
from svlib.core.paths import config_root
from svlib.data.profiles import profile_data
from svlib.model import SpeakerModel
from svlib.scoring import compare_systems, logmel_embeddings
from svlib.training import StageConfig

STAGES = {"s1": "lora_adapter_mfa/s1_freeze", "s2": "lora_adapter_mfa/s2_joint", "s3": "lora_adapter_mfa/s3_lmft",
          "pruned s3": "pruned/s3_lmft"}
PAIRS = [("untrained", "log-mel mean"), ("s1", "untrained"), ("s2", "s1"), ("s3", "s2"), ("s3", "log-mel mean"),
         ("pruned s3", "s3")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="data root holding demo/ (default: data)")
    parser.add_argument("--exp", default="exp/demo", help="the demo models (default: exp/demo)")
    parser.add_argument("--seed", type=int, default=42, help="the training seed (the untrained model's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = profile_data("demo", args.data)
    stage1 = StageConfig.from_yaml(config_root() / "demo" / "s1_freeze.yaml", {"seed": args.seed})
    torch.manual_seed(stage1.seed)  # as the trainer does before building the model
    systems = {"log-mel mean": logmel_embeddings, "untrained": SpeakerModel.build(stage1.encoder, head=stage1.head)}
    systems.update({name: svlib.load_model(Path(args.exp) / folder / "model") for name, folder in STAGES.items()})
    with tempfile.TemporaryDirectory() as cache:
        comparison = compare_systems(systems, data.trial_sets, n_boot=1000, cohort_dir=data.train_dir,
                                     calibration_trials=1000, cache_dir=cache)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(comparison.table())
        print(comparison.differences(PAIRS))
    for name in comparison.lists:
        for system in ("s3", "pruned s3"):
            for method, baseline in (("asnorm", "cosine"), ("asnorm+qmf", "asnorm")):
                print(f"{name}: " + comparison.verdict(name, system, system, method=method, baseline_method=baseline))


if __name__ == "__main__":
    main()
