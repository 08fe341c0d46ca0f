"""svlib.frontend.audio: validation errors, mono mixing, resampling and atomic saving."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from svlib.frontend.audio import AudioError, load_audio, resample, save_audio


def write(path, data, sr=16000, subtype=None):
    sf.write(str(path), np.asarray(data, dtype=np.float32), sr, subtype=subtype)
    return path


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty") as err:
        load_audio(path)
    assert str(path) in str(err.value) and "expected" in str(err.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x01garbage that is not audio" * 10)
    with pytest.raises(AudioError, match="cannot decode") as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_zero_samples(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0))
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)


def test_nan_samples(tmp_path):
    data = np.zeros(16000, dtype=np.float32)
    data[100] = np.nan
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite") as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_too_short(tmp_path):
    path = write(tmp_path / "short.wav", np.zeros(800))  # 0.05 s
    with pytest.raises(AudioError, match="too short") as err:
        load_audio(path, min_duration=0.1)
    assert "0.1 s" in str(err.value) and str(path) in str(err.value)
    assert load_audio(path, min_duration=0.05).shape == (800,)


def test_audio_error_is_value_error():
    assert issubclass(AudioError, ValueError)


def test_stereo_is_mixed_to_mean(tmp_path):
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((16000, 2))).astype(np.float32)
    path = write(tmp_path / "stereo.wav", stereo, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.shape == (16000,)
    assert torch.allclose(wav, torch.from_numpy(stereo.mean(axis=1)), atol=1e-7)


def test_resample_8k_to_16k(tmp_path):
    t = np.arange(8000) / 8000
    path = write(tmp_path / "8k.wav", 0.5 * np.sin(2 * np.pi * 300 * t), sr=8000)
    wav = load_audio(path, sample_rate=16000)
    assert wav.shape == (16000,)
    assert resample(torch.zeros(8000), 8000, 16000).shape == (16000,)
    x = torch.randn(123)
    assert resample(x, 16000, 16000) is x


def test_atomic_save_load_round_trip(tmp_path):
    wav = 0.5 * torch.sin(torch.linspace(0, 200, 16000))
    out = tmp_path / "sub" / "x.wav"
    assert save_audio(out, wav, 16000, subtype="FLOAT") == out
    assert [p.name for p in out.parent.iterdir()] == ["x.wav"]  # no temporary file left behind
    assert torch.allclose(load_audio(out), wav, atol=1e-7)
    # overwrite with 16-bit PCM: replaced in place, still one file
    save_audio(out, wav, 16000)
    assert sf.info(str(out)).subtype == "PCM_16"
    assert torch.allclose(load_audio(out), wav, atol=1e-4)
    assert [p.name for p in out.parent.iterdir()] == ["x.wav"]


def test_failed_save_leaves_no_temp_file(tmp_path):
    with pytest.raises(ValueError):
        save_audio(tmp_path / "bad.wav", torch.zeros(2, 3, 4), 16000)
    with pytest.raises(Exception):
        save_audio(tmp_path / "bad.wav", torch.zeros(100), 16000, subtype="NOT_A_SUBTYPE")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    """mkstemp makes 0600 files; what svlib writes must be readable like any file open() creates."""
    import os

    from svlib.core.atomic import atomic_write

    mask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x.txt", lambda tmp: open(tmp, "w").write("hi"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
