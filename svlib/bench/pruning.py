"""``svlib bench prune-speedup``: forward time of the full w2v-BERT 2.0 encoder against a pruned one, one process.

Both models have random weights (timing does not depend on their values); the pruned one is the full model resized
to the structure (:func:`svlib.model.resize.apply_structure`). CPU, batch 1, eval mode, ``torch.inference_mode``,
median of ``repeats`` runs after a warm-up, for each input length, the two models timed interleaved
(:func:`~svlib.bench.timing.interleaved_times`). The MAC
ratio of the same two encoders (counted with ``FlopCounterMode`` on the meta device) is reported next to the
measured speed-up.
"""

from __future__ import annotations

import copy
import logging
import os

import torch
from transformers import Wav2Vec2BertModel

from svlib.analysis.complexity import count_macs
from svlib.bench.timing import interleaved_times, paired_ratio
from svlib.frontend.features import frames_for_samples
from svlib.model.resize import apply_structure, build_pruned_encoder
from svlib.model.structure import AUTHORS_STRUCTURE_RESOURCE, PrunedStructure, load_structure

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


def bench_prune_speedup(
    structure: PrunedStructure | dict | str | None = None,
    seconds: tuple[float, ...] = (1.0, 4.0),
    repeats: int = 5,
    seed: int = 0,
    threads: int | None = None,
) -> dict:
    """Time the full-size encoder and its pruned version on the CPU, and compare with their MAC ratio.

    Args:
        structure: the pruned structure (file, dict or :class:`~svlib.model.structure.PrunedStructure`);
            ``None`` for the authors' 80 % structure shipped with svlib.
        seconds: input lengths in seconds of 16 kHz audio.
        repeats: timed runs per model and length; the median is reported.
        seed: seed of the random weights and inputs.
        threads: CPU threads for the timed forwards (``torch.set_num_threads``, restored afterwards); ``None`` keeps
            torch's default. One thread is the robust choice on a machine shared with other jobs, where OpenMP
            threads waiting for each other can make every operator many times slower.

    Returns:
        A JSON-able dict: parameter counts, and per input length both median times, the speed-up and the MAC ratio.
    """
    if structure is None:
        source = f"svlib/{AUTHORS_STRUCTURE_RESOURCE}"
    else:
        source = str(structure) if isinstance(structure, (str, os.PathLike)) else "given structure"
    structure = load_structure(structure)
    torch.manual_seed(seed)
    config = structure.hf_config()
    logger.info("building the full-size encoder (random weights)")
    full = Wav2Vec2BertModel(config).eval()
    pruned = apply_structure(copy.deepcopy(full), structure).eval()
    with torch.device("meta"):
        full_meta = Wav2Vec2BertModel(config).eval()
    pruned_meta = build_pruned_encoder(structure, meta=True).eval()
    input_dim = config.feature_projection_input_dim

    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        used_threads = torch.get_num_threads()
        for sec in seconds:
            frames = frames_for_samples(int(round(sec * SAMPLE_RATE)))
            x = torch.randn(1, frames, input_dim)
            x_meta = torch.zeros(1, frames, input_dim, device="meta")
            with torch.inference_mode():
                times = interleaved_times({"full": lambda: full(input_features=x),
                                           "pruned": lambda: pruned(input_features=x)}, repeats=repeats)
                full_s, pruned_s = times["full"]["median"], times["pruned"]["median"]
                full_macs = count_macs(lambda: full_meta(input_features=x_meta))
                pruned_macs = count_macs(lambda: pruned_meta(input_features=x_meta))
            rows.append(
                {
                    "seconds": sec,
                    "frames": frames,
                    "full_s": full_s,
                    "pruned_s": pruned_s,
                    "speedup": full_s / pruned_s,
                    "speedup_paired": paired_ratio(times, "full", "pruned"),
                    "full_gmacs": full_macs / 1e9,
                    "pruned_gmacs": pruned_macs / 1e9,
                    "mac_ratio": full_macs / pruned_macs,
                }
            )
            logger.info("%g s: full %.3f s, pruned %.3f s", sec, full_s, pruned_s)
    finally:
        torch.set_num_threads(default_threads)
    full_params = sum(p.numel() for p in full.parameters())
    pruned_params = sum(p.numel() for p in pruned.parameters())
    return {
        "benchmark": "prune-speedup",
        "structure": source,
        "device": "cpu",
        "threads": used_threads,
        "batch": 1,
        "repeats": repeats,
        "full_params": full_params,
        "pruned_params": pruned_params,
        "sparsity": 1.0 - pruned_params / full_params,
        "rows": rows,
    }
