"""``svlib bench features``: svlib's torch fbank front end against transformers' feature extractor."""

from __future__ import annotations

import torch
from transformers import SeamlessM4TFeatureExtractor

from svlib.bench.timing import interleaved_times, paired_ratio
from svlib.frontend.features import PREPROCESSOR_CONFIG, extract_features


def bench_features(batch: int = 8, seconds: float = 4.0, repeats: int = 7, seed: int = 0) -> dict:
    """svlib's torch fbank front end against transformers' ``SeamlessM4TFeatureExtractor`` on the same batch.

    Both produce the same ``input_features`` (to 1e-3); the batch is ``batch`` random waveforms of ``seconds`` s.
    The two are timed interleaved (:func:`~svlib.bench.timing.interleaved_times`); medians are reported.
    """
    generator = torch.Generator().manual_seed(seed)
    wavs = [0.1 * torch.randn(int(seconds * 16_000), generator=generator) for _ in range(batch)]
    reference = SeamlessM4TFeatureExtractor(**PREPROCESSOR_CONFIG)
    arrays = [w.numpy() for w in wavs]

    def run_reference():
        return reference(arrays, sampling_rate=16_000, padding=True, return_tensors="pt")

    def run_ours():
        with torch.no_grad():
            return extract_features(wavs)

    times = interleaved_times({"svlib": run_ours, "transformers": run_reference}, repeats=repeats)
    ours, theirs = times["svlib"]["median"], times["transformers"]["median"]
    diff = (extract_features(wavs)[0] - run_reference()["input_features"]).abs().max().item()
    return {
        "benchmark": "features",
        "batch": batch,
        "seconds_per_utterance": seconds,
        "threads": torch.get_num_threads(),
        "svlib_s": ours,
        "transformers_s": theirs,
        "speedup": theirs / ours,
        "speedup_paired": paired_ratio(times, "transformers", "svlib"),
        "max_abs_diff": diff,
        "repeats": repeats,
    }
