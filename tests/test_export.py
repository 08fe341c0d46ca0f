"""svlib.model.export: the speaker model as ONNX (fp32 and int8), run by onnxruntime behind svlib's scoring."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from svlib.core.atomic import default_file_mode
from svlib.model import SpeakerModel
from svlib.model.export import OnnxSpeakerModel, export_onnx
from svlib.model.resize import apply_structure
from svlib.model.structure import PrunedStructure
from svlib.scoring import compute_eer, cosine_scores, read_trials
from test_scoring_cli import corpus, run  # noqa: F401  (the module fixture: a saved tiny model and 6 utterances)


def _pruned_tiny(seed: int) -> SpeakerModel:
    """A tiny model cut to a structure with every kind of removal: a whole FFN, a layer without heads, no conv."""
    torch.manual_seed(seed)
    model = SpeakerModel.build("tiny", head="adapter_mfa")
    full = PrunedStructure.full(model.encoder.model.config)
    structure = PrunedStructure(ffn=[(0, 40), (100, 0), (8, 16), (256, 200)], heads=[0, 1, 2, 4], conv=[0, 8, 16, 64],
                                config=full.config)
    apply_structure(model.encoder.model, structure)
    return model.eval()


def _waves(seconds, seed=0):
    """Speech-like test signals: a harmonic tone with a moving pitch plus noise, one per length."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in seconds:
        t = torch.arange(int(s * 16000)) / 16000
        f0 = 120 + 30 * torch.sin(2 * torch.pi * 0.5 * t)
        phase = 2 * torch.pi * torch.cumsum(f0, 0) / 16000
        wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1 + 0.01 * torch.randn(len(t), generator=gen)
        out.append(wav)
    return out


@pytest.mark.parametrize("which", ["full", "pruned", "lora"])
def test_onnx_embeddings_match_pytorch_at_every_length(tmp_path, which):
    """cos(PyTorch, ONNX) >= 0.99999 for 1-20 s, the time axis dynamic; LoRA is merged on export and the model
    itself left unmerged."""
    if which == "pruned":
        model = _pruned_tiny(1)
    else:
        torch.manual_seed(0)
        model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
        if which == "lora":
            model.encoder.add_lora()
            torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n), std=0.02)
    onnx_model = OnnxSpeakerModel(export_onnx(model, tmp_path / "m.onnx"))
    if which == "lora":
        assert model.encoder.lora is not None
    assert onnx_model.metadata["int8"] == "false" and onnx_model.metadata["embedding_dim"] == "256"
    for wav in _waves([1.0, 3.7, 10.0, 20.0]):
        with torch.no_grad():
            a = model.embed(wav)
        b = onnx_model.embed(wav)
        assert F.cosine_similarity(a, b, dim=0) >= 0.99999, (which, wav.numel())


def test_padded_batches_give_each_utterance_its_own_embedding(tmp_path):
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    onnx_model = OnnxSpeakerModel(export_onnx(model, tmp_path / "m.onnx"))
    waves = _waves([1.0, 2.5, 1.7])
    batch = onnx_model.embed_waveforms(waves)
    single = torch.stack([onnx_model.embed(w) for w in waves])
    torch.testing.assert_close(batch, single)
    with torch.no_grad():
        expected = torch.stack([model.embed(w) for w in waves])
    assert F.cosine_similarity(batch, expected, dim=1).min() >= 0.99999


def test_int8_export_is_smaller_and_close(tmp_path):
    model = _pruned_tiny(2)
    fp32, int8 = export_onnx(model, tmp_path / "a.onnx"), export_onnx(model, tmp_path / "a8.onnx", int8=True)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    quantised = OnnxSpeakerModel(int8)
    assert quantised.metadata["int8"] == "true"
    for wav in _waves([2.0, 6.0], seed=3):
        with torch.no_grad():
            a = model.embed(wav)
        assert F.cosine_similarity(a, quantised.embed(wav), dim=0) >= 0.99


