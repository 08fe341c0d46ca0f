"""svlib.data.lists: Kaldi data directories and trial lists (VGG, Kaldi, CN-Celeb formats)."""

import os

import numpy as np
import pytest

from svlib.data.lists import (
    DataDir,
    DataDirError,
    MissingUtterancesError,
    Trial,
    TrialList,
    check_trials,
    combine_data_dirs,
    detect_trial_format,
    parse_trial_line,
    read_cnceleb_trials,
    read_data_dir,
    read_enroll_map,
    read_key_value,
    read_trials,
    utt_id_from_path,
    write_data_dir,
    write_enroll_map,
    write_lines_atomic,
    write_trials,
)


def small_dir(with_dur=True):
    entries = [
        ("id1/vidA/00001", "id1", "/c/id1/vidA/00001.wav"),
        ("id1/vidB/00001", "id1", "/c/id1/vidB/00001.wav"),
        ("id2/vidC/00002", "id2", "/c/with space/00002.wav"),
    ]
    dur = {"id1/vidA/00001": 4.5, "id1/vidB/00001": 6.25, "id2/vidC/00002": 8.0} if with_dur else None
    return DataDir.from_entries(entries, dur)


# -- utterance ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("id10270/x6uYqmx31kE/00001.wav", "id10270/x6uYqmx31kE/00001"),
        ("id00012/21Uxsk56VDQ/00001.m4a", "id00012/21Uxsk56VDQ/00001"),
        ("test/id00800-singing-01-001.FLAC", "test/id00800-singing-01-001"),
        ("id00800-enroll", "id00800-enroll"),
        ("spk/v.1/00001", "spk/v.1/00001"),  # not an audio extension: unchanged
    ],
)
def test_utt_id_from_path(path, expected):
    assert utt_id_from_path(path) == expected


# -- data directories -------------------------------------------------------------------------------------------


def test_data_dir_round_trip(tmp_path):
    data = small_dir()
    write_data_dir(data, tmp_path / "d")
    assert sorted(os.listdir(tmp_path / "d")) == ["spk2utt", "utt2dur", "utt2spk", "wav.scp"]
    assert (tmp_path / "d" / "spk2utt").read_text() == "id1 id1/vidA/00001 id1/vidB/00001\nid2 id2/vidC/00002\n"
    back = read_data_dir(tmp_path / "d")
    assert back.wav_scp == data.wav_scp and back.utt2spk == data.utt2spk and back.utt2dur == data.utt2dur
    assert back.wav_scp["id2/vidC/00002"] == "/c/with space/00002.wav"  # a path is the rest of the line
    assert back.speakers == ["id1", "id2"] and len(back) == 3 and "id1/vidA/00001" in back
    assert back.total_seconds() == pytest.approx(18.75)


def test_data_dir_sorted_and_subset():
    data = DataDir.from_entries([("b/x/1", "b", "/b1"), ("a/x/1", "a", "/a1"), ("a/x/2", "a", "/a2")])
    assert list(data.wav_scp) == ["a/x/1", "a/x/2", "b/x/1"]
    assert data.spk2utt() == {"a": ["a/x/1", "a/x/2"], "b": ["b/x/1"]}
    assert data.subset(speakers=["b"]).utts == ["b/x/1"]
    assert data.subset(utts=["a/x/2", "b/x/1"]).speakers == ["a", "b"]
    with pytest.raises(DataDirError, match="unknown speakers: 'zz'"):
        data.subset(speakers=["zz"])


def test_data_dir_checks():
    with pytest.raises(DataDirError, match=r"1 utterances only in wav.scp \['u2'\]"):
        DataDir({"u1": "/a", "u2": "/b"}, {"u1": "s"})
    with pytest.raises(DataDirError, match="speaker label of 'u1'.*whitespace"):
        DataDir({"u1": "/a"}, {"u1": "s 1"})
    with pytest.raises(DataDirError, match="appears twice"):
        DataDir.from_entries([("u", "s", "/a"), ("u", "s", "/b")])
    with pytest.raises(DataDirError, match="non-positive durations"):
        DataDir({"u": "/a"}, {"u": "s"}, {"u": 0.0})


