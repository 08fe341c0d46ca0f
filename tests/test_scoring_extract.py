"""Batched whole-utterance extraction equals one-by-one embedding; cosine scoring; multi-utterance enrollment."""

import pytest
import torch
import torch.nn.functional as F

from svlib.frontend.audio import load_audio, save_audio
from svlib.data.lists import Trial, TrialList
from svlib.model import SpeakerModel
import svlib.scoring.extract as extract
from svlib.frontend.features import FeatureExtractor
from svlib.scoring.extract import (
    FEATURE_CACHE,
    FeatureCache,
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


def test_cached_features_batch_like_the_front_end(wavs):
    """Features computed one utterance at a time and batched by the cache equal the front end's own batch (padding
    value, the odd last frame outside the mask)."""
    frontend = FeatureExtractor()
    audio = [load_audio(p) for p in wavs.values()] + [0.1 * torch.randn(16160)]  # the last: 99 fbank frames
    expected, expected_mask = frontend(audio)
    alone = [frontend([w]) for w in audio]
    feats, mask = extract._batch_features([(f[0], int(m.sum())) for f, m in alone], torch.device("cpu"))
    assert any(int(m.sum()) < f.shape[1] for f, m in alone)  # an utterance with an odd number of fbank frames
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask, expected_mask)


def test_features_are_computed_once_per_utterance_for_every_model(tiny, wavs, tmp_path, monkeypatch):
    calls = []
    forward = FeatureExtractor.forward
    monkeypatch.setattr(FeatureExtractor, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    FEATURE_CACHE.clear()
    first = extract_embeddings(tiny, wavs, batch_seconds=3.0, progress=False)
    assert len(calls) == len(wavs) and len(FEATURE_CACHE) == len(wavs)
    torch.manual_seed(5)
    other = SpeakerModel.build("tiny", head="mfa").eval()
    again = extract_embeddings(other, wavs, batch_seconds=3.0, progress=False)
    assert len(calls) == len(wavs)  # the second model reused every utterance's features
    monkeypatch.setattr(FEATURE_CACHE, "max_bytes", 0)  # a list too large for the cache: features not kept
    uncached = extract_embeddings(other, wavs, batch_seconds=3.0, progress=False)
    assert len(calls) == len(wavs) + 3  # three batches through the front end
    for utt in wavs:
        torch.testing.assert_close(again[utt], uncached[utt], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(first[utt], tiny.embed(wavs[utt]), atol=1e-5, rtol=1e-4)
    monkeypatch.undo()
    # a file written again is a new key: its features are computed again
    path = tmp_path / "changed.wav"
    save_audio(path, 0.1 * torch.randn(16000), 16000, subtype="FLOAT")
    before = extract_embeddings(tiny, {"x": str(path)}, progress=False)["x"]
    save_audio(path, 0.1 * torch.randn(20000), 16000, subtype="FLOAT")
    after = extract_embeddings(tiny, {"x": str(path)}, progress=False)["x"]
    torch.testing.assert_close(after, tiny.embed(str(path)), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before, after)


def test_feature_cache_drops_the_least_recently_used_beyond_its_budget():
    cache = FeatureCache(max_bytes=2 * 10 * 160 * 4)
    item = torch.zeros(10, 160)
    cache.put("a", item, 10)
    cache.put("b", item, 10)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", item, 10)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.clear()
    assert len(cache) == 0


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
