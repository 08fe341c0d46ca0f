"""Training examples for the speaker classifier: speed perturbation, cropping, per-batch crop lengths, sharding.

The paper's recipe (RECIPE.md, "Training recipe") trains on random crops whose length is drawn once per batch
(2–3 s in stages 1–2, 5–6 s in stage 3), repeats short recordings to length, and in stages 1–2 triples the speaker
set with speed perturbation (0.9 and 1.1 become new classes) and augments each crop on the fly (see
:mod:`svlib.data.augment`). This module holds those pieces:

- :func:`speed_perturb` and :func:`speed_perturbed_label` — speed perturbation and its label mapping;
- :func:`~svlib.frontend.audio.crop_or_loop` (random crop, or loop a short recording to length) per item;
- :class:`CropLengthBatchSampler` — shuffled, sharded batches of :class:`CropItem` with one crop length per batch;
- :class:`SpeakerTrainDataset` and :func:`collate` — decoding, perturbing, cropping and augmenting one item.

Determinism. Everything random is drawn from generators seeded by integers, never from global RNG state:

- the batch sampler's permutation and crop lengths from ``(seed, epoch)`` (the same on every rank, so all ranks
  crop to the same length at the same step);
- each item's speed factor, crop offset and augmentation from ``(seed, epoch, utterance index)``
  (:func:`item_generator`), the epoch travelling inside the :class:`CropItem`.

So a given ``(seed, epoch, rank, world_size)`` yields the same batches with the same random draws whatever the
number of DataLoader workers, whether workers are persistent, and after a resume (``set_epoch(epoch, skip_batches=k)``);
the waveforms agree to float rounding (torch kernels may sum in another order with another thread count).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from fractions import Fraction
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from svlib.data.augment import Augmenter
from svlib.frontend.audio import crop_or_loop, file_identity, load_audio, resample

logger = logging.getLogger(__name__)

__all__ = [
    "FRAME_LENGTH",
    "FRAME_SHIFT",
    "SPEED_FACTORS",
    "CropItem",
    "CropLengthBatchSampler",
    "SpeakerTrainDataset",
    "collate",
    "frames_to_samples",
    "item_generator",
    "speed_perturb",
    "speed_perturbed_label",
]

SPEED_FACTORS: tuple[float, ...] = (1.0, 0.9, 1.1)
"""Speed factors of the recipe; factor ``SPEED_FACTORS[k]`` maps speaker ``s`` to class ``s + k * num_speakers``."""

FRAME_LENGTH = 400
"""Samples per 25 ms fbank frame at 16 kHz (as in :mod:`svlib.frontend.features`)."""

FRAME_SHIFT = 160
"""Samples per 10 ms fbank hop at 16 kHz (as in :mod:`svlib.frontend.features`)."""


# ----------------------------------------------------------------------------------------------- speed perturbation
def _speed_ratio(factor: float) -> Fraction:
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"speed factor must be a positive finite number (e.g. 0.9, 1.0, 1.1), got {factor!r}")
    return Fraction(float(factor)).limit_denominator(1000)


def speed_perturb(wav: torch.Tensor, factor: float) -> torch.Tensor:
    """Play ``wav`` (``(..., N)``) ``factor`` times faster: duration × 1/factor, pitch × factor (Kaldi/sox ``speed``).

    The waveform is treated as if sampled at ``factor · sr`` and resampled to ``sr``; this is
    ``torchaudio.functional.resample(wav, sr, sr / factor)`` read back at ``sr``, computed with the reduced ratio
    (``1.1 = 11/10``, ``0.9 = 9/10``) so the polyphase kernel stays small. Output length ``ceil(N / factor)``
    (factor 1.1: 3 s → 2.73 s, higher voice; 0.9: 3 s → 3.33 s, lower voice). Factor 1.0 returns ``wav`` itself.
    """
    ratio = _speed_ratio(factor)
    if ratio == 1:
        return wav
    # resample from "orig" to "new" with orig/new = factor: N samples -> ceil(N * new / orig) = ceil(N / factor)
    return resample(wav, ratio.numerator, ratio.denominator)


def speed_perturbed_label(speaker_index: int, k: int, num_speakers: int) -> int:
    """Class of speaker ``speaker_index`` under speed factor ``SPEED_FACTORS[k]``: ``speaker_index + k·num_speakers``.

    ``k = 0`` (factor 1.0) keeps the original class; ``k = 1`` (0.9) and ``k = 2`` (1.1) are new classes, so the
    classifier has ``3 · num_speakers`` outputs (VoxCeleb2 dev: 3 × 5,994 = 17,982).
    """
    if not 0 <= speaker_index < num_speakers:
        raise ValueError(f"speaker_index must be in [0, {num_speakers}), got {speaker_index}")
    if not 0 <= k < len(SPEED_FACTORS):
        raise ValueError(f"speed index k must be in [0, {len(SPEED_FACTORS)}) for factors {SPEED_FACTORS}, got {k}")
    return speaker_index + k * num_speakers


# ------------------------------------------------------------------------------------------------------- cropping
def frames_to_samples(num_frames: int, frame_length: int = FRAME_LENGTH, frame_shift: int = FRAME_SHIFT) -> int:
    """Samples giving exactly ``num_frames`` fbank frames: ``(num_frames - 1)·frame_shift + frame_length``.

    The paper's "input frame length 200–300" counts 10 ms fbank frames: 200 frames = 32,240 samples ≈ 2.0 s,
    300 frames = 48,240 samples ≈ 3.0 s at 16 kHz (stage 3: 500–600 frames ≈ 5–6 s).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return (num_frames - 1) * frame_shift + frame_length


