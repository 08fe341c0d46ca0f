"""``svlib embed`` / ``svlib score`` end to end on a tiny model and synthetic audio (list readers: test_data_lists)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from svlib.frontend.audio import save_audio
from svlib.data.lists import read_key_value
from svlib.model import SpeakerModel
from svlib.cli import build_parser


def run(argv):
    """``svlib <argv>`` without main's error handling, so that a test sees the exception."""
    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny saved model and six 1–1.6 s utterances of three 'speakers', with wav.scp, utt2spk and trials."""
    root = tmp_path_factory.mktemp("corpus")
    torch.manual_seed(0)
    SpeakerModel.build("tiny", head="adapter_mfa").save(root / "model")
    gen = torch.Generator().manual_seed(0)
    scp, spk = [], []
    for s in range(3):
        for u in range(2):
            utt = f"spk{s}-utt{u}"
            path = root / f"{utt}.wav"
            save_audio(path, 0.1 * torch.randn(int((1.0 + 0.3 * u) * 16000), generator=gen), 16000)
            scp.append(f"{utt} {path}")
            spk.append(f"{utt} spk{s}")
    (root / "wav.scp").write_text("\n".join(scp) + "\n")
    (root / "utt2spk").write_text("\n".join(spk) + "\n")
    (root / "trials").write_text(
        "spk0-utt0 spk0-utt1 target\nspk0-utt0 spk1-utt0 nontarget\nspk1-utt0 spk1-utt1 target\n"
        "spk2-utt0 spk1-utt1 nontarget\n"
    )
    return root


def test_embed_then_score_with_asnorm_and_qmf(corpus, capsys):
    out = corpus / "emb.safetensors"
    argv = ["embed", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--out", str(out)]
    assert run([*argv, "--no-progress"]) == 0
    emb = load_file(out)
    assert sorted(emb) == sorted(read_key_value(corpus / "wav.scp")) and emb["spk0-utt0"].shape == (256,)
    capsys.readouterr()
    argv = ["score", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--embeddings", str(out),
            "--trials", str(corpus / "trials"), "--asnorm", "--cohort-wav-scp", str(corpus / "wav.scp"),
            "--cohort-embeddings", str(out), "--cohort-utt2spk", str(corpus / "utt2spk"), "--top-n", "2",
            "--qmf", "--calibration-trials", "8", "--qmf-out", str(corpus / "qmf.json"), "--no-progress", "--json"]
    assert run(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["results"]) == {"cosine", "asnorm", "asnorm+qmf"}
    for r in payload["results"].values():
        assert r["n_trials"] == 4 and r["n_targets"] == 2 and 0 <= r["eer_percent"] <= 100
    assert (corpus / "qmf.json").is_file()
    # The table output, reusing the fitted QMF.
    argv = [a for a in argv if a != "--json"]
    argv[argv.index("--qmf-out") : argv.index("--qmf-out") + 2] = ["--qmf-model", str(corpus / "qmf.json")]
    assert run(argv) == 0
    assert "minDCF(0.01)" in capsys.readouterr().out


def test_score_errors(corpus):
    with pytest.raises(ValueError, match="--asnorm"):
        run(["score", "--trials", str(corpus / "trials"), "--qmf"])
    with pytest.raises(ValueError, match="--model"):
        run(["score", "--trials", str(corpus / "trials"), "--wav-scp", str(corpus / "wav.scp")])



def test_evaluate_model_matches_the_command_line(corpus, capsys):
    """The library's one-call protocol gives the CLI's numbers, and its cosine EER matches an independent count."""
    from svlib.data.lists import read_trials
    from svlib.model import load_model
    from svlib.scoring.evaluate import evaluate_model
    from svlib.scoring.extract import extract_embeddings

    model = load_model(corpus / "model")  # the corpus folder is a Kaldi data directory (wav.scp, utt2spk)
    result = evaluate_model(model, corpus, corpus / "trials", cohort_dir=corpus, top_n=2, calibration_trials=8,
                            progress=False)
    assert set(result.metrics) == {"cosine", "asnorm", "asnorm+qmf"} and result.cohort_speakers == 3
    argv = ["score", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--trials",
            str(corpus / "trials"), "--asnorm", "--cohort-wav-scp", str(corpus / "wav.scp"), "--cohort-utt2spk",
            str(corpus / "utt2spk"), "--top-n", "2", "--qmf", "--calibration-trials", "8", "--no-progress", "--json"]
    capsys.readouterr()
    assert run(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    for name, metrics in result.metrics.items():
        assert metrics["eer_percent"] == pytest.approx(payload["results"][name]["eer_percent"], abs=1e-6), name
    # independent cosine scores: normalised dot products of the extracted embeddings
    emb = extract_embeddings(model, read_key_value(corpus / "wav.scp"), progress=False)
    trials = read_trials(corpus / "trials")
    manual = torch.tensor([
        torch.nn.functional.cosine_similarity(emb[t.enroll], emb[t.test], dim=0).item() for t in trials
    ])
    torch.testing.assert_close(result.scores["cosine"], manual, atol=1e-5, rtol=0)


def test_logmel_baseline_is_the_mean_of_the_fbank_frames(corpus):
    from svlib.frontend.audio import load_audio
    from svlib.frontend.features import fbank
    from svlib.scoring.baseline import logmel_embeddings

    scp = read_key_value(corpus / "wav.scp")
    emb = logmel_embeddings(scp, stats="mean+std")
    feats, _ = fbank(load_audio(scp["spk1-utt1"]).unsqueeze(0))
    assert emb["spk1-utt1"].shape == (160,)
    torch.testing.assert_close(emb["spk1-utt1"][:80], feats[0].mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(emb["spk1-utt1"][80:], feats[0].std(0), atol=1e-4, rtol=0)
    assert logmel_embeddings(scp)["spk0-utt0"].shape == (80,)
    with pytest.raises(ValueError, match="stats"):
        logmel_embeddings(scp, stats="median")


def test_score_records_its_run(corpus, tmp_path, capsys):
    """``svlib score`` writes an ``eval`` record; with --system its name is the book's, and the tables pick it up."""
    from svlib.analysis.tables import book_tables
    from svlib.core.results import load_record

    emb = corpus / "emb-record.safetensors"
    assert run(["embed", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--out", str(emb),
                "--no-progress"]) == 0
    stage = tmp_path / "exp" / "lora_adapter_mfa" / "s3_lmft"
    (stage / "model").mkdir(parents=True)
    (stage / "done.json").write_text(json.dumps({"stage": "pruned_s3_lmft", "profile": "demo", "steps": 3}))
    results = tmp_path / "results"
    base = ["score", "--embeddings", str(emb), "--trials", str(corpus / "trials"), "--model", str(stage / "model"),
            "--results-dir", str(results), "--json"]
    capsys.readouterr()

    assert run(base) == 0  # no --system: kept under a name made of the model folder and the trial file
    payload = json.loads(capsys.readouterr().out)
    assert payload["record"] == str(results / "demo" / "eval" / "lora_adapter_mfa.s3_lmft.trials.json")
    assert load_record(results, "demo", "eval", "lora_adapter_mfa.s3_lmft.trials")["metrics"] == payload["results"]

    assert run([*base, "--system", "LoRA_Adapter_MFA-pruned80", "--test-name", "demo"]) == 0
    payload = json.loads(capsys.readouterr().out)
    name = "LoRA_Adapter_MFA-pruned80.demo.s3_lmft.demo"  # train code from configs/demo/data.yaml, stage from done.json
    assert payload["record"] == str(results / "demo" / "eval" / f"{name}.json")
    table3 = book_tables(results)["Table 3"]
    ours = table3[table3["record"] == name]
    assert ours["ours"].tolist() == [payload["results"]["cosine"]["eer_percent"]]

    # bad naming flags fail before any scoring; --no-record writes nothing
    with pytest.raises(ValueError, match="system 'Foo'"):
        run([*base, "--system", "Foo"])
    (stage / "done.json").write_text(json.dumps({"stage": "p2_distill"}))
    with pytest.raises(ValueError, match="give --stage"):
        run([*base, "--system", "MFA"])
    assert run([*base, "--system", "MFA", "--stage", "s1_freeze", "--profile", "paper", "--test-name", "x"]) == 0
    assert (results / "paper" / "eval" / "MFA.vox2+vb2.s1_freeze.x.json").is_file()
    before = sorted(results.rglob("*.json"))
    assert run([*base, "--no-record", "--record", "other"]) == 0
    assert sorted(results.rglob("*.json")) == before


