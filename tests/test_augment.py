"""svlib.data.augment: exact SNR, reverberation, coloured noise, RIR simulation, category probabilities, demo material."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from svlib.data.demo_noise import decode_g722, demo_noise_bank
from svlib.data.augment import (
    CATEGORIES,
    AugmentChoice,
    Augmenter,
    NoiseBank,
    add_noise,
    coloured_noise,
    estimate_rt60,
    load_rirs,
    reverberate,
    simulate_rirs,
)

SR = 16000


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Measured SNR over the last axis: 10·log10(P(clean) / P(noisy − clean)), in float64."""
    clean, noisy = clean.double(), noisy.double()
    return 10 * torch.log10(clean.pow(2).mean(-1) / (noisy - clean).pow(2).mean(-1))


def small_bank(n_speech: int = 10) -> NoiseBank:
    g = torch.Generator().manual_seed(1)
    return NoiseBank(
        noise=[torch.randn(8000, generator=g)],
        music=[torch.randn(12000, generator=g)],
        speech=[torch.randn(4000 + 100 * i, generator=g) for i in range(n_speech)],
    )


def toy_rir(delay: int = 30, length: int = 2000, rt60: float = 0.3) -> torch.Tensor:
    """A direct path at ``delay`` followed by an exponentially decaying noise tail (-60 dB after rt60 s)."""
    g = torch.Generator().manual_seed(2)
    t = torch.arange(length - delay) / SR
    tail = 0.3 * torch.randn(length - delay, generator=g) * 10 ** (-3 * t / rt60)
    h = torch.zeros(length)
    h[delay:] = tail
    h[delay] = 1.0
    return h


# ------------------------------------------------------------------------------------------------- add_noise
@pytest.mark.parametrize("target", [-5.0, 0.0, 5.0, 12.3, 20.0, 25.0])
def test_add_noise_snr_is_exact(target):
    g = torch.Generator().manual_seed(0)
    wav, noise = 0.1 * torch.randn(48000, generator=g), 3.0 * torch.rand(48000, generator=g)
    out = add_noise(wav, noise, target)
    assert out.shape == wav.shape and out.dtype == torch.float32
    assert float(snr_db(wav, out)) == pytest.approx(target, abs=1e-3)


def test_add_noise_batched_snr_per_row():
    g = torch.Generator().manual_seed(0)
    wav, noise = torch.randn(4, 16000, generator=g), torch.randn(4, 16000, generator=g)
    targets = torch.tensor([5.0, 10.0, 15.0, 20.0])
    assert torch.allclose(snr_db(wav, add_noise(wav, noise, targets)), targets.double(), atol=1e-3)


def test_add_noise_silent_noise_and_length_mismatch():
    wav = torch.randn(100)
    assert torch.equal(add_noise(wav, torch.zeros(100), 10.0), wav)
    with pytest.raises(ValueError, match="same length"):
        add_noise(wav, torch.randn(99), 10.0)


# ------------------------------------------------------------------------------------------------- reverberate
def test_reverberate_keeps_length_power_and_alignment():
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(16000, generator=g)
    out = reverberate(wav, toy_rir())
    assert out.shape == wav.shape
    assert float(out.pow(2).mean()) == pytest.approx(float(wav.pow(2).mean()), rel=1e-4)
    # a pure delayed impulse is the identity: the output is aligned to the direct path
    delta = torch.zeros(500)
    delta[123] = -0.5
    assert torch.allclose(reverberate(wav, delta), wav, atol=1e-5)
    # batched input uses the same RIR for every row
    batch = torch.stack([wav, 2 * wav])
    assert torch.allclose(reverberate(batch, toy_rir())[1], 2 * out, atol=1e-4)  # each row keeps its own power


def test_reverberate_rejects_bad_rirs():
    with pytest.raises(ValueError, match="non-zero"):
        reverberate(torch.randn(100), torch.zeros(10))
    with pytest.raises(ValueError, match="1-D"):
        reverberate(torch.randn(100), torch.ones(2, 10))


