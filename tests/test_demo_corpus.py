"""svlib.data.demo: the offline demo corpus (real speech from Debian packages) and its small pure steps.

The corpus tests build the real corpus once per session into ``default_data_root()`` (about 40 s of decoding plus
~35 s of package downloads on a cold 2-core machine; under a second once cached), hence ``slow``.
"""

import fnmatch
import hashlib
import json
import time

import pytest
import soundfile as sf

from svlib.frontend.audio import load_audio
from svlib.data import demo
from svlib.cli import build_parser
from svlib.core.paths import default_data_root
from svlib.data.demo import (
    SAME_LANGUAGE_PAIRS,
    SOURCES,
    SPEAKER_MERGES,
    CorpusSummary,
    DemoCorpusConfig,
    SpeakerInfo,
    SplitSummary,
    build_demo_corpus,
    decode_clip,
    demo_packages,
    make_trials,
    pack_clips,
    split_speakers,
)
from svlib.data.lists import read_data_dir, read_trials

# -- small pure steps -------------------------------------------------------------------------------------------


def test_pack_clips():
    assert pack_clips([2, 2, 1, 3, 1], 4.0, 2) == [[0, 1], [2, 3, 4]]
    assert pack_clips([1.0] * 9, 4.0, 3) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]  # leftover joins the last group
    assert pack_clips([5.0, 5.0], 4.0, 3) == []  # fewer clips than min_clips
    assert pack_clips([3.0, 3.0, 3.0], 4.0, 1) == [[0, 1, 2]]


def test_make_trials_balanced_and_deterministic():
    utt2spk = {f"{s}/x/{i:05d}": s for s in ("a", "b", "c") for i in range(4)}
    trials = make_trials(utt2spk, seed=0)
    targets = [t for t in trials if t.target]
    nontargets = [t for t in trials if not t.target]
    assert len(targets) == 3 * 6 == len(nontargets)
    assert all(utt2spk[t.enroll] == utt2spk[t.test] for t in targets)
    assert all(utt2spk[t.enroll] != utt2spk[t.test] for t in nontargets)
    assert len({(t.enroll, t.test) for t in trials}) == len(trials) and all(t.enroll < t.test for t in trials)
    assert make_trials(utt2spk, seed=0) == trials and make_trials(utt2spk, seed=1) != trials
    assert sum(t.target for t in make_trials(utt2spk, seed=0, max_target_trials=5)) == 5


def test_split_speakers():
    info = [SpeakerInfo(f"s{i}", 8, single_voice=i % 2 == 0, group="g" if i == 4 else None) for i in range(10)]
    train, test = split_speakers(info, n_test=3, min_test_utterances=6, seed=0)
    assert len(test) == 3 and not set(train) & set(test) and len(train) + len(test) == 10
    assert set(test) <= {"s0", "s2", "s6", "s8"}  # single voice, no group
    assert split_speakers(info, 3, 6, seed=0) == (train, test)
    with pytest.raises(ValueError, match="only 4 test candidates"):
        split_speakers(info, n_test=5, min_test_utterances=6, seed=0)


def test_config_validation():
    with pytest.raises(ValueError, match=r"DemoCorpusConfig.min_test_utterances = 1; expected >= 2"):
        DemoCorpusConfig(min_test_utterances=1)
    with pytest.raises(ValueError, match="clip_seconds"):
        DemoCorpusConfig(clip_seconds=(3.0, 1.0))


def test_summary_round_trip():
    s = CorpusSummary("/d/demo", SplitSummary(34, 359, 31.8), SplitSummary(10, 96, 8.6), 446, 446, 0, 38.0)
    assert CorpusSummary.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.speakers == 44 and s.to_dict()["trials"] == "/d/demo/trials.txt"


def test_sources_and_evidence_tables_agree():
    keys = [s.key for s in SOURCES]
    assert len(keys) == len(set(keys)), "each (speaker, session) once"
    speakers = {s.speaker for s in SOURCES}
    assert {m[0] for m in SPEAKER_MERGES} <= speakers
    allison = [s for s in SOURCES if s.speaker == "asterisk-allison"]
    assert {s.package for s in allison} == {"asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722"}
    for a, b, decision, _ in SAME_LANGUAGE_PAIRS:
        matched = fnmatch.filter(sorted(speakers), b)  # "ktuberling-ca-*": every tagged Catalan voice
        assert a in speakers and matched, (a, b)
        ga = {s.group for s in SOURCES if s.speaker == a}
        gb = {s.group for s in SOURCES if s.speaker in matched}
        # an open question (same person or not) must keep both voices in one group, out of the test split
        assert decision == "different" or (ga == gb and None not in ga), (a, b, ga, gb)
    for s in SOURCES:
        assert s.evidence, s.key
        assert not s.single_voice or s.voice, s.key
    assert demo_packages()[:2] == ["klettres-data", "ktuberling-data"] and len(demo_packages()) == 14


def test_apt_unavailable_error_says_what_to_do(tmp_path, monkeypatch):
    def no_apt(name, root=None):
        raise RuntimeError(f"cannot fetch Debian package {name!r}: 'apt-get' and 'dpkg' are needed")

    monkeypatch.setattr(demo, "fetch_debian_package", no_apt)
    with pytest.raises(RuntimeError, match=r"cannot build the demo corpus: cannot fetch Debian package 'klettres-data'"
                                           r"(.|\n)*packages from Debian main(.|\n)*dpkg -x"):
        build_demo_corpus(tmp_path, progress=False)


