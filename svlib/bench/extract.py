"""``svlib bench extract``: embedding-extraction time of the full-size speaker model against a bare encoder.

The speaker model adds work around transformers' ``Wav2Vec2BertModel`` forward: the fbank front end
(:mod:`svlib.frontend.features`), the attention mask, stacking the 25 hidden states into one ``(L+1, B, T, D)`` tensor
(a copy), and the Adapter-MFA head. This benchmark times each part on the same input, in the same process, with
the same encoder weights (random: timings do not depend on the values), in eval mode under ``no_grad``. The goal
is an overhead of at most 10 % over the bare forward.

Timings are interleaved (one run of every variant per round) so that load changes on a shared machine hit all
variants alike. Each variant's *fastest* round is reported (after one warm-up round): on a shared machine other
processes only ever slow a run down, so the minimum is the least noisy estimate (as ``timeit`` advises); the
medians are reported next to it.
"""

from __future__ import annotations

import logging
import time

import torch

from svlib.bench.timing import interleaved_times, paired_ratio
from svlib.model import SpeakerModel

logger = logging.getLogger(__name__)

__all__ = ["bench_extract"]


@torch.no_grad()
def bench_extract(seconds: tuple[float, ...] = (4, 10), repeats: int = 3, seed: int = 0, model=None) -> dict:
    """Extraction time per second of audio: full speaker model vs bare ``Wav2Vec2BertModel`` forward (batch 1, CPU).

    Args:
        seconds: utterance lengths to time.
        repeats: timed rounds per length (fastest and median reported), after one warm-up round.
        seed: seed of the random waveform.
        model: a :class:`~svlib.model.speaker.SpeakerModel` to time (default: the full ``w2v-bert-2.0`` encoder with an
            Adapter-MFA head and random weights, about 17 s to build).

    Returns:
        A dict with one entry per length. Times are the fastest round's, in seconds per second of audio, for ``full``
        (waveform to embedding, as :func:`~svlib.scoring.extract.extract_embeddings` runs it) and ``bare`` (the
        transformers model called on the features with its default outputs). ``overhead_percent`` is
        100 · (full / bare − 1), also from the medians; the parts of the overhead, in % of ``bare``, are
        ``features`` (fbank), ``encoder_mask_and_states`` (the encoder call as svlib makes it, with the attention
        mask and all hidden states, minus ``bare``), ``stack`` (copying the 25 states into one tensor) and ``head``.
    """
    label = "w2v-bert-2.0 + adapter_mfa (random weights)"
    if model is not None:
        cfg = model.encoder.config
        label = f"given model: {cfg.num_hidden_layers} layers x {cfg.hidden_size} + {model.head.config.type}"
    else:
        start = time.perf_counter()
        model = SpeakerModel.build("w2v-bert-2.0", head="adapter_mfa")
        logger.info("built the full speaker model in %.1f s", time.perf_counter() - start)
    model = model.eval()
    hf = model.encoder.hf_model
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in seconds:
        wav = 0.1 * torch.randn(int(length * 16_000), generator=generator)
        feats, mask = model.frontend([wav])  # (1, T, 160), (1, T)
        states = model.encoder(feats, mask)  # (L+1, 1, T, D)
        hidden = hf(input_features=feats, attention_mask=mask, output_hidden_states=True).hidden_states
        fns = {
            "full": lambda: model(*model.frontend([wav])),
            "bare": lambda: hf(input_features=feats),
            "encoder_as_called": lambda: hf(input_features=feats, attention_mask=mask, output_hidden_states=True),
            "features": lambda: model.frontend([wav]),
            "stack": lambda: torch.stack(hidden, dim=0),
            "head": lambda: model.head(states, mask.bool()),
        }
        times = interleaved_times(fns, repeats=repeats)
        t = {name: v["min"] for name, v in times.items()}
        med = {name: v["median"] for name, v in times.items()}
        rows.append(
            {
                "seconds": length,
                "frames": int(feats.shape[1]),
                "full_s_per_audio_s": t["full"] / length,
                "bare_s_per_audio_s": t["bare"] / length,
                "overhead_percent": 100.0 * (t["full"] / t["bare"] - 1.0),
                "overhead_percent_of_medians": 100.0 * (med["full"] / med["bare"] - 1.0),
                "full_over_bare_paired": paired_ratio(times, "full", "bare"),
                "parts_percent_of_bare": {
                    "features": 100.0 * t["features"] / t["bare"],
                    "encoder_mask_and_states": 100.0 * (t["encoder_as_called"] / t["bare"] - 1.0),
                    "stack": 100.0 * t["stack"] / t["bare"],
                    "head": 100.0 * t["head"] / t["bare"],
                },
            }
        )
        logger.info("extract %g s: %s", length, rows[-1])
    return {
        "benchmark": "extract",
        "model": label,
        "device": "cpu",
        "batch": 1,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "goal": "overhead <= 10 % over the bare Wav2Vec2BertModel forward",
        "lengths": rows,
    }
