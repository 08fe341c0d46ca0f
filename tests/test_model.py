"""The speaker model: build, embed, score, save/load round trips and errors."""

import json

import pytest
import soundfile as sf
import torch

import svlib
from svlib.model.encoder import LoRAConfig
from svlib.model import SpeakerModel, load_model


def tiny_model(head="adapter_mfa", lora=None):
    return SpeakerModel.build("tiny", head=head, lora=lora, encoder_overrides={"conformer_conv_dropout": 0.0}).eval()


@pytest.mark.parametrize("head", ["wavg_ecapa", "mfa", "adapter_mfa"])
def test_embedding_shape_for_each_head(head, wave):
    model = tiny_model(head)
    emb = model.embed(wave)
    assert emb.shape == (256,)
    assert torch.isfinite(emb).all()


def test_batched_padded_embeddings_equal_single_ones(wave):
    model = tiny_model("adapter_mfa")
    short = wave[:9_000]
    batch = model.embed_waveforms([wave, short])
    torch.testing.assert_close(batch[0], model.embed(wave), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[1], model.embed(short), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("lora", [None, LoRAConfig(r=4, alpha=8)])
def test_save_load_round_trip(tmp_path, wave, lora):
    model = tiny_model("adapter_mfa", lora=lora)
    with torch.no_grad():  # make LoRA non-trivial so the round trip would notice lost adapters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = svlib.load_model(tmp_path / "m")
    assert loaded.config.to_dict() == model.config.to_dict()
    torch.testing.assert_close(loaded.embed(wave), model.embed(wave))


def test_embed_from_path_and_score(tmp_path, wave):
    model = tiny_model("mfa")
    path = tmp_path / "utt.wav"
    sf.write(path, wave.numpy(), 16_000, subtype="FLOAT")
    torch.testing.assert_close(model.embed(path), model.embed(wave), atol=1e-5, rtol=1e-4)
    assert model.score(path, wave) == pytest.approx(1.0, abs=1e-5)
    other = 0.1 * torch.randn(16_000)
    s = model.score(wave, other)
    assert -1.0 <= s < 0.9999


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    model = tiny_model("adapter_mfa")
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["head"]["embed_dim"] = 128  # weights no longer fit
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, RuntimeError), match="model.safetensors|size mismatch"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_head_must_match_encoder():
    from svlib.model.heads import HeadConfig

    with pytest.raises(ValueError, match="head expects 25 states"):
        SpeakerModel.build("tiny", head=HeadConfig(type="mfa"))