# -- the real corpus --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def corpus():
    start = time.perf_counter()
    summary = build_demo_corpus(default_data_root(), progress=False)
    print(f"demo corpus ready in {time.perf_counter() - start:.1f} s (build took {summary.build_seconds} s)")
    return summary


@pytest.mark.slow
def test_speakers_and_disjoint_split(corpus):
    train, test = read_data_dir(corpus.train_dir), read_data_dir(corpus.test_dir)
    assert 55 <= corpus.speakers <= 65, "about 60 voices after merging and dropping the smallest"
    assert len(test.speakers) == 16 and corpus.train.speakers == len(train.speakers)
    assert not set(train.speakers) & set(test.speakers), "speaker-disjoint split"
    assert "asterisk-allison" in set(train.speakers) | set(test.speakers)
    assert not {"asterisk-en", "asterisk-es"} & set(train.speakers)  # merged labels only
    assert (corpus.train.utterances, corpus.test.utterances) == (len(train), len(test))
    assert all(u.startswith(train.utt2spk[u] + "/") and u.count("/") == 2 for u in train.utts)
    grouped = {s.speaker for s in SOURCES if s.group or not s.single_voice}
    assert not grouped & set(test.speakers), "test speakers are single credited voices without a same-language twin"


@pytest.mark.slow
def test_trials_reference_existing_test_utterances(corpus):
    test = read_data_dir(corpus.test_dir)
    trials = read_trials(corpus.trials)
    trials.check(test)
    assert trials.n_target == trials.n_nontarget == corpus.target_trials == corpus.nontarget_trials > 300
    assert all((test.utt2spk[t.enroll] == test.utt2spk[t.test]) == t.target for t in trials)
    assert len({(t.enroll, t.test) for t in trials}) == len(trials)


@pytest.mark.slow
def test_durations_and_audio_files(corpus):
    for split, summary in (("train", corpus.train), ("test", corpus.test)):
        data = read_data_dir(corpus.root + "/" + split)
        assert data.utt2dur is not None
        assert min(data.utt2dur.values()) >= 4.0 and max(data.utt2dur.values()) < 20.0
        assert sum(data.utt2dur.values()) / 60 == pytest.approx(summary.minutes, abs=0.01)
        for utt in data.utts[:: max(1, len(data) // 25)]:
            info = sf.info(data.wav_scp[utt])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames / 16000 == pytest.approx(data.utt2dur[utt], abs=1e-3)
            wav = load_audio(data.wav_scp[utt])
            assert 0.01 < float(wav.abs().max()) <= 1.0 and float(wav.std()) > 1e-3
    assert 20 < corpus.train.minutes < 60 and 5 < corpus.test.minutes < 20


@pytest.mark.slow
def test_second_call_is_cached(corpus):
    start = time.perf_counter()
    again = build_demo_corpus(default_data_root(), progress=False)
    assert time.perf_counter() - start < 2.0
    assert again == corpus


@pytest.mark.slow
def test_readme_lists_packages_versions_licenses(corpus):
    readme = corpus.readme.read_text()
    for pkg in demo_packages():
        assert f"| {pkg} | " in readme, pkg
    for text in ("4:22.12.3-1", "GPL-2+", "CC-BY-SA-3.0", "CC-BY-3.0", "| asterisk-allison |", "Allison Smith"):
        assert text in readme, text
    speakers = json.loads((corpus.train_dir.parent / "speakers.json").read_text())
    kept = [r for r in speakers if r["split"] != "dropped"]
    assert len(kept) == corpus.speakers


@pytest.mark.slow
def test_package_evidence_on_disk(corpus):
    pkgs = default_data_root() / "pkgs"
    sounds = pkgs / "ktuberling-data" / "usr/share/ktuberling/sounds"

    def digests(folder):
        return sorted(hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir())

    assert digests(sounds / "sr") == digests(sounds / "sr@latin") == digests(sounds / "sr@ijekavian")
    ast = pkgs / "asterisk-core-sounds-en-g722" / "usr/share/asterisk/sounds"
    assert (ast / "en_US_f_Allison").is_dir()
    assert (pkgs / "asterisk-core-sounds-es-g722" / "usr/share/asterisk/sounds/es_MX_f_Allison").is_dir()
    g722 = ast / "en_US_f_Allison" / "vm-goodbye.g722"
    wav = decode_clip(g722, "g722")  # 64 kbit/s at 16 kHz: 2 samples per byte before trimming
    assert 0.3 * 16000 < wav.shape[0] <= 2 * g722.stat().st_size and float(wav.abs().max()) > 0.05
    gsm = next((pkgs / "asterisk-prompt-fr-armelle" / "usr/share/asterisk/sounds/fr").glob("*.gsm"))
    assert decode_clip(gsm, "gsm").shape[0] > 0.2 * 16000


@pytest.mark.slow
def test_cli_demo_prints_summary(corpus, capsys):
    args = build_parser().parse_args(["data", "demo", "--json", "--no-progress"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speakers"] == corpus.speakers and out["train"]["utterances"] == corpus.train.utterances
