"""The one timing helper of svlib's benchmarks: variants timed interleaved, so that a noisy machine hits them alike.

Benchmarks are measurements, never pass/fail tests. Each round runs every variant once, in turn (A B A B …); a
load change on a shared machine then slows all variants of a round, not one variant's whole series.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterator, Mapping

import numpy as np
import torch

__all__ = ["cpu_threads", "interleaved_times", "paired_ratio"]


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """torch's CPU threads set to ``threads`` for the ``with`` block (``None``: left as they are) and restored after
    it; yields the number in use."""
    default = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(default)


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1) -> dict:
    """Wall times in seconds of each ``fns[name]()`` over ``repeats`` rounds (every function once per round), after
    ``warmup`` untimed rounds.

    Returns:
        ``{name: {"min": fastest, "median": median, "q1": 25th, "q3": 75th percentile, "times": [per round]}}``.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: {"min": min(t), "median": statistics.median(t), **_quartiles(t), "times": t}
            for name, t in times.items()}


def paired_ratio(times: dict, numerator: str, denominator: str) -> dict:
    """The ratio ``numerator / denominator`` of the runs of one round, over the rounds of :func:`interleaved_times`.

    Pairing by round cancels a load change that slows a whole round. Returns ``{"median", "q1", "q3", "min", "max",
    "ratios"}``: the median with its interquartile range (``q1`` … ``q3``, linear interpolation) and the extremes.
    """
    ratios = [a / b for a, b in zip(times[numerator]["times"], times[denominator]["times"], strict=True)]
    return {"median": statistics.median(ratios), **_quartiles(ratios), "min": min(ratios), "max": max(ratios),
            "ratios": ratios}


def _quartiles(values: list[float]) -> dict:
    """25th and 75th percentiles (linear interpolation between order statistics, numpy's default)."""
    q1, q3 = np.percentile(values, [25, 75])
    return {"q1": float(q1), "q3": float(q3)}