def test_read_data_dir_errors_name_the_file(tmp_path):
    d = tmp_path / "d"
    write_data_dir(small_dir(with_dur=False), d)
    (d / "spk2utt").write_text("id1 id1/vidA/00001\nid2 id2/vidC/00002\n")
    with pytest.raises(DataDirError, match=r"spk2utt: disagrees with utt2spk for speakers 'id1'"):
        read_data_dir(d)
    write_data_dir(small_dir(with_dur=False), d)
    (d / "utt2spk").write_text("id1/vidA/00001 id1\nid1/vidA/00001 id1\n")
    with pytest.raises(DataDirError, match=r"utt2spk:2: key 'id1/vidA/00001' appears twice"):
        read_data_dir(d)
    (d / "utt2spk").write_text("id1/vidA/00001\n")
    with pytest.raises(DataDirError, match=r"utt2spk:1: expected '<key> <value>'"):
        read_data_dir(d)
    (d / "wav.scp").write_text("u1 sox a.flac -t wav - |\n")
    (d / "utt2spk").write_text("u1 s\n")
    (d / "spk2utt").unlink()
    with pytest.raises(DataDirError, match="pipe command"):
        read_data_dir(d)
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        read_data_dir(tmp_path / "missing")


def test_write_data_dir_removes_stale_utt2dur(tmp_path):
    write_data_dir(small_dir(), tmp_path)
    write_data_dir(small_dir(with_dur=False), tmp_path)
    assert not (tmp_path / "utt2dur").exists()
    assert read_data_dir(tmp_path).utt2dur is None


def test_combine_data_dirs():
    a = small_dir()
    b = DataDir.from_entries([("id3/v/00001", "id3", "/c/3.wav")], {"id3/v/00001": 5.0})
    both = combine_data_dirs(a, b, a)  # identical duplicates merge
    assert len(both) == 4 and both.speakers == ["id1", "id2", "id3"] and both.utt2dur is not None
    clash = DataDir.from_entries([("id3/v/00001", "id9", "/c/3.wav")])
    with pytest.raises(DataDirError, match="two data directories with different entries"):
        combine_data_dirs(b, clash)
    assert combine_data_dirs(a, clash).utt2dur is None  # clash has no durations


def test_write_lines_atomic_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "list.txt"
    write_lines_atomic(path, ["old"])

    def broken():
        yield "new"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_lines_atomic(path, broken())
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["list.txt"]  # no temporary file left behind


# -- trials -----------------------------------------------------------------------------------------------------


def test_detect_and_parse_formats():
    assert detect_trial_format("1 id1/a/00001.wav id2/b/00001.wav") == "vgg"
    assert detect_trial_format("id1/a/00001 id2/b/00001 nontarget") == "kaldi"
    assert detect_trial_format("id00800-enroll test/id00800-singing-01-001.wav 1") == "cnceleb"
    with pytest.raises(ValueError, match="cannot tell the trial format"):
        detect_trial_format("a b")
    assert parse_trial_line("1 id1/a/00001.wav id2/b/00001.wav", "vgg") == Trial("id1/a/00001", "id2/b/00001", True)
    assert parse_trial_line("x y target", "kaldi") == Trial("x", "y", True)
    assert parse_trial_line("e test/t.wav 0", "cnceleb") == Trial("e", "test/t", False)
    with pytest.raises(ValueError, match="label 'yes' is not one of"):
        parse_trial_line("x y yes", "kaldi")
    with pytest.raises(ValueError, match="expected 3 fields"):
        parse_trial_line("1 x", "vgg")


def test_vgg_list_to_kaldi_and_back(tmp_path):
    src = tmp_path / "veri_test2.txt"
    src.write_text("1 id1/vidA/00001.wav id1/vidB/00001.wav\n0 id1/vidA/00001.wav id2/vidC/00002.wav\n")
    trials = read_trials(src)
    assert trials.name == "veri_test2.txt" and len(trials) == 2
    assert (trials.n_target, trials.n_nontarget) == (1, 1)
    labels = trials.labels()
    assert labels.dtype == np.bool_ and labels.shape == (2,) and labels.tolist() == [True, False]
    write_trials(trials, tmp_path / "kaldi.txt")
    assert (tmp_path / "kaldi.txt").read_text().splitlines()[1] == "id1/vidA/00001 id2/vidC/00002 nontarget"
    assert read_trials(tmp_path / "kaldi.txt").trials == trials.trials
    write_trials(trials, tmp_path / "vgg.txt", fmt="vgg")
    assert read_trials(tmp_path / "vgg.txt").trials == trials.trials
    check_trials(trials, small_dir())  # every utterance exists


