"""The speaker model: fbank front end → w2v-BERT 2.0 encoder (Eq. 1) → speaker head (Eqs. 2–3) → embedding.

A :class:`SpeakerModel` is saved as a directory holding ``config.json`` (the encoder's transformers config, the head
config, the LoRA config if LoRA is attached) and ``model.safetensors`` (every weight). :func:`load_model` rebuilds it
from that directory alone: the original pre-trained checkpoint is not needed again.

Explained in the book chapter "Speaker-model architectures".
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Wav2Vec2BertConfig

from svlib._version import __version__
from svlib.core.atomic import atomic_write
from svlib.frontend.audio import one_waveform
from svlib.frontend.features import FeatureExtractor
from svlib.model.encoder import LoRAConfig, W2VBertEncoder, new_hf_encoder
from svlib.model.heads import HeadConfig, build_head
from svlib.model.resize import apply_structure
from svlib.model.structure import PrunedStructure

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class SpeakerModelConfig:
    """Everything needed to rebuild a :class:`SpeakerModel` without its weights."""

    encoder: dict
    """the encoder's ``Wav2Vec2BertConfig.to_dict()``."""
    head: HeadConfig
    """the speaker head (its ``num_states`` / ``hidden_size`` follow the encoder)."""
    lora: LoRAConfig | None = None
    """LoRA attached to the encoder (``None`` when absent or merged)."""

    def to_dict(self) -> dict:
        return {
            "svlib_version": __version__,
            "encoder": self.encoder,
            "head": self.head.to_dict(),
            "lora": self.lora.to_dict() if self.lora is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "SpeakerModelConfig":
        missing = {"encoder", "head"} - set(d)
        if missing:
            raise ValueError(f"{source}: speaker-model config lacks the keys {sorted(missing)}")
        lora = LoRAConfig(**d["lora"]) if d.get("lora") else None
        return cls(encoder=d["encoder"], head=HeadConfig.from_dict(d["head"]), lora=lora)


class SpeakerModel(nn.Module):
    """Encoder + head, from waveform to speaker embedding.

    Args:
        encoder: the w2v-BERT 2.0 encoder.
        head: a speaker head from :mod:`svlib.model.heads`, mapping ``(L+1, B, T, D)`` hidden states to ``(B, E)``.
    """

    def __init__(self, encoder: W2VBertEncoder, head: nn.Module):
        super().__init__()
        self.frontend = FeatureExtractor()
        self.encoder = encoder
        self.head = head

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        encoder: str | Path = "tiny",
        head: str | HeadConfig = "adapter_mfa",
        lora: LoRAConfig | None = None,
        *,
        meta: bool = False,
        encoder_overrides: dict | None = None,
        **head_kwargs,
    ) -> "SpeakerModel":
        """Build a speaker model from a named encoder config or a local checkpoint directory.

        ``head`` is a head type (``"wavg_ecapa"``, ``"mfa"``, ``"adapter_mfa"``) whose sizes follow the encoder,
        or a full :class:`~svlib.model.heads.HeadConfig`. ``meta=True`` builds without memory (for counting).
        """
        enc = W2VBertEncoder.from_name_or_path(encoder, meta=meta, **(encoder_overrides or {}))
        if isinstance(head, str):
            head = HeadConfig(type=head, num_states=enc.num_states, hidden_size=enc.hidden_size, **head_kwargs)
        elif (head.num_states, head.hidden_size) != (enc.num_states, enc.hidden_size):
            raise ValueError(
                f"head expects {head.num_states} states of width {head.hidden_size}, but the encoder gives "
                f"{enc.num_states} of width {enc.hidden_size}"
            )
        with torch.device("meta") if meta else contextlib.nullcontext():
            head_module = build_head(head)
        model = cls(enc, head_module)
        if lora is not None:
            model.encoder.add_lora(lora)
        return model

    @property
    def config(self) -> SpeakerModelConfig:
        return SpeakerModelConfig(
            encoder=self.encoder.config.to_dict(), head=self.head.config, lora=self.encoder.lora
        )

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings ``E`` (Eq. 3 for the MFA heads) of a batch of fbank features.

        Args:
            input_features: ``(B, T, 160)`` from :mod:`svlib.frontend.features`.
            attention_mask: ``(B, T)``, 1 for valid frames; ``None`` if nothing is padded.

        Returns:
            ``(B, E)`` speaker embeddings (E = 256 in the paper).
        """
        hidden_states = self.encoder(input_features, attention_mask)  # -> (L+1, B, T, D)
        mask = attention_mask.bool() if attention_mask is not None else None
        return self.head(hidden_states, mask)  # -> (B, E)

    def embed_waveforms(self, wavs: torch.Tensor | list[torch.Tensor], lengths: torch.Tensor | None = None):
        """Embeddings of 16 kHz waveforms: a list of 1-D tensors or a padded ``(B, N)`` tensor with ``lengths``."""
        device = next(self.parameters()).device
        if isinstance(wavs, torch.Tensor):
            wavs = wavs.to(device)
        else:
            wavs = [w.to(device) for w in wavs]
        features, attention_mask = self.frontend(wavs, lengths)
        return self(features, attention_mask)

    @torch.no_grad()
    def embed(self, wav_or_path: torch.Tensor | str | Path) -> torch.Tensor:
        """The ``(E,)`` embedding of one utterance: a path (read with :func:`svlib.frontend.audio.load_audio`) or a
        1-D 16 kHz waveform. Runs in eval mode and restores the previous mode."""
        wav = one_waveform(wav_or_path)
        was_training = self.training
        self.eval()
        try:
            return self.embed_waveforms([wav])[0]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def score(self, a, b) -> float:
        """Cosine score between two utterances (paths, waveforms or embeddings of shape ``(E,)``)."""
        ea = a if _is_embedding(a, self) else self.embed(a)
        eb = b if _is_embedding(b, self) else self.embed(b)
        return F.cosine_similarity(ea.float(), eb.float(), dim=0).item()

    # -- persistence ----------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` atomically (temp file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
        logger.info("saved speaker model to %s", directory)
        return directory


def _is_embedding(x, model: SpeakerModel) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 1 and x.shape[0] == model.head.output_size


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> SpeakerModel:
    """Rebuild a :class:`SpeakerModel` saved with :meth:`SpeakerModel.save`.

    The model is built on the meta device and the weights are assigned from ``model.safetensors`` (no random
    initialisation of 580M parameters); loading is strict: a missing or unexpected key is an error naming it.
    """
    path = Path(path)
    directory = path.parent if path.name == CONFIG_NAME else path
    config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: a saved speaker model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = SpeakerModelConfig.from_dict(json.loads(config_file.read_text()), source=str(config_file))
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file} is not valid JSON: {e}") from e

    hf_model = new_hf_encoder(Wav2Vec2BertConfig(**config.encoder), meta=True)
    with torch.device("meta"):
        head = build_head(config.head)
    if "intermediate_size_group" in config.encoder:
        # a pruned encoder (§2.6): its config carries the structure in the authors' keys; resize the modules to it.
        hf_model = apply_structure(hf_model.to("meta"), PrunedStructure.from_dict(config.encoder, source=str(config_file)))
    encoder = W2VBertEncoder(hf_model)
    model = SpeakerModel(encoder, head)  # the front end's filter banks are computed, not stored
    if config.lora is not None:
        model.encoder.add_lora(config.lora)

    state = load_file(str(weights_file), device=str(map_location))
    for key in [k for k in state if k.endswith("masked_spec_embed") and k not in model.state_dict()]:
        logger.info("%s: dropping %s (unused while SpecAugment is off; earlier svlib versions saved it)", weights_file, key)
        del state[key]
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights_file} does not match {config_file}: missing keys {result.missing_keys[:10]}, "
            f"unexpected keys {result.unexpected_keys[:10]}"
        )
    model.frontend.to(map_location)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors not restored from {weights_file}: {left_on_meta[:10]}")
    model.eval()
    logger.info("loaded speaker model from %s", directory)
    return model
