"""svlib.data.prepare: Kaldi data directories from tiny fake VoxCeleb / VoxBlink2 / CN-Celeb trees."""

import json

import numpy as np
import pytest
import soundfile as sf

from svlib.cli import build_parser
from svlib.data.lists import MissingUtterancesError, read_data_dir, read_enroll_map, read_trials
from svlib.data.prepare import (
    add_durations,
    prepare_cnceleb1,
    prepare_cnceleb2,
    prepare_dataset,
    prepare_voxblink2,
    prepare_voxceleb1,
    prepare_voxceleb2,
    scan_audio_tree,
)

SR = 16000


def tone(path, seconds=0.25, fmt=None):
    """A short synthetic 16 kHz file (sine + noise) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    wav = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, wav.astype(np.float32), SR, format=fmt)
    return path


def fake_vox1(root, spks=("id10001", "id10002"), videos=("vidAAA", "vidBBB"), n=2):
    for spk in spks:
        for v in videos:
            for i in range(1, n + 1):
                tone(root / "wav" / spk / v / f"{i:05d}.wav")
    return root


def fake_cnceleb1(root, with_dev_list=True):
    for spk in ("id00000", "id00001", "id00800", "id00801"):
        for genre in ("speech-01-001", "singing-02-003"):
            tone(root / "data" / spk / f"{genre}.flac")
    for name in ("id00800-vlog-01-001", "id00801-vlog-01-002"):
        tone(root / "eval" / "test" / f"{name}.flac")
    if with_dev_list:
        (root / "dev").mkdir(parents=True)
        (root / "dev" / "dev.lst").write_text("id00000\nid00001\n")
    lists = root / "eval" / "lists"
    lists.mkdir(parents=True)
    (lists / "enroll.map").write_text(
        "id00800-enroll id00800/speech-01-001.wav id00800/singing-02-003.wav\n"
        "id00801-enroll id00801/speech-01-001.wav\n"
    )
    (lists / "trials.lst").write_text(
        "id00800-enroll test/id00800-vlog-01-001.wav 1\n"
        "id00800-enroll test/id00801-vlog-01-002.wav 0\n"
        "id00801-enroll test/id00801-vlog-01-002.wav 1\n"
    )
    return root


def test_voxceleb1_dev_and_test_roots(tmp_path):
    dev = fake_vox1(tmp_path / "vox1_dev", spks=("id10001", "id10002"))
    test = fake_vox1(tmp_path / "vox1_test", spks=("id10270",))
    data = prepare_voxceleb1([dev, test])
    assert len(data) == 12 and data.speakers == ["id10001", "id10002", "id10270"]
    assert data.utts[0] == "id10001/vidAAA/00001"
    assert data.wav_scp["id10270/vidBBB/00002"] == str((test / "wav/id10270/vidBBB/00002.wav").resolve())
    assert data.utt2spk["id10270/vidBBB/00002"] == "id10270"
    # the wav folder itself is accepted as root too
    assert prepare_voxceleb1(test / "wav").utts == data.subset(speakers=["id10270"]).utts


def test_voxceleb1_prepare_dataset_with_trials(tmp_path):
    root = fake_vox1(tmp_path / "vox1")
    trials = tmp_path / "veri_test2.txt"
    trials.write_text("1 id10001/vidAAA/00001.wav id10001/vidBBB/00002.wav\n"
                      "0 id10001/vidAAA/00001.wav id10002/vidAAA/00001.wav\n")
    out = tmp_path / "out"
    result = prepare_dataset("voxceleb1", [root], out, trials=[trials], durations=True)
    assert result.trials == {"Vox1-O": str(out / "trials" / "Vox1-O")}
    assert result.utterances == {"vox1": 8} and result.speakers == {"vox1": 2} and result.n_trials == {"Vox1-O": 2}
    data = read_data_dir(out / "vox1")
    assert data.utt2dur is not None and all(d == pytest.approx(0.25) for d in data.utt2dur.values())
    kaldi = (out / "trials" / "Vox1-O").read_text().splitlines()
    assert kaldi == ["id10001/vidAAA/00001 id10001/vidBBB/00002 target",
                     "id10001/vidAAA/00001 id10002/vidAAA/00001 nontarget"]
    json.dumps(result.to_dict())


def test_trial_naming_missing_utterance_is_a_clear_error(tmp_path):
    root = fake_vox1(tmp_path / "vox1")
    trials = tmp_path / "list_test_hard2.txt"
    trials.write_text("1 id10001/vidAAA/00001.wav id19999/zzz/00001.wav\n"
                      "0 id10001/vidAAA/00001.wav id19998/zzz/00001.wav\n")
    with pytest.raises(MissingUtterancesError, match=r"Vox1-H: 2 utterances named by 2 of 2 trials.*'id19998/zzz/"):
        prepare_dataset("voxceleb1", [root], tmp_path / "out", trials=[trials])


def test_voxceleb2_m4a_and_converted_wav(tmp_path):
    root = tmp_path / "vox2"
    for spk, vid in (("id00012", "21Uxsk56VDQ"), ("id00015", "0fijmz4vTVU")):
        f = root / "dev" / "aac" / spk / vid / "00001.m4a"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"\x00" * 16)  # listed, never decoded
    aac = prepare_voxceleb2(root)
    assert aac.utts == ["id00012/21Uxsk56VDQ/00001", "id00015/0fijmz4vTVU/00001"]
    assert aac.wav_scp["id00012/21Uxsk56VDQ/00001"].endswith(".m4a")
    tone(root / "dev" / "wav" / "id00012" / "21Uxsk56VDQ" / "00001.wav")
    tone(root / "dev" / "wav" / "id00015" / "0fijmz4vTVU" / "00001.wav")
    wav = prepare_voxceleb2(root)  # a converted tree wins; the ids are the same
    assert wav.utts == aac.utts and all(p.endswith(".wav") for p in wav.wav_scp.values())


def test_voxblink2_layout(tmp_path):
    tone(tmp_path / "vb2" / "spk0001" / "vid01" / "clip_0001.wav")
    tone(tmp_path / "vb2" / "spk0001" / "vid02" / "clip_0001.wav")
    tone(tmp_path / "vb2" / "spk0002" / "vid01" / "clip_0003.wav")
    (tmp_path / "vb2" / "spk0002" / "vid01" / "notes.txt").write_text("not audio")
    data = prepare_voxblink2(tmp_path / "vb2")
    assert data.utts == ["spk0001/vid01/clip_0001", "spk0001/vid02/clip_0001", "spk0002/vid01/clip_0003"]


def test_empty_tree_error_shows_layout(tmp_path):
    (tmp_path / "vox1" / "wav" / "id1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no .wav/.flac files in a <spk>/<video>/<file> layout"):
        prepare_voxceleb1(tmp_path / "vox1")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        scan_audio_tree(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="depth must be 2"):
        scan_audio_tree(tmp_path, depth=4)


def test_cnceleb1(tmp_path):
    root = fake_cnceleb1(tmp_path / "CN-Celeb_flac")
    cn = prepare_cnceleb1(root)
    assert cn.train.speakers == ["id00000", "id00001"]  # from dev/dev.lst
    assert cn.train.utts[0] == "id00000/singing-02-003"
    assert sorted(cn.eval.utts) == ["id00800/singing-02-003", "id00800/speech-01-001", "id00801/speech-01-001",
                                    "test/id00800-vlog-01-001", "test/id00801-vlog-01-002"]
    assert cn.eval.utt2spk["test/id00801-vlog-01-002"] == "id00801"
    assert cn.trials.n_target == 2 and cn.trials.enroll_utts("id00801-enroll") == ["id00801/speech-01-001"]
    cn.trials.check(cn.eval)


def test_cnceleb1_without_dev_list_and_missing_test(tmp_path):
    root = fake_cnceleb1(tmp_path / "cn1", with_dev_list=False)
    assert prepare_cnceleb1(root).train.speakers == ["id00000", "id00001"]  # all but the enrolled speakers
    (root / "eval" / "test" / "id00801-vlog-01-002.flac").unlink()
    with pytest.raises(MissingUtterancesError, match=r"1 utterances named by 2 of 3 trials.*test/id00801-vlog-01-002"):
        prepare_cnceleb1(root)
    (tmp_path / "partial" / "data").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing eval/test, eval/lists/trials.lst, eval/lists/enroll.map"):
        prepare_cnceleb1(tmp_path / "partial")


def test_cnceleb2_and_prepare_dataset_cnceleb1(tmp_path):
    tone(tmp_path / "cn2" / "data" / "id10001" / "interview-01-001.flac")
    tone(tmp_path / "cn2" / "data" / "id10002" / "vlog-03-010.flac")
    assert prepare_cnceleb2(tmp_path / "cn2").utts == ["id10001/interview-01-001", "id10002/vlog-03-010"]
    root = fake_cnceleb1(tmp_path / "cn1")
    out = tmp_path / "out"
    result = prepare_dataset("cnceleb1", [root], out)
    assert set(result.data_dirs) == {"train", "eval"} and result.n_trials == {"CN-Celeb1": 3}
    trials = read_trials(result.trials["CN-Celeb1"], enroll_map=out / "eval" / "enroll.map")
    trials.check(read_data_dir(out / "eval"))
    assert read_enroll_map(out / "eval" / "enroll.map")["id00800-enroll"] == ["id00800/speech-01-001",
                                                                               "id00800/singing-02-003"]


def test_prepare_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'timit'"):
        prepare_dataset("timit", [tmp_path], tmp_path / "o")
    with pytest.raises(ValueError, match="takes one root"):
        prepare_dataset("cnceleb2", [tmp_path, tmp_path], tmp_path / "o")
    with pytest.raises(ValueError, match="only taken for voxceleb1"):
        prepare_dataset("cnceleb1", [tmp_path], tmp_path / "o", trials=["x.txt"])


def test_add_durations_names_unreadable_file(tmp_path):
    f = tmp_path / "vb" / "s" / "v" / "1.wav"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"not a wav file")
    with pytest.raises(ValueError, match=r"1.wav: cannot read the audio header of 's/v/1'"):
        add_durations(prepare_voxblink2(tmp_path / "vb"))


def run_cli(argv):
    """``svlib <argv>`` without main's error handling, so that a test sees the exception."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_cli_prepare_and_check(tmp_path, capsys):
    root = fake_vox1(tmp_path / "vox1")
    trials = tmp_path / "veri_test2.txt"
    trials.write_text("1 id10001/vidAAA/00001.wav id10001/vidBBB/00002.wav\n")
    assert run_cli(["data", "prepare", "voxceleb1", "--root", str(root), "--out", str(tmp_path / "o"),
                    "--trials", str(trials), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["utterances"] == {"vox1": 8} and "Vox1-O" in out["trials"]
    assert run_cli(["data", "check", "--data", str(tmp_path / "o" / "vox1"), "--trials", str(trials)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 trials (1 target, 0 nontarget) use 2 of the 8 utterances")
    trials.write_text("1 id10001/vidAAA/00001.wav id10009/gone/00001.wav\n")
    with pytest.raises(MissingUtterancesError, match="id10009/gone/00001"):
        run_cli(["data", "check", "--data", str(tmp_path / "o" / "vox1"), "--trials", str(trials)])
