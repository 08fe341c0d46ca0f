"""svlib.data.dataset: speed perturbation, crop/loop, per-batch crop lengths, sharding, the training dataset."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from svlib.data.augment import Augmenter, NoiseBank
from svlib.frontend.audio import crop_or_loop, save_audio
from svlib.data.dataset import (
    DECODED,
    SPEED_FACTORS,
    CropItem,
    CropLengthBatchSampler,
    SpeakerTrainDataset,
    collate,
    frames_to_samples,
    item_generator,
    speed_perturb,
    speed_perturbed_label,
)

SR = 16000


def dominant_hz(wav: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wav * torch.hann_window(wav.shape[0]))
    return float(torch.fft.rfftfreq(wav.shape[0], 1 / SR)[spectrum.abs().argmax()])


# ------------------------------------------------------------------------------------------ speed perturbation
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_changes_duration_and_pitch(factor):
    tone = torch.sin(2 * torch.pi * 500 * torch.arange(48000) / SR)
    out = speed_perturb(tone, factor)
    assert out.shape[0] == pytest.approx(48000 / factor, abs=1)
    assert dominant_hz(out) == pytest.approx(500 * factor, abs=3)


def test_speed_perturb_identity_and_errors():
    wav = torch.randn(1000)
    assert speed_perturb(wav, 1.0) is wav
    with pytest.raises(ValueError, match="positive finite"):
        speed_perturb(wav, 0.0)


def test_speed_perturbed_label_mapping():
    assert SPEED_FACTORS == (1.0, 0.9, 1.1)
    assert [speed_perturbed_label(3, k, 10) for k in range(3)] == [3, 13, 23]
    with pytest.raises(ValueError, match="speed index"):
        speed_perturbed_label(0, 3, 10)
    with pytest.raises(ValueError, match="speaker_index"):
        speed_perturbed_label(10, 0, 10)


# ----------------------------------------------------------------------------------------------------- crop
def test_crop_or_loop():
    wav = torch.arange(10.0)
    gen = torch.Generator().manual_seed(0)
    crop = crop_or_loop(wav, 4, gen)
    assert crop.shape == (4,) and torch.equal(crop, torch.arange(crop[0], crop[0] + 4))  # a contiguous piece
    assert torch.equal(crop_or_loop(wav, 25), torch.cat([wav, wav, wav[:5]]))  # looped from the start
    assert torch.equal(crop_or_loop(wav, 10), wav)
    starts = {int(crop_or_loop(wav, 4, gen)[0]) for _ in range(200)}
    assert starts == set(range(7))  # every offset in [0, N - n] occurs
    a = crop_or_loop(wav, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, crop_or_loop(wav, 4, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="1-D"):
        crop_or_loop(torch.zeros(2, 10), 4)


def test_frames_to_samples_matches_the_paper():
    assert frames_to_samples(200) == 32240 and frames_to_samples(300) == 48240  # 2–3 s
    assert frames_to_samples(500) / SR == pytest.approx(5.0, abs=0.02)


# ---------------------------------------------------------------------------------------------- batch sampler
def epoch_batches(sampler: CropLengthBatchSampler, epoch: int) -> list[list[CropItem]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batch_sampler_crop_length_constant_per_batch_and_in_range():
    sampler = CropLengthBatchSampler(1000, 16, min_frames=200, max_frames=300, seed=1)
    batches = epoch_batches(sampler, 0)
    assert len(batches) == len(sampler) == 1000 // 16
    lengths = []
    for batch in batches:
        assert len(batch) == 16 and len({it.num_samples for it in batch}) == 1
        n = batch[0].num_samples
        assert 32240 <= n <= 48240 and (n - 400) % 160 == 0
        lengths.append(n)
    assert len(set(lengths)) > 20  # drawn per batch


def test_batch_sampler_reproducible_and_epoch_dependent():
    a = CropLengthBatchSampler(500, 8, seed=3)
    b = CropLengthBatchSampler(500, 8, seed=3)
    assert epoch_batches(a, 2) == epoch_batches(b, 2)
    e0, e1 = epoch_batches(a, 0), epoch_batches(a, 1)
    assert [it.index for bt in e0 for it in bt] != [it.index for bt in e1 for it in bt]
    assert [bt[0].num_samples for bt in e0] != [bt[0].num_samples for bt in e1]
    assert all(it.epoch == 1 for bt in e1 for it in bt)
    assert epoch_batches(CropLengthBatchSampler(500, 8, seed=4), 2) != epoch_batches(b, 2)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_shards_disjoint_and_covering(drop_last):
    world = 4
    samplers = [
        CropLengthBatchSampler(1200, 32, seed=0, rank=r, world_size=world, drop_last=drop_last) for r in range(world)
    ]
    shards = [[it.index for bt in epoch_batches(s, 5) for it in bt] for s in samplers]
    assert len({len(s) for s in shards}) == 1 and len({len(s) for s in samplers}) == 1  # equal steps per rank
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat))  # disjoint
    if drop_last:
        assert len(flat) == 1200 // (world * 32) * world * 32
    else:
        assert set(flat) == set(range(1200))  # covering
    # every rank crops to the same length at the same step
    crops = [[bt[0].num_samples for bt in epoch_batches(s, 5)] for s in samplers]
    assert all(c == crops[0] for c in crops)


def test_batch_sampler_pads_uneven_shards_and_resumes():
    samplers = [CropLengthBatchSampler(10, 4, seed=0, rank=r, world_size=3, drop_last=False) for r in range(3)]
    shards = [[it.index for bt in epoch_batches(s, 0) for it in bt] for s in samplers]
    assert [len(s) for s in shards] == [4, 4, 4] and set(sum(shards, [])) == set(range(10))
    sampler = CropLengthBatchSampler(100, 8, seed=0)
    full = epoch_batches(sampler, 3)
    sampler.set_epoch(3, skip_batches=5)
    assert len(sampler) == len(full) - 5 and list(sampler) == full[5:]
    with pytest.raises(ValueError, match="drop_last=True leaves no batch"):
        CropLengthBatchSampler(10, 8, world_size=2)
    with pytest.raises(ValueError, match="min_frames <= max_frames"):
        CropLengthBatchSampler(10, 2, min_frames=300, max_frames=200)


# ---------------------------------------------------------------------------------------------------- dataset
@pytest.fixture
def corpus(tmp_path):
    """3 speakers × 2 utterances of pure tones (speaker s at 400 + 200·s Hz), 0.5–1.2 s long."""
    wav_scp, utt2spk = {}, {}
    for s in range(3):
        for u in range(2):
            n = int((0.5 + 0.7 * u) * SR)
            tone = 0.5 * np.sin(2 * np.pi * (400 + 200 * s) * np.arange(n) / SR)
            path = tmp_path / f"spk{s}-utt{u}.wav"
            sf.write(path, tone.astype(np.float32), SR)
            wav_scp[f"spk{s}-utt{u}"], utt2spk[f"spk{s}-utt{u}"] = str(path), f"spk{s}"
    return wav_scp, utt2spk


def test_dataset_speed_perturbed_labels_follow_the_factor(corpus):
    ds = SpeakerTrainDataset(*corpus, speed_perturb=True, seed=0)
    assert ds.num_speakers == 3 and ds.num_classes == 9 and len(ds) == 6
    seen = set()
    for epoch in range(6):
        for index in range(len(ds)):
            wav, label = ds[CropItem(index, 16000, epoch)]
            assert wav.shape == (16000,) and wav.dtype == torch.float32
            k, speaker = divmod(label, 3)
            assert speaker == ds.labels[index]
            expected = (400 + 200 * speaker) * SPEED_FACTORS[k]
            assert dominant_hz(wav) == pytest.approx(expected, abs=4)
            seen.add(k)
    assert seen == {0, 1, 2}


def test_dataset_is_deterministic_per_seed_epoch_index(corpus):
    g = torch.Generator().manual_seed(0)
    bank = NoiseBank(noise=[torch.randn(8000, generator=g)], music=[torch.randn(8000, generator=g)],
                     speech=[torch.randn(8000, generator=g) for _ in range(4)])
    rir = torch.zeros(800)
    rir[20], rir[300] = 1.0, 0.4
    aug = Augmenter(bank, [rir])
    ds = SpeakerTrainDataset(*corpus, speed_perturb=True, augmenter=aug, seed=7, cache_size=2)
    a, la = ds[CropItem(2, 12000, 4)]
    b, lb = ds[(2, 12000, 4)]
    assert torch.equal(a, b) and la == lb
    outs = {tuple(ds[CropItem(2, 12000, e)][0][:50].tolist()) for e in range(8)}
    assert len(outs) > 1  # other epochs draw differently
    assert ds.load(2) is ds.load(2) and len(DECODED) <= 2
    gen = item_generator(7, 4, 2)
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=item_generator(7, 4, 2)))


def test_decoded_audio_is_shared_by_the_datasets_of_a_process(corpus, tmp_path):
    """Two datasets in one process (two stages in turn) decode a file once; a file written again is decoded again."""
    DECODED.clear()
    first = SpeakerTrainDataset(*corpus, cache_size=8)
    second = SpeakerTrainDataset(*corpus, cache_size=8)
    assert second.load(1) is first.load(1) and len(DECODED) == 1
    assert SpeakerTrainDataset(*corpus).load(1) is not first.load(1)  # cache_size 0: no cache
    path = tmp_path / "u.wav"
    save_audio(path, 0.1 * torch.ones(1600), 16000, subtype="FLOAT")
    ds = SpeakerTrainDataset({"u": str(path)}, {"u": "s"}, cache_size=8)
    before = ds.load(0)
    save_audio(path, 0.1 * torch.ones(3200), 16000, subtype="FLOAT")
    assert before.shape[0] == 1600 and ds.load(0).shape[0] == 3200


def test_dataloader_with_sampler_and_collate(corpus):
    ds = SpeakerTrainDataset(*corpus, speed_perturb=False)
    sampler = CropLengthBatchSampler(len(ds), 3, min_frames=50, max_frames=80, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2
    for wavs, labels in batches:
        assert wavs.dtype == torch.float32 and wavs.dim() == 2 and wavs.shape[0] == 3
        assert frames_to_samples(50) <= wavs.shape[1] <= frames_to_samples(80)
        assert labels.dtype == torch.long and labels.shape == (3,) and int(labels.max()) < 3


def test_dataset_and_collate_errors(corpus):
    wav_scp, utt2spk = corpus
    with pytest.raises(ValueError, match="no speaker in utt2spk"):
        SpeakerTrainDataset({**wav_scp, "orphan": "x.wav"}, utt2spk)
    with pytest.raises(ValueError, match="not in speakers"):
        SpeakerTrainDataset(wav_scp, utt2spk, speakers=["spk0"])
    ds = SpeakerTrainDataset({"u": "sox a.wav -t wav - |"}, {"u": "s"})
    with pytest.raises(ValueError, match="Kaldi pipe"):
        ds[(0, 100)]
    with pytest.raises(ValueError, match="equal-length crops"):
        collate([(torch.zeros(5), 0), (torch.zeros(6), 1)])


def test_batches_do_not_depend_on_the_number_of_workers(corpus):
    g = torch.Generator().manual_seed(0)
    bank = NoiseBank(noise=[torch.randn(8000, generator=g)], music=[torch.randn(8000, generator=g)],
                     speech=[torch.randn(8000, generator=g) for _ in range(4)])
    ds = SpeakerTrainDataset(*corpus, speed_perturb=True, augmenter=Augmenter(bank, [torch.ones(1)]), seed=1)
    sampler = CropLengthBatchSampler(len(ds), 2, min_frames=40, max_frames=60, seed=0)
    sampler.set_epoch(1)

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        return list(loader)

    for (wa, la), (wb, lb) in zip(run(0), run(2), strict=True):
        # the same draws; arithmetic may differ in the last bits (workers run torch with one thread)
        assert torch.allclose(wa, wb, atol=1e-5) and torch.equal(la, lb)
