"""The training data of one stage: data directory → dataset → per-batch crop lengths → DataLoader.

Glue between :class:`svlib.training.sv.StageConfig` and :mod:`svlib.data.dataset` / :mod:`svlib.data.augment`; the
settings are the stage's (crop range, speed perturbation, augmentation sources, batch size, seed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from svlib.data.augment import Augmenter, NoiseBank, load_rirs, simulate_rirs
from svlib.data.channel import CHANNELS, TILT_RANGE_DB, ChannelSimulator
from svlib.data.demo_noise import demo_noise_bank
from svlib.data.dataset import CropLengthBatchSampler, SpeakerTrainDataset, collate
from svlib.core.paths import default_data_root
from svlib.data.lists import read_data_dir

logger = logging.getLogger(__name__)

DEMO_RIRS_PER_ROOM = 20
"""simulated small and medium rooms for the demo profile (the recipe's "simulated small and medium rooms")."""


@dataclass
class TrainData:
    """An iterable over ``(wavs (B, N), labels (B,))`` batches plus what the trainer needs to know about them."""

    loader: torch.utils.data.DataLoader
    batch_sampler: CropLengthBatchSampler
    classes: list[str]
    """class names in label order: the speakers, then ``<spk>@sp0.9`` and ``<spk>@sp1.1`` with speed perturbation."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def build_augmenter(augment: dict | None, dataset: SpeakerTrainDataset, seed: int) -> Augmenter | None:
    """``None``; ``{musan: DIR, rirs: DIR}`` (real MUSAN + RIRS_NOISES); or ``{demo: true}`` (Debian music,
    coloured noise, babble from training speakers, simulated rooms). Either may add ``channel: P`` (or ``{p: P,
    kinds: [...], tilt_range_db: [LOW, HIGH]}``): a simulated channel (:mod:`svlib.data.channel`) with probability
    ``P``, the recipe's three outcomes sharing the rest equally."""
    if not augment:
        return None
    if augment.get("demo"):
        root = Path(augment.get("root") or default_data_root())
        babble = [dataset.load(i) for i in range(0, len(dataset), max(1, len(dataset) // 64))]
        bank = demo_noise_bank(root, babble_sources=babble, seed=seed)
        cache = root / "demo_noise" / "rirs"
        rirs = simulate_rirs(DEMO_RIRS_PER_ROOM, "small", seed=seed, cache_dir=cache)
        rirs += simulate_rirs(DEMO_RIRS_PER_ROOM, "medium", seed=seed + 1, cache_dir=cache)
    elif {"musan", "rirs"} <= set(augment):
        bank = NoiseBank.from_musan(augment["musan"])
        rirs = load_rirs(augment["rirs"])
    else:
        raise ValueError(f"augment must be null, {{demo: true}} or {{musan: DIR, rirs: DIR}}, got {augment!r}")
    channel = augment.get("channel")
    if not channel:
        return Augmenter(bank, rirs, seed=seed)
    spec = dict(channel) if isinstance(channel, dict) else {"p": channel}
    unknown = set(spec) - {"p", "kinds", "tilt_range_db"}
    if unknown or not isinstance(spec.get("p"), (int, float)) or not 0 < spec["p"] < 1:
        raise ValueError(f"augment.channel must be a probability in (0, 1) or {{p: P, kinds: [...], tilt_range_db: "
                         f"[LOW, HIGH]}}, got {channel!r}")
    simulator = ChannelSimulator(spec.get("kinds", CHANNELS), tuple(spec.get("tilt_range_db", TILT_RANGE_DB)))
    rest = (1.0 - spec["p"]) / 3
    return Augmenter(bank, rirs, p_none=rest, p_noise=rest, p_reverb=rest, channel=simulator, p_channel=spec["p"],
                     seed=seed)


def build_train_loader(config, rank: int = 0, world_size: int = 1) -> TrainData:
    """The DataLoader of a :class:`svlib.training.sv.StageConfig` for this rank."""
    data_dir = read_data_dir(config.train_dir)
    subset = getattr(config, "speed_perturb_speakers", None)
    dataset = SpeakerTrainDataset(
        data_dir.wav_scp,
        data_dir.utt2spk,
        speed_perturb=config.speed_perturb,
        perturbed_speakers=sorted(set(read_data_dir(subset).utt2spk.values())) if subset else None,
        seed=config.seed,
        cache_size=getattr(config, "cache_size", 0),
    )
    dataset.augmenter = build_augmenter(config.augment, dataset, config.seed)
    sampler = CropLengthBatchSampler(
        len(dataset),
        config.batch_size,
        min_frames=config.min_frames,
        max_frames=config.max_frames,
        seed=config.seed,
        rank=rank,
        world_size=world_size,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        # each new iterator draws a worker base seed: from its own generator, never from the global RNG, so that
        # creating the iterator on resume does not shift the dropout masks of an exactly resumed run
        generator=torch.Generator().manual_seed(config.seed),
    )
    return TrainData(loader, sampler, dataset.classes)
