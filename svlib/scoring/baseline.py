"""An untrained reference point for the demo trials: log-mel statistics of each utterance, scored by cosine.

No network, no training: the embedding of an utterance is the mean (and optionally the standard deviation) over
time of its 80 log-mel filterbank energies. It measures how much the trials can be solved from the long-term
spectrum alone: voice timbre, but also the microphone and channel of each recording. A speaker model has to beat
it to show that it learned something beyond that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from svlib.core.progress import progress_bar
from svlib.frontend.audio import load_audio
from svlib.frontend.features import fbank

__all__ = ["logmel_embeddings"]


@torch.no_grad()
def logmel_embeddings(
    utt2path: Mapping[str, str | Path], stats: str = "mean", max_seconds: float = 60.0, progress: bool = False
) -> dict[str, torch.Tensor]:
    """``{utt: embedding}``: time statistics of the Kaldi log-mel filterbanks of each utterance.

    Args:
        utt2path: ``{utt: path}`` (a ``wav.scp``).
        stats: ``"mean"`` (80 values) or ``"mean+std"`` (160 values).
        max_seconds: use the first ``max_seconds`` of each utterance (as the model's extraction does).
        progress: show a progress bar.
    """
    if stats not in ("mean", "mean+std"):
        raise ValueError(f"stats={stats!r}: expected 'mean' or 'mean+std'")
    out = {}
    for utt, path in progress_bar(utt2path.items(), desc="log-mel stats", unit="utt", enabled=progress):
        wav = load_audio(path)[: int(max_seconds * 16_000)]
        feats, _ = fbank(wav.unsqueeze(0))  # (1, F, 80)
        x = feats[0].double()
        out[utt] = (x.mean(0) if stats == "mean" else torch.cat([x.mean(0), x.std(0)])).float()
    return out
