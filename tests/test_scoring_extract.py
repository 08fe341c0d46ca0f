"""Batched whole-utterance extraction equals one-by-one embedding; cosine scoring; multi-utterance enrollment."""

import pytest
import torch
import torch.nn.functional as F

from svlib.frontend.audio import load_audio, save_audio
from svlib.data.lists import Trial, TrialList
from svlib.model import SpeakerModel
from svlib.scoring.extract import (
    Segment,
    cosine_scores,
    enroll_embeddings,
    extract_embeddings,
    length_batches,
    probe_duration,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SpeakerModel.build("tiny", head="adapter_mfa", encoder_overrides={"conformer_conv_dropout": 0.0}).eval()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Four synthetic utterances of different lengths (0.6–2.3 s) written as 16 kHz WAV files."""
    root = tmp_path_factory.mktemp("wavs")
    gen = torch.Generator().manual_seed(1)
    utt2path = {}
    for i, seconds in enumerate([1.3, 0.6, 2.3, 0.9]):
        path = root / f"utt{i}.wav"
        save_audio(path, 0.1 * torch.randn(int(seconds * 16000), generator=gen), 16000, subtype="FLOAT")
        utt2path[f"utt{i}"] = str(path)
    return utt2path


def test_length_batches_respects_budget():
    durations = {"a": 5.0, "b": 1.0, "c": 3.0, "d": 2.0, "e": 12.0}
    batches = length_batches(durations, batch_seconds=6.0)
    assert batches == [["e"], ["a"], ["c", "d"], ["b"]]
    for batch in batches[1:]:
        assert len(batch) * max(durations[k] for k in batch) <= 6.0
    with pytest.raises(ValueError, match="batch_seconds"):
        length_batches(durations, 0)


def test_batched_extraction_equals_one_by_one(tiny, wavs):
    emb = extract_embeddings(tiny, wavs, batch_seconds=3.0, progress=False)  # batches [2.3], [1.3, 0.9], [0.6]
    assert list(emb) == list(wavs)
    for utt, path in wavs.items():
        assert emb[utt].shape == (256,) and emb[utt].dtype == torch.float32
        torch.testing.assert_close(emb[utt], tiny.embed(path), atol=1e-5, rtol=1e-4)


def test_max_seconds_and_segments_crop_the_audio(tiny, wavs):
    seg = Segment(wavs["utt2"], start=0.5, duration=1.2)
    assert probe_duration(seg) == pytest.approx(1.2)
    emb = extract_embeddings(tiny, {"crop": seg, "first": wavs["utt2"]}, max_seconds=1.0, progress=False)
    wav = load_audio(wavs["utt2"])
    torch.testing.assert_close(emb["crop"], tiny.embed(wav[8000:24000]), atol=1e-5, rtol=1e-4)  # 1.2 s cut to 1 s
    torch.testing.assert_close(emb["first"], tiny.embed(wav[:16000]), atol=1e-5, rtol=1e-4)


def test_model_mode_is_restored(tiny, wavs):
    tiny.train()
    try:
        extract_embeddings(tiny, {"utt1": wavs["utt1"]}, progress=False)
        assert tiny.training
    finally:
        tiny.eval()


def test_cosine_scores_and_enrollment():
    gen = torch.Generator().manual_seed(0)
    emb = {k: torch.randn(8, generator=gen) for k in "abcd"}
    trials = [("a", "b", 1), ("c", "d", 0), ("a", "a", 1)]
    scores = cosine_scores(emb, trials)
    expected = torch.stack([F.cosine_similarity(emb[e], emb[t], dim=0) for e, t, _ in trials])
    torch.testing.assert_close(scores, expected)
    assert scores[2] == pytest.approx(1.0)
    # A TrialList from svlib.data.lists (Trial objects) scores the same.
    trial_list = TrialList([Trial(e, t, bool(label)) for e, t, label in trials])
    torch.testing.assert_close(cosine_scores(emb, trial_list), expected)

    enrolled = enroll_embeddings(emb, {"spk": ["a", "b"]})
    torch.testing.assert_close(enrolled["spk"], (F.normalize(emb["a"], dim=0) + F.normalize(emb["b"], dim=0)) / 2)
    with pytest.raises(KeyError, match="'z'"):
        cosine_scores(emb, [("a", "z")])
    with pytest.raises(ValueError, match="no utterances"):
        enroll_embeddings(emb, {"spk": []})
