"""svlib.frontend.features against transformers' SeamlessM4TFeatureExtractor (the w2v-BERT 2.0 preprocessor), max |diff| <= 1e-3."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from svlib.frontend import features as F

transformers = pytest.importorskip("transformers")

SR = 16000
TOL = 1e-3
CONFIG = Path(__file__).resolve().parents[1] / "svlib" / "configs" / "w2v-bert-2.0_preprocessor.json"


@pytest.fixture(scope="module")
def hf():
    return transformers.SeamlessM4TFeatureExtractor(**json.loads(CONFIG.read_text()))


def reference(hf, wavs, **kwargs):
    """HF output for a list of 1-D tensors: (input_features float32, attention_mask long)."""
    out = hf([w.numpy() for w in wavs], sampling_rate=SR, padding=True, return_tensors="pt", **kwargs)
    return out["input_features"], out["attention_mask"].long()


def assert_matches(hf, wavs):
    ref_x, ref_m = reference(hf, wavs)
    x, m = F.extract_features(wavs)
    assert x.dtype == torch.float32 and m.dtype == torch.long
    assert x.shape == ref_x.shape and m.shape == ref_m.shape
    assert torch.equal(m, ref_m)
    assert (x - ref_x).abs().max().item() <= TOL
    return x, m


def noise(n, seed=0):
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def chirp(n, f0=100.0, f1=7000.0):
    t = torch.arange(n, dtype=torch.float64) / SR
    k = (f1 - f0) / (t[-1] + 1.0 / SR)
    return (0.5 * torch.sin(2 * math.pi * (f0 * t + 0.5 * k * t**2))).float()


def sine(n, freq=440.0, tremolo=3.0):
    """A sine; with ``tremolo`` (Hz) an amplitude modulation keeps every mel bin's variance away from zero."""
    t = torch.arange(n, dtype=torch.float64) / SR
    wav = 0.5 * torch.sin(2 * math.pi * freq * t)
    if tremolo:
        wav = wav * (1.0 + 0.5 * torch.sin(2 * math.pi * tremolo * t))
    return wav.float()


# Lengths: 2 frames (minimum), 3 frames (odd), 1 s (98 frames), 99 frames (odd), arbitrary, 3 s + change.
LENGTHS = [560, 720, 16000, 16160, 12345, 48077]


def test_window_and_mel_filters_match_hf(hf):
    assert torch.allclose(F.povey_window(dtype=torch.float64), torch.from_numpy(hf.window), atol=1e-12)
    mel = F.mel_filterbank(dtype=torch.float64)
    assert mel.shape == (257, 80)
    assert torch.allclose(mel, torch.from_numpy(hf.mel_filters), atol=1e-9)
    assert F.mel_filterbank() is F.mel_filterbank()  # cached


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("make", [noise, chirp, sine], ids=["noise", "chirp", "sine_tremolo"])
def test_single_utterance_matches_hf(hf, make, n):
    x, m = assert_matches(hf, [make(n)])
    assert int(m.sum()) == F.frames_for_samples(n)
    assert x.shape[1] == math.ceil(F.fbank_frames_for_samples(n) / 2)


def test_stationary_sine_log_mel_matches_hf(hf):
    # A steady sine leaves some mel bins with a std of ~1e-5 over frames: per-bin normalisation then amplifies the
    # reference's own float32 rounding to ~1e-2, so the steady sine is compared before normalisation.
    wav = sine(16160, tremolo=0.0)
    ref_x, ref_m = reference(hf, [wav], do_normalize_per_mel_bins=False)
    feats, n = F.fbank(wav[None])
    valid = (torch.arange(feats.shape[1])[None, :] < n[:, None])[..., None]
    x, m = F.stack_frames(torch.where(valid, feats, 1.0), n)
    assert torch.equal(m, ref_m)
    assert (x - ref_x).abs().max().item() <= TOL


