"""Probe (issue 13): the demo models and the log-mel-mean baseline on the plain and the cross-channel demo lists.

EER and minDCF with speaker-level bootstrap 95 % intervals (1,000 resamples, svlib.scoring.speaker_bootstrap) and
paired differences. Run from the checkout after `make book` (it scores the demo models in exp/demo/):

    .venv/bin/python bench/probe_cross_channel.py [--data data] [--exp exp/demo]

Measured 2026-12-01 (protocol version 2) with the demo models of `make book` (trained without channel
augmentation), 10 test speakers, 892 trials per list (EER %, [95 % interval]):

    system        plain                 cross-channel
    log-mel mean   6.50 [2.30, 10.87]   43.05 [29.18, 50.57]
    s1            15.92 [8.96, 21.65]   32.74 [22.78, 39.36]
    s2             9.19 [4.04, 14.82]   18.39 [11.01, 26.51]
    s3             7.40 [3.14, 12.03]   18.83 [13.17, 23.59]
    pruned s3      8.97 [3.43, 14.65]   18.83 [10.93, 24.86]

On the plain list no trained model differs from the log-mel mean (every paired interval holds 0); on the
cross-channel list s2, s3 and the pruned s3 beat it (s3 - log-mel: -24.22 [-31.20, -10.14]); s3 - s2 (0.45
[-5.15, 5.75]) and pruned s3 - s3 (0.00 [-5.47, 4.60]) are not real differences.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import svlib
from svlib.data.cross_channel import build_cross_channel
from svlib.data.demo import build_demo_corpus
from svlib.data.lists import read_data_dir, read_trials
from svlib.scoring import cosine_scores, extract_embeddings, logmel_embeddings, speaker_bootstrap, trial_speakers

SYSTEMS = {"log-mel mean": None, "s1": "lora_adapter_mfa/s1_freeze", "s2": "lora_adapter_mfa/s2_joint",
           "s3": "lora_adapter_mfa/s3_lmft", "pruned s3": "pruned/s3_lmft"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="data root holding demo/ (default: data)")
    parser.add_argument("--exp", default="exp/demo", help="the demo models (default: exp/demo)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = build_demo_corpus(args.data, progress=False)
    cross = build_cross_channel(corpus, progress=False)
    lists = {"plain": (read_data_dir(corpus.test_dir), read_trials(corpus.trials)),
             "cross-channel": (read_data_dir(cross.data_dir), read_trials(cross.trials))}
    for name, (data, trials) in lists.items():
        scores = {}
        for system, folder in SYSTEMS.items():
            if folder is None:
                emb = logmel_embeddings(data.wav_scp)
            else:
                model = svlib.load_model(Path(args.exp) / folder / "model")
                emb = extract_embeddings(model, data.wav_scp, progress=False, bf16=False)
            scores[system] = cosine_scores(emb, trials.trials).numpy()
        enroll, test = trial_speakers(trials.trials, data.utt2spk)
        boot = speaker_bootstrap(scores, trials.labels(), enroll, test, n_boot=1000, seed=0)
        print(f"{name}: {len(trials.trials)} trials, {boot.n_speakers} speakers")
        print(boot.table().to_string())
        for system in list(SYSTEMS)[1:]:
            print(f"  {system} - log-mel mean, EER: {boot.difference(system, 'log-mel mean')}")
        print(f"  s3 - s2: {boot.difference('s3', 's2')}; pruned s3 - s3: {boot.difference('pruned s3', 's3')}")


if __name__ == "__main__":
    main()