# --------------------------------------------------------------------------------------------- coloured noise
@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_coloured_noise_spectral_slope(colour, slope):
    x = coloured_noise(1 << 17, colour, torch.Generator().manual_seed(0))
    assert x.shape == (1 << 17,) and float(x.pow(2).mean()) == pytest.approx(1.0, rel=1e-4)
    f, psd = scipy.signal.welch(x.numpy(), fs=SR, nperseg=4096)
    band = (f >= 50) & (f <= 6000)
    fitted = np.polyfit(np.log10(f[band]), np.log10(psd[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.1), f"{colour} noise: log-PSD slope {fitted:.3f}, expected {slope}"


def test_coloured_noise_rejects_unknown_colour():
    with pytest.raises(ValueError, match="unknown noise colour 'blue'"):
        coloured_noise(100, "blue")


# ---------------------------------------------------------------------------------------------------- RIRs
def schroeder_t30(h: np.ndarray, fs: int = SR) -> float:
    """RT60 from a least-squares line on the Schroeder decay curve between -5 and -35 dB (independent of svlib)."""
    edc = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
    sel = (edc_db <= -5) & (edc_db >= -35)
    t = np.flatnonzero(sel) / fs
    slope = np.polyfit(t, edc_db[sel], 1)[0]  # dB per second
    return -60.0 / slope


def test_simulated_rirs_have_plausible_rt60_and_are_cached(tmp_path):
    small = simulate_rirs(2, "small", seed=3, cache_dir=tmp_path)
    medium = simulate_rirs(1, "medium", seed=3, cache_dir=tmp_path)
    for h in small + medium:
        assert h.dim() == 1 and h.dtype == torch.float32 and torch.isfinite(h).all()
        rt60 = schroeder_t30(h.numpy())
        assert 0.1 < rt60 < 1.2, f"RT60 {rt60:.2f} s outside the plausible 0.1–1.2 s"
        assert 0.1 < estimate_rt60(h) < 1.0
    assert len(list(tmp_path.glob("rirs-small-n2-seed3-*.npz"))) == 1
    again = simulate_rirs(2, "small", seed=3, cache_dir=tmp_path)  # loaded from the cache
    assert all(torch.equal(a, b) for a, b in zip(small, again))


def test_simulate_rirs_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown room kind 'huge'"):
        simulate_rirs(1, "huge")


def test_load_rirs_layout_subset_and_errors(tmp_path):
    root = tmp_path / "RIRS_NOISES"
    for room in ("smallroom", "mediumroom", "largeroom"):
        for i in range(3):
            path = root / "simulated_rirs" / room / "Room001" / f"Room001-0000{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, toy_rir().numpy(), SR)
    paths = load_rirs(root)
    assert len(paths) == 6 and all("largeroom" not in str(p) for p in paths)
    assert load_rirs(root / "simulated_rirs", max_rirs=4, seed=1) == load_rirs(root, max_rirs=4, seed=1)
    assert len(load_rirs(root, max_rirs=4)) == 4
    aug = Augmenter(None, paths, p_none=0.0, p_noise=0.0, p_reverb=1.0)
    assert aug(torch.randn(4000)).shape == (4000,)  # paths are decoded on demand
    with pytest.raises(FileNotFoundError, match="simulated_rirs"):
        load_rirs(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- noise bank
def test_noise_bank_from_musan_directory(tmp_path):
    musan = tmp_path / "musan"
    g = np.random.default_rng(0)
    for kind, n in (("noise", 2), ("music", 1), ("speech", 3)):
        for i in range(n):
            path = musan / kind / "sub" / f"{kind}-{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * g.standard_normal(3000 + 1000 * i), SR)
    bank = NoiseBank.from_musan(tmp_path)  # the parent of musan/ works too
    assert bank.counts() == {"noise": 2, "music": 1, "speech": 3}
    gen = torch.Generator().manual_seed(0)
    for kind in ("noise", "music", "speech"):
        seg = bank.segment(kind, 5000, gen)  # longer than some files: looped
        assert seg.shape == (5000,) and float(seg.abs().max()) > 0
    with pytest.raises(FileNotFoundError, match="expected the MUSAN layout"):
        NoiseBank.from_musan(tmp_path / "musan" / "noise" / "sub")


# ----------------------------------------------------------------------------------------------- augmenter
def test_augmenter_outcome_and_category_frequencies():
    aug = Augmenter(small_bank(), [toy_rir()], seed=0)
    gen = torch.Generator().manual_seed(0)
    choices = [aug.choose(gen) for _ in range(6000)]
    kinds = Counter(c.kind for c in choices)
    for kind in ("none", "noise", "reverb"):
        assert kinds[kind] / 6000 == pytest.approx(1 / 3, abs=0.03), kinds
    noisy = [c for c in choices if c.kind == "noise"]
    cats = Counter(c.category for c in noisy)
    for cat in CATEGORIES:
        assert cats[cat] / len(noisy) == pytest.approx(1 / 4, abs=0.04), cats
    for c in noisy:
        babble = c.category in ("babble", "babble_music")
        lo, hi = (15.0, 25.0) if babble else (5.0, 20.0)
        assert lo <= c.snr_db <= hi
        assert (3 <= c.num_babble <= 8) if babble else c.num_babble == 0
    assert {c.num_babble for c in noisy if c.num_babble} == set(range(3, 9))
    snrs = np.array([c.snr_db for c in noisy if c.category == "noise"])
    assert snrs.mean() == pytest.approx(12.5, abs=0.5)  # U(5, 20)


def test_augmenter_applies_exact_snr_and_is_reproducible():
    aug = Augmenter(small_bank(), [toy_rir()], seed=0)
    wav = 0.1 * torch.randn(6000)
    for category, num_babble in (("noise", 0), ("music", 0), ("babble", 5), ("babble_music", 3)):
        choice = AugmentChoice("noise", category=category, snr_db=17.0, num_babble=num_babble)
        out = aug.apply(wav, choice, torch.Generator().manual_seed(0))
        assert out.shape == wav.shape and float(snr_db(wav, out)) == pytest.approx(17.0, abs=1e-3)
    a = aug(wav, torch.Generator().manual_seed(7))
    b = aug(wav, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    batch = aug.augment_batch(torch.randn(5, 6000))
    assert batch.shape == (5, 6000) and torch.isfinite(batch).all()


def test_augmenter_validates_its_inputs():
    with pytest.raises(ValueError, match="sum to 1"):
        Augmenter(small_bank(), [toy_rir()], p_none=0.5, p_noise=0.5, p_reverb=0.5)
    with pytest.raises(ValueError, match="needs a noise_bank"):
        Augmenter(None, [toy_rir()])
    with pytest.raises(ValueError, match="at least one RIR"):
        Augmenter(small_bank(), [])
    with pytest.raises(ValueError, match="'babble(_music)?' needs \\['speech'\\]"):
        Augmenter(small_bank(n_speech=0), [toy_rir()])
    assert Augmenter(None, None, p_none=1.0, p_noise=0.0, p_reverb=0.0)(torch.ones(10)).equal(torch.ones(10))


# -------------------------------------------------------------------------------------------- demo material
def test_decode_g722_round_trip(tmp_path):
    from G722 import G722

    g = np.random.default_rng(0)
    b, a = scipy.signal.butter(4, 3000, fs=SR)  # band-limited noise: well inside G.722's 50–7000 Hz band
    ref = scipy.signal.lfilter(b, a, g.standard_normal(16000))
    ref = (0.3 * ref / np.abs(ref).max()).astype(np.float32)
    path = tmp_path / "noise.g722"
    path.write_bytes(bytes(G722(16000, 64000).encode((ref * 32768).astype(np.int16))))
    wav = decode_g722(path).numpy()
    assert wav.shape == (16000,) and wav.dtype == np.float32
    xcorr = scipy.signal.correlate(wav, ref, mode="full")[len(ref) - 1 :]  # lags >= 0
    lag = int(np.argmax(xcorr[:200]))
    assert lag < 100  # the codec's QMF delay, a few tens of samples
    decoded, target = wav[lag:], ref[: len(ref) - lag]
    assert np.corrcoef(decoded, target)[0, 1] > 0.95
    assert np.sqrt((decoded**2).mean()) == pytest.approx(np.sqrt((target**2).mean()), rel=0.05)


def test_demo_noise_bank_music_from_debian():
    try:
        bank = demo_noise_bank(babble_sources=[torch.randn(16000) for _ in range(3)])
    except RuntimeError as err:  # no apt-get / no network and nothing cached yet
        pytest.skip(f"cannot fetch the Debian music package: {err}")
    assert bank.counts() == {"noise": 6, "music": 5, "speech": 3}
    music = bank.pools["music"]
    for i in range(len(music)):
        frames = sf.info(str(music.entries[i])).frames
        assert frames / SR > 30, f"{music.entries[i]}: {frames / SR:.1f} s, expected a full music track"
    seg = bank.segment("music", 3 * SR, torch.Generator().manual_seed(0))
    rms = math.sqrt(float(seg.pow(2).mean()))
    assert seg.shape == (3 * SR,) and 0.005 < rms < 0.7 and float(seg.abs().max()) <= 1.0
