"""``svlib bench prune-speedup``: forward time of the full w2v-BERT 2.0 encoder against a pruned one, one process.

Both models have random weights (timing does not depend on their values); the pruned one is the full model resized
to the structure (:func:`svlib.model.resize.apply_structure`). CPU, batch 1, eval mode, ``torch.inference_mode``,
median of ``repeats`` runs for each input length (after one warm-up round before the first), the models timed interleaved
(:func:`~svlib.bench.timing.interleaved_times`). The MAC
ratio of the same two encoders (counted with ``FlopCounterMode`` on the meta device) is reported next to the
measured speed-up.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os

import torch

from svlib.analysis.complexity import count_macs
from svlib.bench.timing import cpu_threads, interleaved_times, paired_ratio
from svlib.frontend.features import frames_for_samples
from svlib.model.encoder import new_hf_encoder
from svlib.model.resize import apply_structure, build_pruned_encoder
from svlib.model.structure import AUTHORS_STRUCTURE_RESOURCE, PrunedStructure, load_structure

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


def structure_source(structure) -> str:
    """How a benchmark's JSON names the structure it was given: the file, the shipped authors' structure, or
    ``"given structure"`` for an object."""
    if structure is None:
        return f"svlib/{AUTHORS_STRUCTURE_RESOURCE}"
    return str(structure) if isinstance(structure, (str, os.PathLike)) else "given structure"


def copy_sharing_tensors(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module``'s tree of modules whose parameters and buffers are ``module``'s own (not copied).

    For resizing the copy with :func:`~svlib.model.resize.apply_structure`, which builds every resized module from
    copies of the kept slices and changes no tensor in place: ``module`` stays as it was, and the full-size weights
    (2.3 GB for the encoder) are never copied: 0.1 s for the full-size speaker model on 2 cores, where a deep copy took
    0.9-3.9 s. Do not change the copy's tensors in place.
    """
    shared = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo=shared)


def pruned_copy(model: torch.nn.Module, structure: PrunedStructure) -> torch.nn.Module:
    """``model`` resized to ``structure`` as a new model, ``model`` unchanged (:func:`copy_sharing_tensors`)."""
    return apply_structure(copy_sharing_tensors(model), structure)


def bench_prune_speedup(
    structure: PrunedStructure | dict | str | None = None,
    seconds: tuple[float, ...] = (1.0, 4.0),
    repeats: int = 5,
    seed: int = 0,
    threads: int | None = None,
    align: tuple[int, ...] = (),
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
        align: also time the structure aligned to each of these multiples
            (:meth:`~svlib.model.structure.PrunedStructure.aligned`), interleaved with the others.

    Returns:
        A JSON-able dict: parameter counts, and per input length the median times, the paired speed-up (median and
        interquartile range) and the MAC ratio of the pruned model (``full_s``, ``pruned_s``, ``speedup_paired``,
        ``mac_ratio``, …) and, under ``"variants"``, of every pruned variant (``"pruned"``, ``"aligned 8"``, …).
    """
    source = structure_source(structure)
    structure = load_structure(structure)
    structures = {"pruned": structure, **{f"aligned {m}": structure.aligned(m) for m in align}}
    torch.manual_seed(seed)
    config = structure.hf_config()
    logger.info("building the full-size encoder (random weights)")
    full = new_hf_encoder(config).eval()  # as the released checkpoints and build_pruned_encoder have it
    models = {"full": full, **{name: pruned_copy(full, s).eval() for name, s in structures.items()}}
    full_meta = new_hf_encoder(config, meta=True).eval()
    metas = {"full": full_meta, **{name: build_pruned_encoder(s, meta=True).eval() for name, s in structures.items()}}
    input_dim = config.feature_projection_input_dim

    rows = []
    with cpu_threads(threads) as used_threads:
        for i, sec in enumerate(seconds):
            frames = frames_for_samples(int(round(sec * SAMPLE_RATE)))
            x = torch.randn(1, frames, input_dim)
            x_meta = torch.zeros(1, frames, input_dim, device="meta")
            with torch.inference_mode():
                # one untimed round before the first length only: a new length's first round is no outlier (4 rounds
                # unwarmed, full/pruned: 1.54/0.43 s then 1.87-1.95/0.46-0.48 s at 4 s; 4.66/1.07 then 4.43-5.59/
                # 1.01-1.09 s at 10 s), and a warm-up round at 10 s costs as much as a timed one
                times = interleaved_times({name: (lambda m=m: m(input_features=x)) for name, m in models.items()},
                                          repeats=repeats, warmup=1 if i == 0 else 0)
                macs = {name: count_macs(lambda m=m: m(input_features=x_meta)) for name, m in metas.items()}
            variants = {
                name: {
                    "s": times[name]["median"],
                    "speedup_paired": paired_ratio(times, "full", name),
                    "gmacs": macs[name] / 1e9,
                    "mac_ratio": macs["full"] / macs[name],
                }
                for name in structures
            }
            full_s, pruned_s = times["full"]["median"], times["pruned"]["median"]
            rows.append(
                {
                    "seconds": sec,
                    "frames": frames,
                    "full_s": full_s,
                    "pruned_s": pruned_s,
                    "speedup": full_s / pruned_s,
                    "speedup_paired": variants["pruned"]["speedup_paired"],
                    "full_gmacs": macs["full"] / 1e9,
                    "pruned_gmacs": macs["pruned"] / 1e9,
                    "mac_ratio": variants["pruned"]["mac_ratio"],
                    "variants": variants,
                }
            )
            logger.info("%g s: %s", sec, ", ".join(f"{n} {t['median']:.3f} s" for n, t in times.items()))
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    return {
        "benchmark": "prune-speedup",
        "structure": source,
        "device": "cpu",
        "threads": used_threads,
        "batch": 1,
        "repeats": repeats,
        "full_params": params["full"],
        "pruned_params": params["pruned"],
        "sparsity": 1.0 - params["pruned"] / params["full"],
        "variant_params": {name: params[name] for name in structures},
        "rows": rows,
    }
