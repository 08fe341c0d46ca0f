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

