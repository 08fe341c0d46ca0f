"""Speaker embeddings for whole utterances, cosine scoring and multi-utterance enrollment.

Evaluation follows the paper (§3.3) and the authors' recipe: each test utterance is embedded whole, cropped to
its first ``max_seconds`` (60 s, RECIPE.md "Scoring and evaluation"), and trials are scored by cosine similarity.
CN-Celeb enrolls a speaker with several utterances: "we average all the embeddings that belong to the same
enrollment speaker" (§3.1), see :func:`enroll_embeddings`.

Extraction is batched by length: utterances are sorted by duration (longest first, so a batch that does not
fit in memory fails at once) and packed into batches whose *padded* length (batch size × longest utterance)
stays within ``batch_seconds``. The speaker model masks padded frames (attention mask, masked pooling), so a
batch gives the same embeddings as one-by-one :meth:`~svlib.model.SpeakerModel.embed` calls, up to float
round-off. Audio for the next batch is read in a background thread while the model runs.

Explained in the book chapter "Scoring and calibration".
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from svlib.audio import AudioError, load_audio
from svlib.data.lists import Trial

logger = logging.getLogger(__name__)

__all__ = [
    "Segment",
    "probe_duration",
    "length_batches",
    "extract_embeddings",
    "stack_embeddings",
    "cosine_scores",
    "enroll_embeddings",
]

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Segment:
    """A part of an audio file: ``duration`` seconds from ``start`` (``None`` = to the end of the file)."""

    path: str | Path
    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or (self.duration is not None and self.duration <= 0):
            raise ValueError(
                f"Segment of {self.path}: start={self.start} must be >= 0 and duration={self.duration} > 0"
            )


def _as_segment(source: str | Path | Segment) -> Segment:
    return source if isinstance(source, Segment) else Segment(source)


def probe_duration(source: str | Path | Segment) -> float:
    """Duration in seconds of a file or segment, read from the file header (no decoding)."""
    seg = _as_segment(source)
    try:
        info = sf.info(str(seg.path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{seg.path}: cannot read the audio header ({err})") from err
    total = info.frames / info.samplerate
    available = max(total - seg.start, 0.0)
    return available if seg.duration is None else min(seg.duration, available)


def length_batches(durations: Mapping[str, float], batch_seconds: float) -> list[list[str]]:
    """Group keys into batches by length: sorted longest first, each batch's padded length
    ``len(batch) × longest duration`` at most ``batch_seconds`` (an utterance longer than that goes alone).

    Args:
        durations: ``{key: seconds}``.
        batch_seconds: budget of padded audio seconds per batch.

    Returns:
        A list of batches (lists of keys), longest batch first.
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds={batch_seconds!r} must be positive")
    order = sorted(durations, key=lambda k: (-durations[k], k))
    batches: list[list[str]] = []
    current: list[str] = []
    for key in order:
        longest = durations[current[0]] if current else durations[key]
        if current and (len(current) + 1) * longest > batch_seconds:
            batches.append(current)
            current = []
        current.append(key)
    if current:
        batches.append(current)
    return batches


def _load(source: Segment, max_samples: int) -> torch.Tensor:
    """The 1-D 16 kHz waveform of a segment, cropped to ``max_samples``."""
    wav = load_audio(source.path, sample_rate=SAMPLE_RATE)
    start = int(round(source.start * SAMPLE_RATE))
    stop = wav.shape[0] if source.duration is None else start + int(round(source.duration * SAMPLE_RATE))
    total = wav.shape[0]
    wav = wav[start:stop][:max_samples]
    if wav.shape[0] == 0:
        raise AudioError(
            f"{source.path}: segment from {source.start} s is empty (the file has {total / SAMPLE_RATE:.2f} s)"
        )
    return wav