def test_export_and_embed_from_the_command_line_give_the_pytorch_scores(corpus, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "model.onnx"
    assert run(["export", "--model", str(corpus / "model"), "--out", str(out)]) == 0
    assert out.is_file() and not list(tmp_path.glob(".model.onnx.*")), "written atomically, no temporary left"
    embeddings = {}
    for backend, model in (("torch", corpus / "model"), ("onnx", out)):
        path = tmp_path / f"{backend}.safetensors"
        assert run(["embed", "--model", str(model), "--backend", backend, "--wav-scp", str(corpus / "wav.scp"),
                    "--out", str(path), "--no-progress"]) == 0
        embeddings[backend] = load_file(path)
    trials = read_trials(corpus / "trials")
    scores = {b: cosine_scores(e, trials) for b, e in embeddings.items()}
    torch.testing.assert_close(scores["onnx"], scores["torch"], atol=1e-5, rtol=0)
    assert compute_eer(scores["onnx"], trials.labels())[0] == compute_eer(scores["torch"], trials.labels())[0]
    with pytest.raises(SystemExit, match="--backend onnx: --model .* is not an .onnx file"):
        run(["embed", "--model", str(corpus / "model"), "--backend", "onnx", "--wav-scp", str(corpus / "wav.scp"),
             "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(SystemExit, match="expected a file name ending in .onnx"):
        run(["export", "--model", str(corpus / "model"), "--out", str(tmp_path / "model.bin")])


def test_a_missing_or_foreign_onnx_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx: no such ONNX file"):
        OnnxSpeakerModel(tmp_path / "nope.onnx")
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="a file written by svlib export"):
        OnnxSpeakerModel(tmp_path / "other.onnx")


@pytest.mark.parametrize("int8", [False, True])
def test_external_weights_live_in_one_data_file_beside_the_graph(tmp_path, int8):
    """The layout the full-size fp32 model needs (over protobuf's 2 GiB): forced here on the pruned tiny model. The
    data file is found by name, is part of the model's fingerprint, and a later export without it removes it."""
    model = _pruned_tiny(3)
    path = export_onnx(model, tmp_path / "m.onnx", int8=int8, external_data=True)
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size > 2 * path.stat().st_size, "the weights are in the data file, not the graph"
    assert data.stat().st_mode & 0o777 == path.stat().st_mode & 0o777 == default_file_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"], "no temporary folder left"
    onnx_model = OnnxSpeakerModel(path)
    for wav in _waves([1.5, 7.0], seed=4):
        with torch.no_grad():
            a = model.embed(wav)
        assert F.cosine_similarity(a, onnx_model.embed(wav), dim=0) >= (0.99 if int8 else 0.99999)
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in (path, data):
        f.rename(moved / f.name)
    digest = OnnxSpeakerModel(moved / "m.onnx").onnx_sha256
    assert torch.equal(digest, onnx_model.onnx_sha256)
    with open(moved / "m.onnx.data", "r+b") as f:  # one weight changed: another model, another fingerprint
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    assert not torch.equal(OnnxSpeakerModel(moved / "m.onnx").onnx_sha256, digest)
    export_onnx(model, moved / "m.onnx", int8=int8)  # small enough for one file: the old data file goes
    assert sorted(p.name for p in moved.iterdir()) == ["m.onnx"]
    assert F.cosine_similarity(OnnxSpeakerModel(moved / "m.onnx").embed(_waves([2.0])[0]),
                               onnx_model.embed(_waves([2.0])[0]), dim=0) >= 0.99999


def test_embedding_agreement_measures_each_runtime_against_pytorch(corpus, tmp_path):  # noqa: F811
    """svlib.scoring.embedding_agreement: cosine 1 for the model itself, ~1 for its ONNX export, lower for another
    model; every utterance of the lists (five of the six are in the trials) is counted once."""
    from types import SimpleNamespace

    from svlib.model import load_model
    from svlib.scoring import embedding_agreement

    model = load_model(corpus / "model").eval()
    torch.manual_seed(5)
    other = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    trial_set = SimpleNamespace(name="t", eval_dir=corpus, trials=corpus / "trials")
    onnx_model = OnnxSpeakerModel(export_onnx(model, tmp_path / "m.onnx"))
    table = embedding_agreement(model, {"itself": model, "onnx": onnx_model, "another model": other},
                                [trial_set, trial_set])
    assert list(table.index) == ["itself", "onnx", "another model"]
    assert (table["utterances"] == 5).all()
    assert table.loc["itself", "min cosine"] == pytest.approx(1.0, abs=1e-6)
    assert 0.99999 <= table.loc["onnx", "min cosine"] <= table.loc["onnx", "median cosine"] <= 1.0 + 1e-6
    assert table.loc["another model", "min cosine"] < 0.99
    assert table["shortest (s)"].iloc[0] == pytest.approx(1.0) and table["longest (s)"].iloc[0] == pytest.approx(1.3)


def test_agreement_by_length_cuts_real_audio_to_each_length(corpus, tmp_path):  # noqa: F811
    """svlib.scoring.agreement_by_length: excerpts of exactly each length, cut from the list's audio joined end to end;
    cosine ~1 for the ONNX export at every length, lower for another model; too little audio is named."""
    from svlib.data.lists import read_data_dir
    from svlib.model import load_model
    from svlib.scoring import agreement_by_length

    model = load_model(corpus / "model").eval()
    torch.manual_seed(5)
    other = SpeakerModel.build("tiny", head="adapter_mfa").eval()
    onnx_model = OnnxSpeakerModel(export_onnx(model, tmp_path / "m.onnx"))
    seen = []

    class Recorder:
        def embed(self, wav):
            seen.append(wav.shape[0])
            return onnx_model.embed(wav)

    wav_scp = read_data_dir(corpus).wav_scp
    table = agreement_by_length(model, {"onnx": Recorder(), "another model": other}, wav_scp, seconds=(0.5, 1.5),
                                excerpts=3)
    assert seen == [8000] * 3 + [24000] * 3  # 1.5 s excerpts span two utterances of about 1 s
    assert list(table.index) == [("onnx", 0.5), ("another model", 0.5), ("onnx", 1.5), ("another model", 1.5)]
    assert (table["excerpts"] == 3).all()
    assert (table.xs("onnx")["min cosine"] >= 0.99999).all()
    assert (table.xs("another model")["min cosine"] < 0.99).all()
    with pytest.raises(ValueError, match="excerpts of 20 s need 200.0 s"):
        agreement_by_length(model, {"onnx": onnx_model}, wav_scp, seconds=(20.0,), excerpts=10)


def test_time_speaker_models_pairs_every_runtime_with_the_reference(tmp_path):
    from svlib.bench.deploy import time_speaker_models

    model = _pruned_tiny(6)
    onnx_model = OnnxSpeakerModel(export_onnx(model, tmp_path / "m.onnx"))
    out = time_speaker_models({"torch": model, "onnx": onnx_model}, seconds=1.0, repeats=3, threads=1)
    assert list(out) == ["torch", "onnx"]
    assert out["torch"]["speedup_paired"]["ratios"] == [1.0, 1.0, 1.0]
    assert len(out["onnx"]["speedup_paired"]["ratios"]) == 3
    assert out["onnx"]["q1"] <= out["onnx"]["s"] <= out["onnx"]["q3"]