def test_evaluate_model_with_a_cache_gives_the_in_memory_metrics(corpus, tmp_path, monkeypatch):
    """evaluate_model through a kept cache, through a temporary one, and today's in-memory protocol step by step
    (dict of embeddings, make_cohort, fit_qmf on the dict) give the same metrics; a second run reuses the cache."""
    import svlib.scoring.extract as extract_module
    from svlib.data.lists import read_trials
    from svlib.model import load_model
    from svlib.scoring.evaluate import evaluate_model, fit_qmf, score_trials, utterance_durations
    from svlib.scoring.extract import ShardCache, extract_embeddings

    model = load_model(corpus / "model")
    settings = dict(cohort_dir=corpus, top_n=2, calibration_trials=8, progress=False)
    cached = evaluate_model(model, corpus, corpus / "trials", cache_dir=tmp_path / "cache", shard_size=2, **settings)
    temporary = evaluate_model(model, corpus, corpus / "trials", **settings)

    scp, utt2spk = read_key_value(corpus / "wav.scp"), read_key_value(corpus / "utt2spk")
    emb = extract_embeddings(model, scp, progress=False)
    qmf = fit_qmf(lambda sources: extract_embeddings(model, sources, progress=False), emb, utt2spk, scp,
                  n_trials=8, top_n=2)
    in_memory = score_trials(emb, read_trials(corpus / "trials"), cohort_emb=emb, cohort_utt2spk=utt2spk, top_n=2,
                             qmf=qmf, durations=utterance_durations(scp, emb))
    assert set(in_memory.metrics) == {"cosine", "asnorm", "asnorm+qmf"}
    for result in (cached, temporary):
        assert result.cohort_speakers == 3
        for method, metrics in in_memory.metrics.items():
            for key in ("eer_percent", "min_dcf_0.01", "min_dcf_0.05"):
                assert result.metrics[method][key] == pytest.approx(metrics[key], abs=1e-6), (method, key)
        for method in ("cosine", "asnorm"):
            torch.testing.assert_close(result.scores[method], in_memory.scores[method], atol=1e-4, rtol=0)

    # The kept cache: one folder each for the trials' 5 utterances, the cohort's 6 and the QMF crops.
    sizes = [len(ShardCache(p.parent)) for p in (tmp_path / "cache").glob("shards-*/manifest.json")]
    assert len(sizes) == 3 and {5, 6} <= set(sizes)

    def no_extraction(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(extract_module, "extract_embeddings", no_extraction)
    again = evaluate_model(model, corpus, corpus / "trials", cache_dir=tmp_path / "cache", shard_size=2, **settings)
    assert again.metrics == cached.metrics


def test_score_with_cohort_dir_cache_dir_and_the_profile_cohort(corpus, tmp_path, capsys, monkeypatch):
    """--cohort-dir and --cache-dir give the numbers of --cohort-wav-scp/--cohort-utt2spk; with --profile and no
    cohort flag the cohort is the profile's cohort_dir (configs/<profile>/data.yaml)."""

    base = ["score", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--trials",
            str(corpus / "trials"), "--asnorm", "--top-n", "2", "--qmf", "--calibration-trials", "8", "--no-progress",
            "--json", "--no-record"]

    def score(extra):
        capsys.readouterr()
        assert run([*base, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    files = score(["--cohort-wav-scp", str(corpus / "wav.scp"), "--cohort-utt2spk", str(corpus / "utt2spk")])
    cache = tmp_path / "cache"
    folder = score(["--cohort-dir", str(corpus), "--cache-dir", str(cache), "--shard-size", "4"])
    assert sorted(p.parent.name.startswith("shards-") for p in cache.glob("*/manifest.json")) == [True, True]
    configs = tmp_path / "configs"
    (configs / "mine").mkdir(parents=True)
    (configs / "mine" / "data.yaml").write_text("cohort_dir: ${MY_COHORT_DIR}  # a test profile\n")
    monkeypatch.setenv("SVLIB_CONFIGS", str(configs))
    monkeypatch.setenv("MY_COHORT_DIR", str(corpus))
    profile = score(["--profile", "mine", "--cache-dir", str(cache), "--shard-size", "4"])
    for payload in (folder, profile):
        assert payload["cohort_speakers"] == 3
        for method, metrics in files["results"].items():
            assert payload["results"][method]["eer_percent"] == pytest.approx(metrics["eer_percent"], abs=1e-6)

    with pytest.raises(ValueError, match="--cohort-dir DIR"):
        run([a for a in base if a != "--qmf"])
    (configs / "mine" / "data.yaml").write_text("train_name: x\n")
    with pytest.raises(ValueError, match="has no cohort_dir"):
        run([*base, "--profile", "mine"])


def test_embed_through_a_kept_cache(corpus, tmp_path, capsys):
    argv = ["embed", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--no-progress"]
    assert run([*argv, "--out", str(tmp_path / "a.safetensors")]) == 0
    assert run([*argv, "--out", str(tmp_path / "b.safetensors"), "--cache-dir", str(tmp_path / "c"),
                "--shard-size", "4"]) == 0
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert sorted(a) == sorted(b) == sorted(read_key_value(corpus / "wav.scp"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)
    assert [p.name for p in sorted((tmp_path / "c").glob("shards-*/*"))] == [
        "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_score_under_torchrun_with_two_processes_matches_one(corpus, tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m svlib score ... --asnorm --qmf --json` (gloo on CPU): the ranks share the
    shards, rank 0 alone prints, and the numbers are those of one process."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    argv = ["score", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"), "--trials",
            str(corpus / "trials"), "--asnorm", "--cohort-dir", str(corpus), "--top-n", "2", "--qmf",
            "--calibration-trials", "8", "--shard-size", "2", "--device", "cpu", "--no-progress", "--json",
            "--no-record"]
    capsys.readouterr()
    assert run([*argv, "--cache-dir", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    command = [*launcher, "--nproc_per_node", "2", "--master-port", str(_free_port()), "-m", "svlib", "-v", *argv,
               "--cache-dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout)  # exactly one JSON document: rank 1 printed nothing
    assert set(two["results"]) == {"cosine", "asnorm", "asnorm+qmf"} and two["cohort_speakers"] == 3
    for method, metrics in one["results"].items():
        for key in ("eer_percent", "min_dcf_0.01", "min_dcf_0.05", "n_trials", "n_targets"):
            assert two["results"][method][key] == pytest.approx(metrics[key], abs=1e-5), (method, key)
    # the ranks shared the shards: 6 utterances in shards [0, 2] (rank 0) and [1] (rank 1), then the crops
    assert "3 shards of 6 utterances, 0 already done; rank 0 of 2 extracts 2" in done.stderr
    assert "3 shards of 6 utterances, 0 already done; rank 1 of 2 extracts 1" in done.stderr


def test_score_with_speaker_bootstrap_intervals(corpus, tmp_path, capsys):
    """--bootstrap N: every scoring's EER and minDCF get the speaker-level interval of
    svlib.scoring.speaker_bootstrap (computed here from the printed scores' inputs), recorded as scalars."""
    from svlib.data.lists import read_trials
    from svlib.model import load_model
    from svlib.scoring import evaluate_model, speaker_bootstrap, trial_speakers

    argv = ["score", "--model", str(corpus / "model"), "--wav-scp", str(corpus / "wav.scp"),
            "--trials", str(corpus / "trials"), "--bootstrap", "200", "--no-progress", "--json",
            "--results-dir", str(tmp_path / "results")]
    assert run(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    cosine = payload["results"]["cosine"]
    assert payload["bootstrap"] == {"speakers": 3, "resamples": 200, "level": 0.95, "seed": 0}
    model = load_model(corpus / "model")
    ev = evaluate_model(model, corpus, corpus / "trials", progress=False)
    trials = read_trials(corpus / "trials")
    enroll, test = trial_speakers(trials.trials, read_key_value(corpus / "utt2spk"))
    boot = speaker_bootstrap(ev.scores["cosine"].numpy(), trials.labels(), enroll, test, n_boot=200, seed=0)
    interval = boot.interval("system")
    assert cosine["eer_percent_low"] == pytest.approx(interval.low, abs=1e-6)
    assert cosine["eer_percent_high"] == pytest.approx(interval.high, abs=1e-6)
    assert cosine["eer_percent_low"] <= cosine["eer_percent"] <= cosine["eer_percent_high"]
    record = json.loads(Path(payload["record"]).read_text())
    assert record["metrics"]["cosine"]["min_dcf_0.01_high"] == cosine["min_dcf_0.01_high"]
    with_intervals = evaluate_model(model, corpus, corpus / "trials", progress=False, bootstrap=200)
    assert with_intervals.metrics["cosine"]["eer_percent_high"] == pytest.approx(interval.high, abs=1e-6)
    (tmp_path / "scp").mkdir()
    (tmp_path / "scp" / "wav.scp").write_text((corpus / "wav.scp").read_text())
    with pytest.raises(ValueError, match="give --utt2spk"):
        run([*argv[:4], str(tmp_path / "scp" / "wav.scp"), *argv[5:]])
