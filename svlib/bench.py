"""Benchmarks behind ``svlib bench …``: timings measured in one process, returned as dicts (the CLI prints JSON).

Benchmarks are measurements, never pass/fail tests. Each reports the median of several runs after a warm-up, the
machine's thread count, and what was compared.
"""

from __future__ import annotations

import statistics
import time

import torch


def median_time(fn, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_features(batch: int = 8, seconds: float = 4.0, repeats: int = 7, seed: int = 0) -> dict:
    """svlib's torch fbank front end against transformers' ``SeamlessM4TFeatureExtractor`` on the same batch.

    Both produce the same ``input_features`` (to 1e-3); the batch is ``batch`` random waveforms of ``seconds`` s.
    """
    from transformers import SeamlessM4TFeatureExtractor

    from svlib.features import PREPROCESSOR_CONFIG, extract_features

    generator = torch.Generator().manual_seed(seed)
    wavs = [0.1 * torch.randn(int(seconds * 16_000), generator=generator) for _ in range(batch)]
    reference = SeamlessM4TFeatureExtractor(**PREPROCESSOR_CONFIG)
    arrays = [w.numpy() for w in wavs]

    def run_reference():
        return reference(arrays, sampling_rate=16_000, padding=True, return_tensors="pt")

    with torch.no_grad():
        ours = median_time(lambda: extract_features(wavs), repeats)
    theirs = median_time(run_reference, repeats)
    diff = (extract_features(wavs)[0] - run_reference()["input_features"]).abs().max().item()
    return {
        "benchmark": "features",
        "batch": batch,
        "seconds_per_utterance": seconds,
        "threads": torch.get_num_threads(),
        "svlib_s": ours,
        "transformers_s": theirs,
        "speedup": theirs / ours,
        "max_abs_diff": diff,
        "repeats": repeats,
    }
