"""The w2v-BERT 2.0 encoder (paper §2.1, Eq. 1) and LoRA on its attention (paper §2.5, Eq. 4).

The encoder *is* transformers' :class:`~transformers.Wav2Vec2BertModel`; svlib never vendors a copy. This module
only decides where the model comes from and what it returns:

* a **named config** shipped with svlib — ``"w2v-bert-2.0"`` (the full 580M model, random weights) or ``"tiny"``
  (the same architecture at CPU size, for the ``demo`` profile);
* a **local checkpoint directory** (``config.json`` + weights, e.g. a download of ``facebook/w2v-bert-2.0``), loaded
  offline with ``from_pretrained(path, local_files_only=True)``.

:class:`W2VBertEncoder` wraps the HF model and returns the ``L + 1`` hidden states ``[h_0, …, h_L]`` of Eq. (1),
stacked as one tensor ``(L+1, B, T, D)``. LoRA (Eq. 4) is added with peft on ``linear_q`` / ``linear_v`` of every
layer and merged with ``merge_and_unload`` before joint fine-tuning.

Explained in the book chapters "Features and the w2v-BERT 2.0 encoder" and "LoRA".
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

from svlib.model.attention import use_lookup_position_bias

logger = logging.getLogger(__name__)

NAMED_CONFIGS = ("w2v-bert-2.0", "tiny")
"""Encoder configs shipped with svlib (``svlib/configs/<name>.json``)."""

LORA_TARGETS = ("linear_q", "linear_v")
"""The attention projections LoRA adapts in the paper (§2.5: "query and value weights")."""


# ----------------------------------------------------------------------------------------------------------------
# Building the encoder
# ----------------------------------------------------------------------------------------------------------------
def _is_checkpoint_dir(name_or_path: str | Path) -> bool:
    return Path(name_or_path).is_dir()


def encoder_config(name_or_path: str | Path, **overrides) -> Wav2Vec2BertConfig:
    """The ``Wav2Vec2BertConfig`` of a named config, a checkpoint directory or a ``config.json`` file.

    ``overrides`` replace config fields (e.g. ``layerdrop=0.0``); an unknown field is an error.
    """
    name = str(name_or_path)
    if name in NAMED_CONFIGS:
        text = resources.files("svlib").joinpath(f"configs/{name}.json").read_text()
        config = Wav2Vec2BertConfig(**json.loads(text))
    elif _is_checkpoint_dir(name):
        if not (Path(name) / "config.json").is_file():
            raise FileNotFoundError(f"encoder checkpoint directory {name!r} has no config.json")
        config = Wav2Vec2BertConfig.from_pretrained(name, local_files_only=True)
    elif Path(name).is_file():
        config = Wav2Vec2BertConfig(**json.loads(Path(name).read_text()))
    else:
        raise ValueError(
            f"encoder {name!r} is neither a named config {NAMED_CONFIGS} nor an existing checkpoint directory or "
            "config.json file. Weights cannot be downloaded here: pass the local directory of a w2v-bert-2.0 "
            "checkpoint (config.json + model.safetensors)."
        )
    return _apply_overrides(config, overrides)


def _apply_overrides(config: Wav2Vec2BertConfig, overrides: dict) -> Wav2Vec2BertConfig:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"encoder override {key!r} is not a Wav2Vec2BertConfig field")
        setattr(config, key, value)
    return config


def build_hf_encoder(name_or_path: str | Path, *, meta: bool = False, **overrides) -> Wav2Vec2BertModel:
    """Build transformers' ``Wav2Vec2BertModel``.

    A checkpoint directory with weights loads them offline; a named config (or a directory without weights)
    builds a randomly initialised model. ``meta=True`` builds on the meta device (no memory, no weights): the
    way svlib counts parameters and MACs of the full model in seconds.

    LayerDrop is switched off (``layerdrop=0.0``) unless ``overrides`` sets it: the released w2v-bert-2.0 config has
    0.1, which in training mode skips whole layers at random. The MFA heads read every layer's output, the pruning
    teacher and student must compare the same layers (Eq. 5), and DDP needs every parameter used in each step.
    """
    overrides = {"layerdrop": 0.0, **overrides}
    config = encoder_config(name_or_path, **overrides)
    has_weights = _is_checkpoint_dir(name_or_path) and any(
        (Path(name_or_path) / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    )
    if meta:
        return new_hf_encoder(config, meta=True)
    if has_weights:
        logger.info("loading w2v-BERT 2.0 weights from %s", name_or_path)
        model = Wav2Vec2BertModel.from_pretrained(str(name_or_path), config=config, local_files_only=True)
        # the released checkpoint holds masked_spec_embed
        return use_lookup_position_bias(drop_spec_augment_embedding(model))
    logger.info("building a randomly initialised w2v-BERT encoder from config %r", str(name_or_path))
    return new_hf_encoder(config)


def new_hf_encoder(config: Wav2Vec2BertConfig, *, meta: bool = False) -> Wav2Vec2BertModel:
    """A ``Wav2Vec2BertModel`` built from ``config`` (random weights, or on the meta device), without the
    parameters speaker verification never uses (:func:`drop_spec_augment_embedding`) and with the looked-up relative
    position bias (:func:`~svlib.model.attention.use_lookup_position_bias`)."""
    if not meta:
        return use_lookup_position_bias(drop_spec_augment_embedding(Wav2Vec2BertModel(config)))
    with torch.device("meta"):
        model = Wav2Vec2BertModel(config)
    # masked_spec_embed is created with torch.Tensor(), which ignores the default device
    return use_lookup_position_bias(drop_spec_augment_embedding(model).to("meta"))


def drop_spec_augment_embedding(model: Wav2Vec2BertModel) -> Wav2Vec2BertModel:
    """Delete ``masked_spec_embed`` when SpecAugment is off (``apply_spec_augment: false``); return ``model``.

    The released config has ``mask_time_prob: 0.05`` (so transformers creates the 1,024-value embedding that
    SpecAugment writes into masked frames during pre-training) but ``apply_spec_augment: false``, so the forward pass
    never reads it. Left in place, it becomes trainable when the encoder is unfrozen and never receives a gradient,
    and DDP (``find_unused_parameters=False``) stops at the second step ("Expected to have finished reduction in the
    prior iteration"). WeSpeaker deletes it before fine-tuning, and the authors' checkpoints do not have it.
    """
    if not model.config.apply_spec_augment and getattr(model, "masked_spec_embed", None) is not None:
        del model.masked_spec_embed
    return model


# ----------------------------------------------------------------------------------------------------------------
# LoRA (Eq. 4)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class LoRAConfig:
    """LoRA on the self-attention projections (paper §2.5, Eq. 4; §3.2: r = 64, α = 128)."""

    r: int = 64
    """rank r of the update; A is (d × r), B is (r × k) in the paper's notation."""
    alpha: float = 128.0
    """scaling α; the update is scaled by α / r."""
    dropout: float = 0.0
    """dropout on the LoRA branch input (the paper uses none)."""
    target_modules: tuple[str, ...] = field(default=LORA_TARGETS)
    """module names adapted in every Conformer layer."""

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"LoRAConfig.r must be a positive integer, got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRAConfig.alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules = tuple(self.target_modules)

    def to_dict(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def lora_param_count(config: Wav2Vec2BertConfig, lora: LoRAConfig) -> int:
    """Closed-form LoRA parameter count: per adapted (d_in → d_out) linear, r·(d_in + d_out) (Eq. 4's A and B)."""
    d = config.hidden_size
    return config.num_hidden_layers * len(lora.target_modules) * lora.r * (d + d)


# ----------------------------------------------------------------------------------------------------------------
# The encoder module
# ----------------------------------------------------------------------------------------------------------------
class W2VBertEncoder(nn.Module):
    """w2v-BERT 2.0 returning the hidden states ``[h_0, …, h_L]`` of Eq. (1).

    ``h_0`` is the output of the feature projection (LayerNorm(160) → Linear(160 → D)) and ``h_1 … h_L`` the
    outputs of the L Conformer layers: 25 states of width 1024 for the full model.

    Args:
        model: a transformers ``Wav2Vec2BertModel``.
    """

    def __init__(self, model: Wav2Vec2BertModel):
        super().__init__()
        self.model = use_lookup_position_bias(model)
        self.lora: LoRAConfig | None = None

    @classmethod
    def from_name_or_path(cls, name_or_path: str | Path, *, meta: bool = False, **overrides) -> "W2VBertEncoder":
        return cls(build_hf_encoder(name_or_path, meta=meta, **overrides))

    # -- properties --------------------------------------------------------------------------------------------
    @property
    def hf_model(self) -> Wav2Vec2BertModel:
        """The bare transformers model (under the peft wrapper while LoRA is attached)."""
        return self.model.get_base_model() if self.lora is not None else self.model

    @property
    def config(self) -> Wav2Vec2BertConfig:
        return self.hf_model.config

    @property
    def num_states(self) -> int:
        """L + 1: the number of hidden states the heads receive (25 for w2v-BERT 2.0)."""
        return self.config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (1): the stacked hidden states.

        Args:
            input_features: ``(B, T, 160)`` stacked fbank features from :mod:`svlib.frontend.features`.
            attention_mask: ``(B, T)``, 1 for valid frames, 0 for padding; ``None`` if nothing is padded.

        Returns:
            ``(L+1, B, T, D)`` tensor of hidden states ``h_0 … h_L``.
        """
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.feature_projection_input_dim:
            raise ValueError(
                "expected input_features of shape (batch, frames, "
                f"{self.config.feature_projection_input_dim}), found {tuple(input_features.shape)}"
            )
        out = self.model(input_features=input_features, attention_mask=attention_mask, output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=0)  # -> (L+1, B, T, D)

    # -- training switches ---------------------------------------------------------------------------------------
    def freeze(self, frozen: bool = True) -> "W2VBertEncoder":
        """Freeze (or unfreeze) the pre-trained weights; LoRA weights, if attached, stay trainable."""
        for name, p in self.model.named_parameters():
            p.requires_grad_(not frozen or "lora_" in name)
        return self

    def gradient_checkpointing(self, enable: bool = True) -> "W2VBertEncoder":
        """Recompute each Conformer layer in the backward pass (memory for compute) — HF's own switch."""
        if enable:
            self.hf_model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.hf_model.activation_checkpointing_disable()
        return self

    # -- LoRA (Eq. 4) --------------------------------------------------------------------------------------------
    def add_lora(self, lora: LoRAConfig | None = None) -> "W2VBertEncoder":
        """Attach LoRA (Eq. 4) with peft to ``linear_q`` / ``linear_v`` of every layer.

        peft stores ``lora_A`` (r × d_in) and ``lora_B`` (d_out × r) and adds ``(α/r)·lora_B·lora_A`` to the
        frozen weight: the paper's ``A·B`` transposed (its W is d × k). ``lora_B`` starts at zero, so the model
        is unchanged until training. Only LoRA weights are trainable afterwards (the PTM is frozen, stage 1).
        """
        import peft  # lazy: a required dependency, but its import takes about a second and only LoRA needs it

        if self.lora is not None:
            raise RuntimeError("LoRA is already attached to this encoder; merge it first")
        lora = lora or LoRAConfig()
        peft_config = peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
        )
        with warnings.catch_warnings():  # peft calls transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = peft.get_peft_model(self.model, peft_config)
        self.lora = lora
        return self

    def merge_lora(self) -> "W2VBertEncoder":
        """Fold LoRA into the weights, ``W' = W + (α/r)·A·B`` (Eq. 4), and drop the adapters (before stage 2)."""
        if self.lora is None:
            raise RuntimeError("no LoRA adapters are attached to this encoder")
        self.model = self.model.merge_and_unload()
        self.lora = None
        return self

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if "lora_" in n]
