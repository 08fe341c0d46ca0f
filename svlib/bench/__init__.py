"""Benchmarks behind ``svlib bench …`` (measurements, never tests), on one timing helper (:mod:`~svlib.bench.timing`):
:mod:`~svlib.bench.features` (the fbank front end), :mod:`~svlib.bench.extract` (embedding extraction) and
:mod:`~svlib.bench.pruning` (full vs pruned encoder) and :mod:`~svlib.bench.deploy` (full and pruned model in
torch, onnxruntime fp32 and int8). Each returns a JSON-ready dict that the CLI prints.
"""

from svlib.bench.deploy import bench_deploy
from svlib.bench.extract import bench_extract
from svlib.bench.features import bench_features
from svlib.bench.pruning import bench_prune_speedup
from svlib.bench.timing import interleaved_times

__all__ = ["bench_deploy", "bench_extract", "bench_features", "bench_prune_speedup", "interleaved_times"]
