"""Loading checkpoints in the authors' key layout (written here from a tiny svlib model) gives the same model."""

import re

import pytest
import torch

from svlib.model.encoder import LoRAConfig
from svlib.model import SpeakerModel
from svlib.scoring.authors import load_authors_checkpoint, map_authors_key, unwrap_state_dict

OVERRIDES = {"conformer_conv_dropout": 0.0}

# svlib key -> authors' key: the inverse of AUTHORS_KEY_MAP, written independently.
INVERSE = [
    (r"encoder\.model\.(.+)", r"front.encoder.\1"),
    (r"head\.adapters\.(\d+)\.linear1\.(.+)", r"adapter_layers.\1.0.\2"),
    (r"head\.adapters\.(\d+)\.norm\.(.+)", r"adapter_layers.\1.1.\2"),
    (r"head\.adapters\.(\d+)\.linear2\.(.+)", r"adapter_layers.\1.3.\2"),
    (r"head\.pooling\.conv1\.(.+)", r"pooling.attention.0.\1"),
    (r"head\.pooling\.norm\.(.+)", r"pooling.attention.2.\1"),
    (r"head\.pooling\.conv2\.(.+)", r"pooling.attention.3.\1"),
    (r"head\.fc\.(.+)", r"bottleneck.\1"),
]


def to_authors_layout(model: SpeakerModel) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        for pattern, repl in INVERSE:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value.clone()
                break
        else:
            raise AssertionError(f"no inverse rule for {key}")
    for key in ("front.encoder.masked_spec_embed", "front.encoder.base_model.model.masked_spec_embed"):
        out.pop(key, None)  # the authors delete it
    return out


def perturbed_tiny(lora=None, **overrides):
    torch.manual_seed(0)
    model = SpeakerModel.build("tiny", head="adapter_mfa", lora=lora, encoder_overrides={**OVERRIDES, **overrides})
    with torch.no_grad():  # non-trivial LoRA and BatchNorm statistics, so a lost weight would show
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        model.head.pooling.norm.running_mean.normal_(0, 0.1)
        model.head.pooling.norm.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def wave():
    return 0.1 * torch.randn(16_000, generator=torch.Generator().manual_seed(3))


def test_key_map_examples():
    assert map_authors_key("front.encoder.encoder.layers.3.self_attn.linear_q.weight") == (
        "encoder.model.encoder.layers.3.self_attn.linear_q.weight"
    )
    peft_key = "base_model.model.encoder.layers.0.self_attn.linear_v.lora_A.default.weight"
    assert map_authors_key(f"front.encoder.{peft_key}") == f"encoder.model.{peft_key}"
    assert map_authors_key("adapter_layers.24.3.bias") == "head.adapters.24.linear2.bias"
    assert map_authors_key("pooling.attention.2.running_var") == "head.pooling.norm.running_var"
    assert map_authors_key("bottleneck.weight") == "head.fc.weight"
    assert map_authors_key("adapter_layers.0.2.weight") is None  # ReLU has no weights


@pytest.mark.parametrize("wrap", ["authors", "model", "state_dict", "ddp", "bare"])
def test_unwrap_state_dict(wrap):
    state = {"bottleneck.weight": torch.zeros(2, 3), "bottleneck.bias": torch.zeros(2)}
    ckpt = {
        "authors": {"modules": {"spk_model": state, "classifier": {"weight": torch.zeros(3, 2)}}, "epoch": 3},
        "model": {"model": state, "step": 10},
        "state_dict": {"state_dict": state},
        "ddp": {"modules": {"spk_model": {f"module.{k}": v for k, v in state.items()}}},
        "bare": state,
    }[wrap]
    assert unwrap_state_dict(ckpt).keys() == state.keys()


def test_round_trip_gives_same_embeddings(tmp_path, wave):
    model = perturbed_tiny(mask_time_prob=0.05)  # the released config's switch: transformers makes masked_spec_embed
    ckpt = {"modules": {"spk_model": to_authors_layout(model), "classifier": {"weight": torch.zeros(3, 256)}}}
    torch.save(ckpt, tmp_path / "model_x.pth")
    overrides = {**OVERRIDES, "mask_time_prob": 0.05}
    loaded = load_authors_checkpoint(tmp_path / "model_x.pth", "tiny", encoder_overrides=overrides)
    assert not loaded.training and loaded.encoder.lora is None
    assert set(loaded.state_dict()) == set(model.state_dict())  # loaded strictly: no masked_spec_embed on either side
    torch.testing.assert_close(loaded.embed(wave), model.embed(wave), atol=1e-6, rtol=1e-5)


def test_lora_checkpoint_is_detected_and_merged(tmp_path, wave):
    overrides = {**OVERRIDES, "mask_time_prob": 0.05}
    model = perturbed_tiny(lora=LoRAConfig(r=4, alpha=8), mask_time_prob=0.05)
    torch.save({"modules": {"spk_model": to_authors_layout(model)}}, tmp_path / "lora.pth")
    expected = model.embed(wave)
    loaded = load_authors_checkpoint(tmp_path / "lora.pth", "tiny", lora_alpha=8, encoder_overrides=overrides)
    assert loaded.encoder.lora == LoRAConfig(r=4, alpha=8)
    merged = load_authors_checkpoint(
        tmp_path / "lora.pth", "tiny", lora_alpha=8, merge_lora=True, encoder_overrides=overrides
    )
    assert merged.encoder.lora is None
    torch.testing.assert_close(merged.embed(wave), expected, atol=1e-5, rtol=1e-4)


def test_strict_errors(tmp_path):
    state = to_authors_layout(perturbed_tiny())

    def load(s):
        torch.save({"modules": {"spk_model": s}}, tmp_path / "bad.pth")
        return load_authors_checkpoint(tmp_path / "bad.pth", "tiny")

    with pytest.raises(ValueError, match=r"match no rule.*front\.something_else"):
        load({**state, "front.something_else": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"absent from the checkpoint.*head\.fc\.bias"):
        load({k: v for k, v in state.items() if k != "bottleneck.bias"})
    with pytest.raises(ValueError, match=r"shape mismatch.*head\.fc\.bias: checkpoint \(7,\)"):
        load({**state, "bottleneck.bias": torch.zeros(7)})
    with pytest.raises(ValueError, match="no 'spk_model'"):
        unwrap_state_dict({"modules": {"classifier": {}}})
    with pytest.raises(FileNotFoundError, match="not found"):
        load_authors_checkpoint(tmp_path / "missing.pth", "tiny")