def test_read_trials_error_names_file_and_line(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("a b target\na b maybe\n")
    with pytest.raises(ValueError, match=r"t.txt:2: label 'maybe'"):
        read_trials(bad)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no trials"):
        read_trials(tmp_path / "empty.txt")


def test_kaldi_trials_skip_blank_and_comment_lines_and_keep_one_format(tmp_path):
    (tmp_path / "kaldi").write_text("a b target\nc d nontarget\n\n# comment\ne f target\n")
    assert read_trials(tmp_path / "kaldi").trials == [Trial("a", "b", True), Trial("c", "d", False),
                                                      Trial("e", "f", True)]
    # The format comes from the first line: a CN-Celeb-style '1|0' label in a Kaldi list is an error.
    (tmp_path / "mixed").write_text("a b target\nc d nontarget\n\n# comment\ne f 1\n")
    with pytest.raises(ValueError, match=r"mixed:5: label '1' is not one of"):
        read_trials(tmp_path / "mixed")


def test_enroll_map_several_ids(tmp_path):
    (tmp_path / "enroll.map").write_text("spk1 u1 u2\nspk2 u3\n")
    assert read_enroll_map(tmp_path / "enroll.map") == {"spk1": ["u1", "u2"], "spk2": ["u3"]}


def test_read_key_value(tmp_path):
    (tmp_path / "wav.scp").write_text("u1 /a b/c.wav\n# comment\n\nu2 /d.wav\n")
    assert read_key_value(tmp_path / "wav.scp") == {"u1": "/a b/c.wav", "u2": "/d.wav"}
    (tmp_path / "dup.scp").write_text("u1 /a.wav\nu1 /b.wav\n")
    with pytest.raises(DataDirError, match=r"dup.scp:2: key 'u1' appears twice in wav.scp"):
        read_key_value(tmp_path / "dup.scp", "wav.scp")
    (tmp_path / "short").write_text("u1\n")
    with pytest.raises(ValueError, match=r"short:1: expected '<key> <value>' in key/value map"):
        read_key_value(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="utt2spk not found"):
        read_key_value(tmp_path / "nope", "utt2spk")


def test_missing_utterances_error_lists_names_and_count():
    trials = TrialList([Trial("id1/vidA/00001", f"gone/v/{i:05d}", False) for i in range(8)]
                       + [Trial("id1/vidA/00001", "id1/vidB/00001", True)], name="Vox1-O")
    with pytest.raises(MissingUtterancesError) as info:
        check_trials(trials, small_dir(), where="data/vox1")
    err = info.value
    assert err.missing == [f"gone/v/{i:05d}" for i in range(8)] and err.n_trials == 8
    msg = str(err)
    assert msg.startswith("Vox1-O: 8 utterances named by 8 of 9 trials are not in data/vox1")
    assert "'gone/v/00000'" in msg and "(3 more)" in msg
    assert isinstance(err, ValueError)  # the CLI reports ValueErrors as user errors


def test_cnceleb_trials_with_enroll_map(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "trials.lst").write_text(
        "id00800-enroll test/id00800-singing-01-001.wav 1\nid00800-enroll test/id00801-vlog-01-001.wav 0\n"
    )
    (lists / "enroll.map").write_text("id00800-enroll id00800/speech-01-001.wav id00800/speech-01-002.wav\n")
    trials = read_cnceleb_trials(lists / "trials.lst", lists / "enroll.map")
    assert trials.enroll_map == {"id00800-enroll": ["id00800/speech-01-001", "id00800/speech-01-002"]}
    assert trials.trials[0] == Trial("id00800-enroll", "test/id00800-singing-01-001", True)
    assert trials.enroll_utts("id00800-enroll") == ["id00800/speech-01-001", "id00800/speech-01-002"]
    assert trials.utterances() == {"test/id00800-singing-01-001", "test/id00801-vlog-01-001",
                                   "id00800/speech-01-001", "id00800/speech-01-002"}
    avail = ["test/id00800-singing-01-001", "test/id00801-vlog-01-001", "id00800/speech-01-001"]
    with pytest.raises(MissingUtterancesError, match=r"1 utterances named by 2 of 2 trials.*'id00800/speech-01-002'"):
        trials.check(avail)
    # Kaldi-format copy plus the map: read back with enroll_map=
    write_trials(trials, tmp_path / "cnc.kaldi")
    write_enroll_map(trials.enroll_map, tmp_path / "enroll.map")
    back = read_trials(tmp_path / "cnc.kaldi", enroll_map=tmp_path / "enroll.map")
    assert back.trials == trials.trials and back.enroll_map == trials.enroll_map
    (lists / "bad.map").write_text("id00999-enroll id00999/a.wav\n")
    with pytest.raises(ValueError, match="1 enrollment ids are not in .*bad.map: 'id00800-enroll'"):
        read_cnceleb_trials(lists / "trials.lst", lists / "bad.map")
    (lists / "empty.map").write_text("id00800-enroll\n")
    with pytest.raises(ValueError, match="lists no utterances"):
        read_enroll_map(lists / "empty.map")