def test_padded_batch_matches_hf(hf):
    wavs = [noise(16160, 1), chirp(12345), sine(48077), noise(720, 2), sine(16000, freq=1234.0)]
    x, m = assert_matches(hf, wavs)
    assert m.sum(1).tolist() == [F.frames_for_samples(w.shape[0]) for w in wavs]
    # 720 samples = 3 fbank frames: row 1 holds frame 2 next to padding (masked), later rows are all padding (1.0)
    assert (x[3, 1, 80:] == 1.0).all() and (x[3, 2:] == 1.0).all() and m[3].tolist()[:2] == [1, 0]
    # the same batch as a padded tensor + lengths, and through the module
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([w.shape[0] for w in wavs])
    x2, m2 = F.extract_features(padded, lengths)
    x3, m3 = F.FeatureExtractor()(padded, lengths)
    assert torch.equal(x, x2) and torch.equal(m, m2)
    assert torch.equal(x, x3) and torch.equal(m, m3)


def test_batch_rows_equal_single_utterances():
    wavs = [noise(16000, 3), chirp(20000)]
    x, m = F.extract_features(wavs)
    for i, w in enumerate(wavs):
        xi, mi = F.extract_features(w)
        t = xi.shape[1]
        assert torch.allclose(x[i, :t], xi[0], atol=1e-6) and torch.equal(m[i, :t], mi[0])


def test_frames_for_samples():
    assert F.fbank_frames_for_samples(16000) == 98
    assert F.frames_for_samples(16000) == 49
    assert F.frames_for_samples(399) == 0
    assert F.frames_for_samples(torch.tensor([16000, 560, 100])).tolist() == [49, 1, 0]
    assert F.FeatureExtractor.frames_for_samples(32000) == 99


def test_module_has_no_state_and_too_short_input_raises():
    fe = F.FeatureExtractor()
    assert list(fe.parameters()) == [] and fe.state_dict() == {}
    assert {name for name, _ in fe.named_buffers()} == {"window", "mel_filters"}
    with pytest.raises(ValueError, match="560"):
        F.extract_features([torch.zeros(559)])


# ---------------------------------------------------------------------------------------------- real speech


@pytest.fixture(scope="session")
def speech():
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("apt-get/dpkg not available: cannot fetch Debian's klettres-data recordings")
    from svlib.core.paths import default_data_root
    from svlib.data.debian import speech_sample

    wav, sr = speech_sample(default_data_root(), n_clips=4)
    assert sr == SR and wav.dim() == 1 and wav.shape[0] > SR
    return wav


def test_real_speech_single_matches_hf(hf, speech):
    x, m = assert_matches(hf, [speech])
    assert int(m.sum()) == F.frames_for_samples(speech.shape[0])


def test_real_speech_batch_matches_hf(hf, speech):
    n = speech.shape[0]
    wavs = [speech, speech[: n // 2], speech[n // 3 :], speech[1001 : 1001 + 8123]]
    assert_matches(hf, wavs)


def test_real_speech_in_float64_input_matches_float32(speech):
    x32, _ = F.extract_features(speech)
    x64, _ = F.extract_features(speech.double())
    assert torch.equal(x32, x64)
    assert np.isfinite(x32.numpy()).all()


def _fbank_frame_by_frame(wav: torch.Tensor) -> np.ndarray:
    """Steps 1-5 written out per frame in NumPy float64, as Kaldi states them: the reference for the batched form,
    which pre-emphasises the whole waveform once and skips the square root of |X|."""
    x = wav.numpy().astype(np.float32) * np.float32(2**15)
    window = np.hanning(400) ** 0.85  # symmetric Hann (NumPy's hanning is non-periodic) ** 0.85: the Povey window
    rows = []
    for start in range(0, len(x) - 400 + 1, 160):
        frame = x[start : start + 400].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([frame[:1] * (1 - 0.97), frame[1:] - 0.97 * frame[:-1]]) * window
        rows.append(np.abs(np.fft.rfft(frame, n=512)) ** 2)
    mel = np.stack(rows) @ F.mel_filterbank(dtype=torch.float64).numpy()
    return np.log(np.maximum(mel, F.MEL_FLOOR))


@pytest.mark.parametrize("make", [noise, chirp, sine], ids=["noise", "chirp", "sine_tremolo"])
def test_fbank_equals_the_frame_by_frame_steps(make):
    wav = make(12345)
    feats, num_frames = F.fbank(wav[None])
    expected = _fbank_frame_by_frame(wav)
    assert int(num_frames) == len(expected) == feats.shape[1]
    # float32 output of float64 arithmetic: the two orders of operations agree to float32 rounding of the log
    np.testing.assert_allclose(feats[0].numpy(), expected, rtol=0, atol=1e-5)