def _autocast(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_embeddings(
    model: torch.nn.Module,
    utt2path: Mapping[str, str | Path | Segment],
    batch_seconds: float = 120.0,
    max_seconds: float = 60.0,
    device: str | torch.device | None = None,
    bf16: bool = True,
    utt2dur: Mapping[str, float] | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Embeddings of whole utterances (paper §3.3), batched by length.

    Args:
        model: a :class:`~svlib.model.SpeakerModel`: ``model.frontend(list of (N,) waveforms)`` gives
            ``(features, mask)`` and ``model(features, mask)`` the ``(B, E)`` embeddings. It is put in eval mode
            for the call and its previous mode restored.
        utt2path: ``{utt: path}`` (a ``wav.scp``) or ``{key: Segment}`` for crops (QMF calibration segments).
        batch_seconds: padded audio seconds per batch (lower it if memory runs out).
        max_seconds: each utterance is cropped to its first ``max_seconds`` (60 s as in the authors' recipe).
        device: where the model runs (default: where its parameters are; the model is moved there).
        bf16: use bfloat16 autocast on CUDA (the authors' evaluation setting); ignored on CPU.
        utt2dur: known durations in seconds (skips reading file headers); only used to form batches.
        progress: show a tqdm progress bar (over utterances).

    Returns:
        ``{utt: (E,) float32 CPU tensor}`` of raw (not normalised) embeddings, in ``utt2path``'s order.
    """
    if max_seconds <= 0:
        raise ValueError(f"max_seconds={max_seconds!r} must be positive")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sources = {utt: _as_segment(src) for utt, src in utt2path.items()}
    durations = {
        utt: min(float(utt2dur[utt]) if utt2dur is not None and utt in utt2dur else probe_duration(src), max_seconds)
        for utt, src in sources.items()
    }
    batches = length_batches(durations, batch_seconds)
    max_samples = int(round(max_seconds * SAMPLE_RATE))
    logger.info("embedding %d utterances in %d batches on %s", len(sources), len(batches), device)

    def load_batch(keys: Sequence[str]) -> list[torch.Tensor]:
        return [_load(sources[k], max_samples) for k in keys]

    was_training = model.training
    model.to(device).eval()
    out: dict[str, torch.Tensor] = {}
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
            total=len(sources), desc="embeddings", unit="utt", disable=not progress
        ) as bar:
            pending = pool.submit(load_batch, batches[0]) if batches else None
            for i, keys in enumerate(batches):
                wavs = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(load_batch, batches[i + 1])  # read ahead while the model runs
                # fbank in full precision (as the authors' CPU feature extractor), only the network under autocast
                feats, mask = model.frontend([w.to(device, non_blocking=True) for w in wavs])  # (B, T, 160), (B, T)
                with _autocast(device, bf16):
                    emb = model(feats, mask)  # (B, E)
                for key, e in zip(keys, emb.float().cpu()):
                    out[key] = e
                bar.update(len(keys))
    finally:
        model.train(was_training)
    return {utt: out[utt] for utt in sources}


def stack_embeddings(emb: Mapping[str, torch.Tensor], keys: Iterable[str], what: str = "embedding") -> torch.Tensor:
    """``(N, E)`` float32 stack of ``emb[k]`` for ``keys``; a missing key is an error naming it."""
    keys = list(keys)
    missing = [k for k in keys if k not in emb]
    if missing:
        raise KeyError(f"no {what} for {len(missing)} keys, e.g. {missing[:5]}; extract them first")
    if not keys:
        raise ValueError(f"no {what}s requested")
    return torch.stack([torch.as_tensor(emb[k]).float().reshape(-1) for k in keys])


def _trial_pairs(trials: Iterable) -> tuple[list[str], list[str]]:
    """The enroll and test keys of ``trials``, the one place scoring reads the sides of a trial.

    ``trials`` is a :class:`~svlib.data.lists.TrialList` (or any iterable of :class:`~svlib.data.lists.Trial`), or
    ``(enroll, test[, label])`` tuples (e.g. :attr:`~svlib.scoring.qmf.CalibrationSet.trials`).
    """
    enroll, test = [], []
    for i, t in enumerate(trials):
        if isinstance(t, Trial):
            enroll.append(t.enroll)
            test.append(t.test)
            continue
        if len(t) < 2:
            raise ValueError(f"trial {i} is {t!r}; expected a Trial or (enroll, test[, label])")
        enroll.append(t[0])
        test.append(t[1])
    return enroll, test


def index_trials(trials: Iterable) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Unique keys of the trials and, per trial, the index of its enroll and test key.

    Returns:
        ``(keys, enroll_index (n_trials,), test_index (n_trials,))`` (int64).
    """
    enroll, test = _trial_pairs(trials)
    position: dict[str, int] = {}
    for key in (*enroll, *test):
        position.setdefault(key, len(position))
    e_idx = torch.tensor([position[k] for k in enroll], dtype=torch.long)
    t_idx = torch.tensor([position[k] for k in test], dtype=torch.long)
    return list(position), e_idx, t_idx


def paired_dot(x: torch.Tensor, e_idx: torch.Tensor, t_idx: torch.Tensor, chunk_size: int = 65_536) -> torch.Tensor:
    """``(n_trials,)`` dot products ``x[e_idx[i]] · x[t_idx[i]]`` of rows of ``x`` ``(N, E)``, chunked over trials."""
    out = torch.empty(e_idx.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, e_idx.shape[0], chunk_size):
        e = x[e_idx[start : start + chunk_size]]  # (chunk, E)
        t = x[t_idx[start : start + chunk_size]]
        out[start : start + chunk_size] = (e * t).sum(dim=-1)
    return out


def cosine_scores(emb: Mapping[str, torch.Tensor], trials: Iterable) -> torch.Tensor:
    """Cosine similarity of each trial's enroll and test embeddings.

    Args:
        emb: ``{key: (E,) embedding}`` (utterances, or enrolled speakers from :func:`enroll_embeddings`).
        trials: a :class:`~svlib.data.lists.TrialList` (``Trial`` objects) or ``[(enroll, test[, label]), ...]``.

    Returns:
        ``(n_trials,)`` float32 scores in [-1, 1].
    """
    keys, e_idx, t_idx = index_trials(trials)
    x = F.normalize(stack_embeddings(emb, keys), dim=-1)  # (N, E)
    return paired_dot(x, e_idx, t_idx)


def enroll_embeddings(
    emb: Mapping[str, torch.Tensor], enroll_map: Mapping[str, Sequence[str]]
) -> dict[str, torch.Tensor]:
    """Multi-utterance enrollment (paper §3.1, CN-Celeb): the average of the L2-normalised embeddings of each
    enrolled speaker's utterances.

    Args:
        emb: ``{utt: (E,) embedding}``.
        enroll_map: ``{enroll_id: [utt, ...]}`` (CN-Celeb ``enroll.map``).

    Returns:
        ``{enroll_id: (E,) mean of normalised embeddings}`` (not re-normalised: its norm, at most 1, says how
        consistent the enrollment utterances are; cosine scoring normalises it).
    """
    out = {}
    for speaker, utts in enroll_map.items():
        if not utts:
            raise ValueError(f"enrollment {speaker!r} lists no utterances")
        x = F.normalize(stack_embeddings(emb, utts, what=f"embedding (enrollment {speaker!r})"), dim=-1)
        out[speaker] = x.mean(dim=0)
    return out
