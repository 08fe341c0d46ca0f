"""Channel simulation (svlib.data.channel): G.711 against Python's audioop, the telephone band, G.722, the tilt."""

import math
import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from svlib.data.channel import (
    CHANNELS,
    ChannelChoice,
    ChannelSimulator,
    apply_channel,
    g711_decode,
    g711_encode,
    g722_round_trip,
    narrowband,
    spectral_tilt,
)
from svlib.data.channel import _resample  # private: checked against scipy's own resample_poly

SR = 16000
T = torch.arange(2 * SR) / SR


def _tone(f: float) -> torch.Tensor:
    return 0.3 * torch.sin(2 * np.pi * f * T)


def _level_db(x: torch.Tensor, f: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.numpy()))
    return 20 * np.log10(spectrum[np.argmin(np.abs(np.fft.rfftfreq(x.numel(), 1 / SR) - f))] + 1e-12)


def _snr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (y - ref).pow(2).mean()))


@pytest.mark.parametrize("law", ["mu", "a"])
def test_g711_matches_the_standard_library_codec_on_every_sample_and_code(law):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # Python <= 3.12: the C implementation of G.711
    encode, decode = (audioop.lin2ulaw, audioop.ulaw2lin) if law == "mu" else (audioop.lin2alaw, audioop.alaw2lin)
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_array_equal(g711_encode(pcm, law), np.frombuffer(encode(pcm.tobytes(), 2), dtype=np.uint8))
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(g711_decode(codes, law), np.frombuffer(decode(codes.tobytes(), 2), dtype=np.int16))
    with pytest.raises(ValueError, match="expected 'mu' or 'a'"):
        g711_encode(pcm, "u")


def test_narrowband_keeps_the_telephone_band_and_removes_the_rest():
    gains = {f: _level_db(narrowband(_tone(f)), f) - _level_db(_tone(f), f) for f in (100, 1000, 3000, 5000, 7000)}
    assert abs(gains[1000]) < 0.5 and abs(gains[3000]) < 1.5
    assert gains[100] < -15 and gains[5000] < -60 and gains[7000] < -60
    assert narrowband(_tone(1000)).shape == T.shape


def test_codecs_keep_speech_band_tones_with_their_quantisation_noise():
    x = _tone(440) + _tone(1500) + 0.5 * _tone(5200)
    y = g722_round_trip(x)  # wideband, aligned (the codec delay removed)
    assert y.shape == x.shape and 20 < _snr_db(x, y) < 60
    for law in ("mu", "a"):
        y = apply_channel(x, ChannelChoice("g711", law=law))
        band = narrowband(x)
        assert 25 < _snr_db(band, y) < 60  # 8-bit logarithmic: about 38 dB
        assert _level_db(y, 5200) - _level_db(x, 5200) < -40  # narrowband first


def test_tilt_is_its_gain_per_three_octaves_and_keeps_the_power():
    x = _tone(125) + _tone(4000)  # five octaves apart
    y = spectral_tilt(x, 6.0)
    assert _level_db(y, 4000) - _level_db(y, 125) == pytest.approx(6.0 * 5 / 3, abs=0.05)
    assert float(y.pow(2).mean()) == pytest.approx(float(x.pow(2).mean()), rel=1e-6)


def test_the_simulator_draws_every_channel_reproducibly():
    sim = ChannelSimulator()
    draws = [sim.choose(torch.Generator().manual_seed(i)) for i in range(200)]
    assert {d.kind for d in draws} == set(CHANNELS)
    assert {d.law for d in draws if d.kind == "g711"} == {"mu", "a"}
    assert all(-6 <= d.tilt_db <= 6 for d in draws if d.kind == "eq")
    assert draws[7] == sim.choose(torch.Generator().manual_seed(7))
    x = _tone(700)
    y1, y2 = (sim(x, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(y1, y2) and not torch.equal(y1, x)
    assert ChannelChoice("g711", law="a").describe() == "g711 (A-law)"
    with pytest.raises(ValueError, match="subset of"):
        ChannelSimulator(kinds=["gsm"])
    with pytest.raises(ValueError, match="unknown channel"):
        apply_channel(x, ChannelChoice("gsm"))


def _musan_and_rirs(root):
    import soundfile as sf

    rng = np.random.default_rng(0)
    for kind in ("noise", "music", "speech"):
        (root / "musan" / kind).mkdir(parents=True)
        sf.write(root / "musan" / kind / "a.wav", 0.1 * rng.standard_normal(SR), SR)
    for room in ("smallroom", "mediumroom"):
        (root / "RIRS_NOISES" / "simulated_rirs" / room).mkdir(parents=True)
        rir = np.zeros(800)
        rir[0], rir[200] = 1.0, 0.3
        sf.write(root / "RIRS_NOISES" / "simulated_rirs" / room / "r.wav", rir, SR)
    return {"musan": str(root / "musan"), "rirs": str(root / "RIRS_NOISES")}


def test_the_augmenter_draws_a_channel_with_its_probability_and_the_recipe_without_it(tmp_path):
    from svlib.data.augment import Augmenter
    from svlib.data.loader import build_augmenter

    spec = _musan_and_rirs(tmp_path)
    recipe = build_augmenter(spec, dataset=None, seed=0)
    assert recipe.channel is None and recipe.probs.tolist() == pytest.approx([1 / 3] * 3)
    aug = build_augmenter({**spec, "channel": {"p": 0.4, "kinds": ["g711", "eq"]}}, dataset=None, seed=0)
    assert aug.probs.tolist() == pytest.approx([0.2, 0.2, 0.2, 0.4]) and aug.channel.kinds == ("g711", "eq")
    g = torch.Generator().manual_seed(0)
    kinds = [aug.choose(g) for _ in range(2000)]
    share = sum(c.kind == "channel" for c in kinds) / len(kinds)
    assert share == pytest.approx(0.4, abs=0.04)
    assert {c.channel.kind for c in kinds if c.kind == "channel"} == {"g711", "eq"}
    choice = next(c for c in kinds if c.kind == "channel")
    x = _tone(900)
    assert torch.equal(aug.apply(x, choice), apply_channel(x, choice.channel))
    with pytest.raises(ValueError, match="probability in"):
        build_augmenter({**spec, "channel": 1.5}, dataset=None, seed=0)
    with pytest.raises(ValueError, match="needs a channel simulator"):
        Augmenter(None, None, p_none=0.5, p_noise=0.0, p_reverb=0.0, p_channel=0.5)


@pytest.mark.parametrize("orig, new", [(16000, 8000), (8000, 16000), (16000, 11025), (44100, 16000)])
def test_resample_with_the_cached_filter_equals_resample_poly(orig, new):
    """The filter designed once per ratio is the one resample_poly designs at each call: same output."""
    x = torch.randn(12345, generator=torch.Generator().manual_seed(0))
    g = math.gcd(orig, new)
    expected = scipy.signal.resample_poly(x.double().numpy(), new // g, orig // g).astype(np.float32)
    assert np.array_equal(_resample(x, orig, new).numpy(), expected)
