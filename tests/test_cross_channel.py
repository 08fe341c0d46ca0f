"""The demo's cross-channel trial list (svlib.data.cross_channel) on a small synthetic corpus."""

import json
import os

import numpy as np
import pytest
import torch

from svlib.data.augment import add_noise, coloured_noise, reverberate
from svlib.data.channel import ChannelChoice, apply_channel
from svlib.data.cross_channel import PROTOCOL_CHANNELS, build_cross_channel, protocol_rirs
from svlib.data.demo import CorpusSummary, SplitSummary, make_trials
from svlib.data.lists import DataDir, read_data_dir, read_trials, write_data_dir, write_trials
from svlib.frontend.audio import load_audio, save_audio

SR = 16000


def _corpus(root, n_speakers=6, utts=4):
    """A corpus in the demo's layout: test speakers with harmonic 'voices' of their own pitch."""
    demo = root / "demo"
    wav_scp, utt2spk = {}, {}
    t = torch.arange(SR) / SR
    for s in range(n_speakers):
        for u in range(utts):
            utt = f"spk{s}/sess/{u:05d}"
            f0 = 110 + 20 * s + 3 * u
            wav = sum(0.2 / k * torch.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
            path = save_audio(demo / "wav" / f"{utt}.wav", wav, SR, subtype="PCM_16")
            wav_scp[utt], utt2spk[utt] = str(path), f"spk{s}"
    write_data_dir(DataDir(wav_scp, utt2spk), demo / "test")
    trials = make_trials(utt2spk, seed=0)
    write_trials(trials, demo / "trials.txt")
    split = SplitSummary(n_speakers, n_speakers * utts, 1.0)
    return CorpusSummary(str(demo), split, split, sum(t.target for t in trials), sum(not t.target for t in trials),
                         0, 0.0)


def test_the_cross_channel_list_keeps_the_trials_and_replaces_each_test_side_by_its_channel_copy(tmp_path):
    corpus = _corpus(tmp_path)
    cross = build_cross_channel(corpus, progress=False, rirs_per_room=1)
    plain, crossed = read_trials(corpus.trials).trials, read_trials(cross.trials).trials
    data, test = read_data_dir(cross.data_dir), read_data_dir(corpus.test_dir)
    assert len(crossed) == len(plain)
    channels = {}
    for line in cross.channels.read_text().splitlines():
        copy, kind, params = line.split("\t")
        channels[copy] = (kind, json.loads(params))
    assert set(PROTOCOL_CHANNELS) >= {k for k, _ in channels.values()}
    rirs = protocol_rirs(tmp_path / "rirs", seed=0, rirs_per_room=1)
    for p, c in zip(plain, crossed):
        assert (c.enroll, c.target) == (p.enroll, p.target) and c.test.startswith(p.test + "@")
        assert data.utt2spk[c.test] == test.utt2spk[p.test] and data.wav_scp[c.enroll] == test.wav_scp[p.enroll]
    for copy, (kind, params) in channels.items():  # each copy is its original through the recorded channel
        original = load_audio(test.wav_scp[copy.split("@")[0]])
        if kind == "noise":
            noise = coloured_noise(original.numel(), params["colour"],
                                   torch.Generator().manual_seed(params["noise_seed"]))
            want = add_noise(original, noise, params["snr_db"])
        elif kind == "reverb":
            want = reverberate(original, rirs[params["rir"]])
        else:
            want = apply_channel(original, ChannelChoice(kind, **params))
        want = want * min(1.0, 0.99 / float(want.abs().max()))
        np.testing.assert_allclose(load_audio(data.wav_scp[copy]), want, atol=1e-4)
    assert sum(cross.channel_counts().values()) == len({t.test for t in plain})


def test_the_list_is_built_once_per_seed(tmp_path):
    corpus = _corpus(tmp_path, n_speakers=3, utts=3)
    cross = build_cross_channel(corpus, progress=False, rirs_per_room=1)
    stamp = os.stat(cross.trials).st_mtime_ns
    assert build_cross_channel(corpus, progress=False, rirs_per_room=1) == cross
    assert os.stat(cross.trials).st_mtime_ns == stamp
    other = build_cross_channel(corpus, seed=1, progress=False, rirs_per_room=1)
    assert os.stat(other.trials).st_mtime_ns != stamp
    assert all("@" in t.test for t in read_trials(other.trials).trials)
    with pytest.raises(FileNotFoundError):
        build_cross_channel(CorpusSummary(str(tmp_path / "none"), *[SplitSummary(1, 1, 1.0)] * 2, 1, 1, 0, 0.0),
                            progress=False)