# ----------------------------------------------------------------------------------------------------- seeding
def _seed_from(*keys: int) -> int:
    """A 63-bit seed mixing the integer ``keys`` (numpy ``SeedSequence``: nearby keys give unrelated streams)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The CPU generator of one training item, seeded from ``(seed, epoch, index)``.

    Each item draws, in this order: its speed factor (if speed perturbation is on), its crop offset, then its
    augmentation. Seeding per item (not per worker) makes the sample independent of DataLoader workers.
    """
    return torch.Generator().manual_seed(_seed_from(seed, epoch, index))


# ----------------------------------------------------------------------------------------------- batch sampler
class CropItem(NamedTuple):
    """One element of a batch: which utterance, how many samples to crop, and in which epoch (for seeding)."""

    index: int
    num_samples: int
    epoch: int = 0


class CropLengthBatchSampler:
    """Shuffled, sharded batches of :class:`CropItem` whose crop length is drawn once per batch.

    Per epoch (all randomness from ``(seed, epoch)``, identical on every rank):

    1. permute ``range(num_items)`` (or keep the order with ``shuffle=False``);
    2. make the rank shards equal, as ``torch.utils.data.DistributedSampler`` does: with ``drop_last`` keep the
       first ``world_size · batch_size · ⌊num_items / (world_size · batch_size)⌋`` items (every batch full);
       otherwise pad by wrapping to a multiple of ``world_size`` (the last batch of each rank may be short);
    3. rank ``r`` takes positions ``r, r + world_size, ...`` — shards are disjoint (up to the wrap padding);
    4. cut the shard into batches of ``batch_size``; batch ``b`` crops to
       ``frames_to_samples(F_b)`` samples with ``F_b ~ U{min_frames, ..., max_frames}`` (RECIPE.md: 200–300 frames,
       i.e. 2–3 s, in stages 1–2; 500–600 in stage 3). All ranks use the same ``F_b`` at step ``b``.

    Call :meth:`set_epoch` before each epoch; ``skip_batches`` resumes in the middle of one.

    Args:
        num_items: dataset size (number of utterances).
        batch_size: items per batch on this rank (the recipe: 64 per GPU, 32 in stage 3).
        min_frames, max_frames: inclusive range of the crop length in 10 ms fbank frames.
        frame_shift, frame_length: samples per fbank hop and window (160 and 400 at 16 kHz).
        seed: base seed; shuffle: permute each epoch; drop_last: drop the incomplete tail (see step 2).
        rank, world_size: this process's shard (as in DDP).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        min_frames: int = 200,
        max_frames: int = 300,
        frame_shift: int = FRAME_SHIFT,
        frame_length: int = FRAME_LENGTH,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 1 <= min_frames <= max_frames:
            raise ValueError(
                f"need 1 <= min_frames <= max_frames, got min_frames={min_frames}, max_frames={max_frames}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if drop_last and num_items < world_size * batch_size:
            raise ValueError(
                f"drop_last=True leaves no batch: num_items={num_items} < world_size·batch_size="
                f"{world_size}·{batch_size}; use a smaller batch_size or drop_last=False"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.min_frames = min_frames
        self.max_frames = max_frames
        self.frame_shift = frame_shift
        self.frame_length = frame_length
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch (reshuffles, redraws crop lengths); skip its first ``skip_batches`` batches (resume)."""
        if epoch < 0 or skip_batches < 0:
            raise ValueError(f"epoch and skip_batches must be >= 0, got epoch={epoch}, skip_batches={skip_batches}")
        self.epoch = epoch
        self.skip_batches = skip_batches

    def _items_per_rank(self) -> int:
        if self.drop_last:
            return self.num_items // (self.world_size * self.batch_size) * self.batch_size
        return -(-self.num_items // self.world_size)

    def num_batches(self) -> int:
        """Batches per rank per epoch (the same on every rank), including skipped ones."""
        return -(-self._items_per_rank() // self.batch_size)

    def __len__(self) -> int:
        return max(self.num_batches() - self.skip_batches, 0)

    def crop_samples(self) -> list[int]:
        """Crop length in samples of every batch of the current epoch (``(num_batches,)``, same on all ranks)."""
        gen = torch.Generator().manual_seed(_seed_from(self.seed, self.epoch, 1))
        frames = torch.randint(self.min_frames, self.max_frames + 1, (self.num_batches(),), generator=gen)
        return [frames_to_samples(int(f), self.frame_length, self.frame_shift) for f in frames]

    def shard(self) -> list[int]:
        """Utterance indices of this rank for the current epoch, in batch order (steps 1–3)."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(_seed_from(self.seed, self.epoch, 0))
            order = torch.randperm(self.num_items, generator=gen).tolist()
        else:
            order = list(range(self.num_items))
        total = self._items_per_rank() * self.world_size
        if total > len(order):  # wrap-pad (drop_last=False)
            order = (order * -(-total // len(order)))[:total]
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[CropItem]]:
        shard, crops = self.shard(), self.crop_samples()
        for b in range(self.skip_batches, len(crops)):
            chunk = shard[b * self.batch_size : (b + 1) * self.batch_size]
            yield [CropItem(i, crops[b], self.epoch) for i in chunk]


# ------------------------------------------------------------------------------------------------------ dataset
DECODED: OrderedDict[tuple, torch.Tensor] = OrderedDict()
"""Decoded training utterances of this process, least recently used first out, keyed by file
(:func:`~svlib.frontend.audio.file_identity`) and rate; at most the ``cache_size`` of the dataset that last added to
it (:meth:`SpeakerTrainDataset.load`). Each DataLoader worker process has its own."""


class SpeakerTrainDataset(torch.utils.data.Dataset):
    """Speaker-labelled training crops from Kaldi-style ``wav.scp`` / ``utt2spk`` mappings.

    ``dataset[CropItem(index, num_samples, epoch)]`` returns ``(wav (num_samples,) float32, label)``:

    1. decode utterance ``index`` (``utts[index]``) with :func:`svlib.frontend.audio.load_audio` at ``sample_rate``
       (optionally from a small LRU cache of decoded waveforms);
    2. with ``speed_perturb``: draw ``k`` uniformly from ``{0, 1, 2}`` (factors :data:`SPEED_FACTORS`
       = 1.0, 0.9, 1.1), apply :func:`speed_perturb` and use class :func:`speed_perturbed_label`; the utterances of
       speakers outside ``perturbed_speakers`` keep factor 1.0 (the draw is made all the same, so the later draws
       do not depend on the subset);
    3. :func:`crop_or_loop` to ``num_samples``;
    4. with an ``augmenter``: ``augmenter(wav, generator=...)`` (none / noise / reverb, :mod:`svlib.data.augment`).

    All draws come from :func:`item_generator` ``(seed, epoch, index)``.

    Args:
        wav_scp: utterance id → audio path (every utterance must have a speaker in ``utt2spk``).
        utt2spk: utterance id → speaker id.
        speakers: class order (index = base label); default: the sorted speakers of the utterances.
        speed_perturb: triple the classes with speed perturbation (stages 1–2 of the recipe; off in stage 3).
        perturbed_speakers: with ``speed_perturb``, the speakers whose utterances are perturbed (§3.3: those of
            VoxCeleb2, never those of VoxBlink2); ``None``: every speaker.
        augmenter: on-the-fly augmentation, or ``None`` (stage 3).
        sample_rate: decoding rate (16 kHz for w2v-BERT 2.0).
        seed: base seed of the per-item generators.
        cache_size: number of decoded utterances kept in memory per process (0: no cache; useful for the small
            demo corpus). The cache belongs to the process, not to the dataset (:data:`DECODED`): the stages that
            one process runs in turn (a chapter of the book runs up to six) decode each file once.
    """

    def __init__(
        self,
        wav_scp: dict[str, str],
        utt2spk: dict[str, str],
        speakers: Sequence[str] | None = None,
        speed_perturb: bool = False,
        perturbed_speakers: Sequence[str] | None = None,
        augmenter: Augmenter | None = None,
        sample_rate: int = 16000,
        seed: int = 0,
        cache_size: int = 0,
    ) -> None:
        if not wav_scp:
            raise ValueError("wav_scp is empty: expected at least one 'utterance -> audio path' entry")
        missing = [u for u in wav_scp if u not in utt2spk]
        if missing:
            raise ValueError(
                f"{len(missing)} utterance(s) of wav_scp have no speaker in utt2spk (first: {missing[:3]}); "
                "expected every utterance of wav.scp to appear in utt2spk"
            )
        extra = len(set(utt2spk) - set(wav_scp))
        if extra:
            logger.warning("ignoring %d utt2spk entries without audio in wav_scp", extra)
        self.utts: list[str] = sorted(wav_scp)
        self.paths: list[str] = [wav_scp[u] for u in self.utts]
        self.speakers: list[str] = sorted({utt2spk[u] for u in self.utts}) if speakers is None else list(speakers)
        spk_index = {s: i for i, s in enumerate(self.speakers)}
        if len(spk_index) != len(self.speakers):
            raise ValueError("speakers contains duplicates; expected each speaker id once")
        unknown = sorted({utt2spk[u] for u in self.utts} - set(spk_index))
        if unknown:
            raise ValueError(f"{len(unknown)} speaker(s) of utt2spk are not in speakers (first: {unknown[:3]})")
        self.labels: list[int] = [spk_index[utt2spk[u]] for u in self.utts]
        self.speed_perturb = bool(speed_perturb)
        self.perturbed_speakers: list[str] = []
        if self.speed_perturb:
            chosen = set(self.speakers if perturbed_speakers is None else perturbed_speakers)
            self.perturbed_speakers = [s for s in self.speakers if s in chosen]
            if not self.perturbed_speakers:
                raise ValueError("speed perturbation is on but none of the training speakers is among "
                                 f"perturbed_speakers (first: {sorted(chosen)[:3]})")
        # class of (speaker index, factor index k): k = 0 is the speaker; perturbed speakers get two more classes
        position = {s: j for j, s in enumerate(self.perturbed_speakers)}
        self._classes = [
            [i if k == 0 else (self.num_speakers + (k - 1) * len(position) + position[s] if s in position else None)
             for k in range(len(SPEED_FACTORS))]
            for i, s in enumerate(self.speakers)
        ]
        self.augmenter = augmenter
        self.sample_rate = sample_rate
        self.seed = seed
        self.cache_size = cache_size
        logger.info(
            "SpeakerTrainDataset: %d utterances, %d speakers, %d classes (speed perturbation %s, augmentation %s)",
            len(self.utts), self.num_speakers, self.num_classes, self.speed_perturb, augmenter is not None,
        )

    @property
    def num_speakers(self) -> int:
        """Number of real speakers."""
        return len(self.speakers)

    @property
    def num_classes(self) -> int:
        """Classifier outputs: ``num_speakers + 2 · len(perturbed_speakers)`` (``3 · num_speakers`` when every speaker
        is perturbed, :func:`speed_perturbed_label`)."""
        return self.num_speakers + (len(SPEED_FACTORS) - 1) * len(self.perturbed_speakers)

    @property
    def classes(self) -> list[str]:
        """Class names in label order: the speakers, then ``<spk>@sp0.9`` and ``<spk>@sp1.1`` of the perturbed ones."""
        return list(self.speakers) + [f"{s}@sp{f:g}" for f in SPEED_FACTORS[1:] for s in self.perturbed_speakers]

    def __len__(self) -> int:
        return len(self.utts)

    def load(self, index: int) -> torch.Tensor:
        """Decoded utterance ``index`` (``(N,)`` float32 at ``sample_rate``), through the process's LRU cache
        (:data:`DECODED`) if ``cache_size`` > 0."""
        path = self.paths[index]
        if path.rstrip().endswith("|"):
            raise ValueError(
                f"utterance {self.utts[index]!r}: wav.scp entry {path!r} is a Kaldi pipe command; "
                "expected a path to an audio file (decode the pipe to files first)"
            )
        if self.cache_size <= 0:
            return load_audio(path, self.sample_rate)
        key = (*file_identity(path), self.sample_rate)
        wav = DECODED.get(key)
        if wav is not None:
            DECODED.move_to_end(key)
            return wav
        wav = load_audio(path, self.sample_rate)
        DECODED[key] = wav
        while len(DECODED) > self.cache_size:
            DECODED.popitem(last=False)
        return wav

    def __getitem__(self, item: CropItem | tuple[int, int] | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, num_samples, epoch = CropItem(*item)
        if not 0 <= index < len(self.utts):
            raise IndexError(f"utterance index {index} out of range [0, {len(self.utts)})")
        gen = item_generator(self.seed, epoch, index)
        wav, label = self.load(index), self.labels[index]
        # 2. speed perturbation (draw first, so the crop and augmentation draws do not depend on it being on)
        if self.speed_perturb:
            k = int(torch.randint(0, len(SPEED_FACTORS), (1,), generator=gen))
            if self._classes[label][k] is not None:  # None: a speaker outside perturbed_speakers
                wav = speed_perturb(wav, SPEED_FACTORS[k])
                label = self._classes[label][k]
        # 3. crop / loop
        wav = crop_or_loop(wav, num_samples, gen)
        # 4. augmentation
        if self.augmenter is not None:
            wav = self.augmenter(wav, generator=gen)
        return wav.to(torch.float32).contiguous(), label


def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[(wav (N,), label), ...]`` into ``(wavs (B, N) float32, labels (B,) long)``.

    All crops of a batch have the same ``N`` (:class:`CropLengthBatchSampler` draws one length per batch).
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    lengths = sorted({int(w.shape[-1]) for w, _ in batch})
    if len(lengths) > 1:
        raise ValueError(
            f"collate expects equal-length crops (one crop length per batch), got lengths {lengths[:5]}; "
            "use CropLengthBatchSampler as the DataLoader's batch_sampler"
        )
    wavs = torch.stack([w for w, _ in batch]).to(torch.float32)
    labels = torch.tensor([int(y) for _, y in batch], dtype=torch.long)
    return wavs, labels
