"""Listening in the book: labelled audio players for clips a chapter computes (the example utterance, its
augmentations, its speed-perturbed copies), embedded in the page as 16-bit WAV data so the built book plays them
offline."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

import soundfile as sf
import torch
from IPython.display import HTML

__all__ = ["audio_players"]


def _wav_base64(wav: torch.Tensor, sample_rate: int) -> str:
    buffer = io.BytesIO()
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    samples = (wav / peak * 0.9 if peak > 1.0 else wav).detach().float().cpu().numpy()  # no clipping
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_players(clips: Mapping[str, torch.Tensor], sample_rate: int = 16_000) -> HTML:
    """A table of labelled ``<audio>`` players, one row per clip.

    Args:
        clips: ``{label: (N,) waveform}``; a clip louder than full scale is scaled down to play without clipping.
        sample_rate: of every clip, in Hz.
    """
    rows = []
    for label, wav in clips.items():
        seconds = wav.numel() / sample_rate
        src = f"data:audio/wav;base64,{_wav_base64(wav, sample_rate)}"
        rows.append(f"<tr><td>{html.escape(label)} ({seconds:.1f} s)</td>"
                    f'<td><audio controls preload="none" src="{src}"></audio></td></tr>')
    return HTML('<table class="svlib-audio">' + "".join(rows) + "</table>")
