"""The on-disk embedding cache: shards resume after an interruption, a foreign cache is refused, rows are read back
one shard at a time or by key, and QMF reads only the rows it needs."""

import json

import pytest
import torch

import svlib.scoring.extract as extract_module
from svlib.frontend.audio import save_audio
from svlib.model import SpeakerModel
from svlib.scoring.extract import (
    ShardCache,
    embedding_cache,
    extract_cached,
    extract_embeddings,
    extract_to_shards,
    model_fingerprint,
    probe_duration,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SpeakerModel.build("tiny", head="adapter_mfa", encoder_overrides={"conformer_conv_dropout": 0.0}).eval()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """Seven synthetic utterances of 0.5–1.1 s (16 kHz WAV files), keys given out of order."""
    root = tmp_path_factory.mktemp("shard-wavs")
    gen = torch.Generator().manual_seed(3)
    utt2path = {}
    for i in (4, 0, 6, 2, 5, 1, 3):
        path = root / f"u{i}.wav"
        save_audio(path, 0.1 * torch.randn(int((0.5 + 0.1 * i) * 16000), generator=gen), 16000, subtype="FLOAT")
        utt2path[f"u{i}"] = str(path)
    return utt2path


class CountingExtractor:
    """Wraps extract_embeddings: records the keys of each call (one call per shard); raises on call ``fail_at``."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, model, utt2path, **kwargs):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(sorted(utt2path))
        return extract_embeddings(model, utt2path, **kwargs)


def test_interrupted_extraction_resumes_with_the_missing_shards_only(tiny, wavs, tmp_path, monkeypatch):
    one_shot = extract_to_shards(tiny, wavs, tmp_path / "one-shot", shard_size=2, progress=False)
    assert one_shot.n_shards == 4 and len(one_shot) == 7  # [u0 u1] [u2 u3] [u4 u5] [u6]

    killed = CountingExtractor(fail_at=2)  # dies while extracting the third shard
    monkeypatch.setattr(extract_module, "extract_embeddings", killed)
    with pytest.raises(KeyboardInterrupt):
        extract_to_shards(tiny, wavs, tmp_path / "cache", shard_size=2, progress=False)
    assert killed.calls == [["u0", "u1"], ["u2", "u3"]]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors"]  # no half-written file
    assert ShardCache(tmp_path / "cache").missing_shards() == [2, 3]

    resumed = CountingExtractor()
    monkeypatch.setattr(extract_module, "extract_embeddings", resumed)
    cache = extract_to_shards(tiny, wavs, tmp_path / "cache", shard_size=2, progress=False)
    assert resumed.calls == [["u4", "u5"], ["u6"]]  # only the missing shards
    assert cache.missing_shards() == []
    got, expected = cache.to_dict(), one_shot.to_dict()
    assert list(got) == sorted(wavs)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    assert cache.durations() == pytest.approx({k: probe_duration(p) for k, p in wavs.items()})

    # A finished cache is reused as it is.
    again = CountingExtractor()
    monkeypatch.setattr(extract_module, "extract_embeddings", again)
    extract_to_shards(tiny, wavs, tmp_path / "cache", shard_size=2, progress=False)
    assert again.calls == []


def test_cache_of_another_model_or_settings_is_refused(tiny, wavs, tmp_path):
    folder = tmp_path / "cache"
    extract_to_shards(tiny, wavs, folder, shard_size=3, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == model_fingerprint(tiny) and manifest["max_seconds"] == 60.0
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]

    same = SpeakerModel.build("tiny", head="adapter_mfa", encoder_overrides={"conformer_conv_dropout": 0.0})
    assert model_fingerprint(same) == model_fingerprint(tiny)  # same weights (seed 0): the same model
    torch.manual_seed(1)
    other = SpeakerModel.build("tiny", head="adapter_mfa").eval()  # other random weights
    with pytest.raises(ValueError, match=f"{folder}.*another extraction.*model"):
        extract_to_shards(other, wavs, folder, shard_size=3, progress=False)
    with pytest.raises(ValueError, match="max_seconds 60.0 \\(now 1.0\\)"):
        extract_to_shards(tiny, wavs, folder, shard_size=3, max_seconds=1.0, progress=False)
    with pytest.raises(ValueError, match="shard_size 3 \\(now 2\\)"):
        extract_to_shards(tiny, wavs, folder, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="utterances_sha256"):
        extract_to_shards(tiny, {k: wavs[k] for k in list(wavs)[:3]}, folder, shard_size=3, progress=False)

    (folder / "manifest.json").unlink()  # shards of unknown origin
    with pytest.raises(ValueError, match=f"{folder} holds embedding shards but no manifest.json"):
        extract_to_shards(tiny, wavs, folder, shard_size=3, progress=False)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ShardCache(folder)


def test_shard_cache_reads_shards_rows_and_durations(tiny, wavs, tmp_path):
    cache = extract_to_shards(tiny, wavs, tmp_path / "c", shard_size=3, progress=False)
    full = cache.to_dict()
    shards = list(cache.iter_shards())
    assert [s.keys for s in shards] == [["u0", "u1", "u2"], ["u3", "u4", "u5"], ["u6"]]
    assert shards[0].embeddings.shape == (3, 256) and shards[0].durations.dtype == torch.float64
    some = cache.load(["u5", "u0", "u6"])
    assert list(some) == ["u5", "u0", "u6"]
    for key, value in some.items():
        assert torch.equal(value, full[key])
    with pytest.raises(KeyError, match="'zz'"):
        cache.load(["u1", "zz"])
    assert list(cache.load(["u1", "zz", "a"], strict=False)) == ["u1"]

    # The embeddings of the cache are those of a plain extraction (per shard batches: float round-off only).
    plain = extract_embeddings(tiny, wavs, progress=False)
    for key in plain:
        torch.testing.assert_close(full[key], plain[key], atol=1e-5, rtol=1e-4)

    (tmp_path / "c" / "shard-00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        cache.to_dict()


def test_extract_cached_names_the_folder_by_the_utterances(tiny, wavs, tmp_path):
    with embedding_cache(tmp_path / "root") as root:
        a = extract_cached(tiny, wavs, root, shard_size=4, progress=False)
        b = extract_cached(tiny, {k: wavs[k] for k in ("u1", "u2")}, root, shard_size=4, progress=False)
        assert a.cache_dir != b.cache_dir and a.cache_dir.parent == b.cache_dir.parent == root
        assert extract_cached(tiny, dict(reversed(wavs.items())), root, shard_size=4).cache_dir == a.cache_dir
    with embedding_cache(None) as temporary:
        assert temporary.is_dir()
        extract_cached(tiny, {"u1": wavs["u1"]}, temporary, progress=False)
    assert not temporary.exists()  # removed at the end


def test_fit_qmf_reads_only_the_calibration_rows_from_the_cache(tiny, wavs, tmp_path, monkeypatch):
    """QMF from a cache equals QMF from an in-memory dict, and reads only its whole-utterance sides' rows."""
    from svlib.scoring.evaluate import fit_qmf
    from svlib.scoring.norm import cohort_from_shards

    utt2spk = {k: f"spk{int(k[1:]) % 3}" for k in wavs}
    cache = extract_to_shards(tiny, wavs, tmp_path / "c", shard_size=2, progress=False)
    emb = cache.to_dict()
    cohort = cohort_from_shards(cache.iter_shards(), utt2spk)

    def embed(sources):
        return extract_embeddings(tiny, sources, progress=False)

    expected = fit_qmf(embed, emb, utt2spk, wavs, n_trials=12, top_n=2, seed=1)
    requested = []
    original_load = ShardCache.load

    def spy_load(self, keys, strict=True):
        keys = list(keys)
        requested.extend(keys)
        return original_load(self, keys, strict)

    def no_whole_read(self):
        raise AssertionError("fit_qmf read the whole cache")

    monkeypatch.setattr(ShardCache, "load", spy_load)
    monkeypatch.setattr(ShardCache, "to_dict", no_whole_read)
    monkeypatch.setattr(ShardCache, "iter_shards", no_whole_read)
    got = fit_qmf(embed, cache, utt2spk, wavs, n_trials=12, top_n=2, seed=1, cohort=cohort)
    assert requested and set(requested) <= set(wavs) and len(requested) < len(wavs)
    torch.testing.assert_close(got.weight, expected.weight, atol=1e-4, rtol=1e-3)
    assert got.bias == pytest.approx(expected.bias, abs=1e-4)
