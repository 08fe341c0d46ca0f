"""``svlib embed`` / ``svlib score`` end to end on a tiny model and synthetic audio (list readers: test_data_lists)."""

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file

from svlib.audio import save_audio
from svlib.data.lists import read_key_value
from svlib.model import SpeakerModel
from svlib.scoring.cli import add_scoring_parsers


def run(argv):
    parser = argparse.ArgumentParser(prog="svlib")
    add_scoring_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
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
    from svlib.audio import load_audio
    from svlib.features import fbank
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
    from svlib.book import book_tables
    from svlib.results import load_record

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
