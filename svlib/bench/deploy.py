"""``svlib bench deploy``: seconds per audio second of the full and the pruned speaker model in each runtime.

Six variants, {full, pruned} × {torch fp32, onnxruntime fp32, onnxruntime int8}, are the whole speaker network
(encoder + Layer-Adapter MFA head, Eq. (1) without the front end, which is the same for all) at full size with random
weights (timing does not depend on their values). The pruned model is the full one resized to a structure
(:func:`svlib.model.resize.apply_structure`; by default the authors' 80 % structure); the ONNX files are written by
:func:`svlib.model.export.export_onnx` (int8: onnxruntime's dynamic quantisation). For each input length all six run
interleaved (:func:`~svlib.bench.timing.interleaved_times`), CPU, batch 1, a fixed number of threads for both
runtimes, and each variant's speed-up over the full model in torch fp32 is the paired ratio of the rounds (median and
interquartile range). MACs are counted on the meta device for the full and the pruned network (int8 changes the cost
of a MAC, not their number).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from svlib.analysis.complexity import model_complexity, structure_complexity
from svlib.bench.pruning import copy_sharing_tensors, structure_source
from svlib.bench.timing import cpu_threads, interleaved_times, paired_ratio
from svlib.frontend.features import SAMPLE_RATE, frames_for_samples
from svlib.model.export import OnnxSpeakerModel, export_onnx, onnx_files
from svlib.model.resize import apply_structure
from svlib.model.speaker import SpeakerModel
from svlib.model.structure import load_structure

logger = logging.getLogger(__name__)

__all__ = ["bench_deploy", "time_speaker_models"]


def bench_deploy(
    structure=None,
    seconds: tuple[float, ...] = (1.0, 4.0, 10.0),
    repeats: int = 5,
    seed: int = 0,
    threads: int = 2,
    encoder: str = "w2v-bert-2.0",
    workdir: str | os.PathLike | None = None,
) -> dict:
    """Time {full, pruned} × {torch fp32, onnx fp32, onnx int8} interleaved at each input length
    (:func:`time_speaker_models`).

    Args:
        structure: the pruned structure (a :class:`~svlib.model.structure.PrunedStructure`, dict or JSON file in the
            authors' format); ``None`` for the authors' 80 % structure shipped with svlib.
        seconds: input lengths in seconds of audio.
        repeats: timed rounds per length (after one untimed round).
        seed: seed of the random weights and inputs.
        threads: CPU threads of torch (``torch.set_num_threads``, restored afterwards) and of onnxruntime
            (intra-op threads).
        encoder: the encoder config (``"w2v-bert-2.0"``: the released size; ``"tiny"`` for a quick run).
        workdir: where the four ONNX files are written (``None``: a temporary folder, removed afterwards).

    Returns:
        A JSON-able dict: parameter counts, ONNX file sizes, and per length the MACs of both networks, and per
        variant (``"full torch fp32"`` … ``"pruned onnx int8"``) the median time with its interquartile range,
        seconds per audio second and the paired speed-up over ``"full torch fp32"``.
    """
    if structure is None and encoder != "w2v-bert-2.0":
        raise ValueError(f"encoder {encoder!r}: give a structure for it (the authors' one is for w2v-bert-2.0)")
    source = structure_source(structure)
    structure = load_structure(structure)
    torch.manual_seed(seed)
    logger.info("building the full-size speaker model (random weights)")
    full = SpeakerModel.build(encoder, head="adapter_mfa").eval()
    pruned = copy_sharing_tensors(full)  # the head's weights stay shared with the full model; the encoder is resized
    apply_structure(pruned.encoder.model, structure)
    pruned.eval()
    torch_models = {"full": full, "pruned": pruned}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in torch_models.items()}

    with cpu_threads(threads), tempfile.TemporaryDirectory(prefix="svlib-bench-deploy-") as tmp:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        runtimes, sizes = {}, {}
        for name, model in torch_models.items():
            runtimes[f"{name} torch fp32"] = model
            for int8 in (False, True):
                variant = f"{name} onnx {'int8' if int8 else 'fp32'}"
                logger.info("exporting %s", variant)
                path = export_onnx(model, folder / f"{variant.replace(' ', '_')}.onnx", int8=int8)
                sizes[variant] = sum(f.stat().st_size for f in onnx_files(path))
                runtimes[variant] = OnnxSpeakerModel(path, threads=threads)
        full_meta = SpeakerModel.build(encoder, head="adapter_mfa", meta=True)
        rows = []
        for sec in seconds:
            timed = time_speaker_models(runtimes, seconds=sec, repeats=repeats, reference="full torch fp32", seed=seed)
            macs = {"full": model_complexity(full_meta, seconds=sec).macs,
                    "pruned": structure_complexity(structure, seconds=sec).macs}
            variants = {name: {**t, "s_per_audio_s": t["s"] / sec} for name, t in timed.items()}
            rows.append({"seconds": sec, "frames": frames_for_samples(int(round(sec * SAMPLE_RATE))),
                         "full_gmacs": macs["full"] / 1e9, "pruned_gmacs": macs["pruned"] / 1e9,
                         "mac_ratio": macs["full"] / macs["pruned"], "variants": variants})
            logger.info("%g s: %s", sec, ", ".join(f"{n} {v['s']:.3f} s" for n, v in variants.items()))
    return {
        "benchmark": "deploy",
        "encoder": encoder,
        "structure": source,
        "device": "cpu",
        "threads": threads,
        "batch": 1,
        "repeats": repeats,
        "full_params": params["full"],
        "pruned_params": params["pruned"],
        "sparsity_encoder": 1.0 - (sum(p.numel() for p in pruned.encoder.parameters())
                                   / sum(p.numel() for p in full.encoder.parameters())),
        "onnx_bytes": sizes,
        "rows": rows,
    }


def time_speaker_models(models: Mapping[str, torch.nn.Module], seconds: float = 4.0, repeats: int = 5,
                        threads: int | None = None, reference: str | None = None, seed: int = 0) -> dict:
    """Forward time of speaker models (PyTorch or :class:`~svlib.model.export.OnnxSpeakerModel`) on one utterance of
    ``seconds`` of audio, timed interleaved, CPU, batch 1 (the front end excluded: the same for all).

    Args:
        models: ``{name: model}``; ``model(features, None)`` gives the embedding.
        seconds: the utterance length.
        repeats: timed rounds (after one untimed round).
        threads: torch's CPU threads for the call (restored afterwards); ``None`` keeps torch's setting.
        reference: the model the paired speed-ups are taken against (default: the first).
        seed: seed of the random input features.

    Returns:
        ``{name: {"s": median, "q1", "q3", "speedup_paired": paired ratio over reference}}``.
    """
    reference = next(iter(models)) if reference is None else reference
    frames = frames_for_samples(int(round(seconds * SAMPLE_RATE)))
    x = torch.randn(1, frames, 160, generator=torch.Generator().manual_seed(seed))

    def forward(model: torch.nn.Module):  # PyTorch and ONNX models alike: model(features, mask)
        with torch.inference_mode():
            return model(x, None)

    for model in models.values():
        model.eval()
    with cpu_threads(threads):
        times = interleaved_times({name: (lambda m=m: forward(m)) for name, m in models.items()}, repeats=repeats)
    return {name: {"s": t["median"], "q1": t["q1"], "q3": t["q3"],
                   "speedup_paired": paired_ratio(times, reference, name)} for name, t in times.items()}

