"""Parameter, MAC and FLOP counts of the speaker models: the "Params" column of Table 2 and the "Params", "MACs"
and "FLOPs" columns of Table 3.

Everything is counted at full size on the **meta device**: the 580M-parameter encoder is built without memory or
weights, and torch's :class:`~torch.utils.flop_counter.FlopCounterMode` counts the matrix products and
convolutions of one forward pass from the tensor shapes alone, in seconds.

What the counts cover, so they can be compared with the paper:

* parameters: the encoder (``Wav2Vec2BertModel`` without the unused ``masked_spec_embed``, see
  :func:`svlib.model.encoder.drop_spec_augment_embedding`), the head, and LoRA separately;
  the ArcFace class weights are a training loss, not part of the model;
* MACs: one forward pass over ``seconds`` of 16 kHz audio (49 model frames for 1 s), encoder + head, counted by
  ``FlopCounterMode`` (matrix products, convolutions incl. depthwise, attention ``bmm``/``einsum``; element-wise
  operations, norms and softmax are not counted). FLOPs = 2 × MACs. The fbank front end is not counted.

Explained in the book chapters "Features and the w2v-BERT 2.0 encoder" and "Speaker-model architectures".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from svlib.analysis.tables import paper_reference, paper_value
from svlib.frontend.features import frames_for_samples
from svlib.model import SpeakerModel
from svlib.model.encoder import LoRAConfig, W2VBertEncoder
from svlib.model.heads import HeadConfig, build_head
from svlib.model.resize import build_pruned_encoder

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

TABLE2_VARIANTS: dict[str, dict] = {
    "ECAPA-TDNN": {"head": "wavg_ecapa", "lora": False},
    "MFA": {"head": "mfa", "lora": False},
    "Adapter_MFA": {"head": "adapter_mfa", "lora": False},
    "LoRA_Adapter_MFA": {"head": "adapter_mfa", "lora": True},
}
"""The model variants of Table 2 (§3.2), by the head type and whether LoRA (r=64, α=128) is attached."""

def _params_m(label: str) -> tuple[float, float]:
    """``"580+8.8M"`` → ``(580.0, 8.8)``: a params cell of the paper (encoder + head [+ LoRA], millions)."""
    encoder, extra = label.rstrip("M").split("+")
    return float(encoder), float(extra)


def _paper_numbers() -> tuple[dict, dict, dict]:
    """Table 2's params column and Table 3's size rows, read from the reference CSV by explicit keys."""
    ref = paper_reference()
    table2 = ref[(ref["table"] == 2) & (ref["variant"] == "freeze PTM") & (ref["train_data"] == "VoxCeleb2")]
    params = {system: _params_m(table2[table2["system"] == system]["params"].iloc[0]) for system in TABLE2_VARIANTS}
    table3 = []
    for record in ("LoRA_Adapter_MFA", "LoRA_Adapter_MFA-pruned80"):
        value = {m: paper_value(ref, table=3, record=record, metric=m)
                 for m in ("sparsity", "params_encoder", "params_head", "macs", "flops")}
        table3.append({"sparsity": value["sparsity"] / 100, "params_m": (value["params_encoder"], value["params_head"]),
                       "macs_g": value["macs"], "flops_g": value["flops"]})
    return params, table3[0], table3[1]


PAPER_PARAMS_M, PAPER_TABLE3_FULL, PAPER_TABLE3_PRUNED = _paper_numbers()
PAPER_PARAMS_M: dict[str, tuple[float, float]]
"""Table 2's "Params" column, (encoder, head [+ LoRA]) in millions, as printed in the paper (read from the
reference CSV, ``results/paper_reference.csv``)."""
PAPER_TABLE3_FULL: dict
"""Table 3, LoRA_Adapter_MFA at 0 % sparsity, 1-s segments: ``sparsity``, ``params_m``, ``macs_g``, ``flops_g``
(from the reference CSV)."""
PAPER_TABLE3_PRUNED: dict
"""Table 3, the pruned model at ≈ 80 % sparsity, 1-s segments (from the reference CSV)."""


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(fn, *args) -> int:
    """Multiply-accumulates of ``fn(*args)`` counted by ``FlopCounterMode`` (its FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


@dataclass
class Complexity:
    """Size and cost of one speaker-model variant for ``seconds`` of audio."""

    model: str
    head: str
    encoder_params: int
    head_params: int
    lora_params: int
    seconds: float
    frames: int
    encoder_macs: int
    head_macs: int
    lora_macs: int
    """extra MACs while LoRA is attached unmerged (training); zero after merging."""

    @property
    def extra_params(self) -> int:
        """The "+x M" of Table 2: head + LoRA."""
        return self.head_params + self.lora_params

    @property
    def macs(self) -> int:
        """Inference MACs (encoder + head; LoRA merged, so it costs nothing)."""
        return self.encoder_macs + self.head_macs

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def params_label(self) -> str:
        """Table 2's notation, e.g. ``580+6.2M``."""
        return f"{self.encoder_params / 1e6:.0f}+{self.extra_params / 1e6:.1f}M"

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "extra_params": self.extra_params,
            "macs": self.macs,
            "flops": self.flops,
            "params_label": self.params_label,
        }


@torch.no_grad()
def model_complexity(model: SpeakerModel, name: str = "", seconds: float = 1.0) -> Complexity:
    """Count parameters and MACs of ``model`` for ``seconds`` of audio (build it with ``meta=True`` for full size)."""
    model.eval()
    frames = frames_for_samples(int(round(seconds * SAMPLE_RATE)))
    device = next(model.encoder.parameters()).device
    features = torch.zeros(1, frames, model.encoder.config.feature_projection_input_dim, device=device)

    lora_macs = 0
    if model.encoder.lora is not None:
        with_lora = count_macs(model.encoder, features)
        with model.encoder.model.disable_adapter():
            encoder_macs = count_macs(model.encoder, features)
        lora_macs = with_lora - encoder_macs
    else:
        encoder_macs = count_macs(model.encoder, features)
    hidden_states = model.encoder(features)  # -> (L+1, 1, T, D)
    head_macs = count_macs(model.head, hidden_states, None)

    lora_params = sum(p.numel() for p in model.encoder.lora_parameters())
    encoder_params = count_parameters(model.encoder) - lora_params
    return Complexity(
        model=name,
        head=model.head.config.type,
        encoder_params=encoder_params,
        head_params=count_parameters(model.head),
        lora_params=lora_params,
        seconds=seconds,
        frames=frames,
        encoder_macs=encoder_macs,
        head_macs=head_macs,
        lora_macs=lora_macs,
    )


def table2_complexity(encoder: str = "w2v-bert-2.0", seconds: float = 1.0, lora: LoRAConfig | None = None,
                      variants: list[str] | None = None):
    """:class:`Complexity` of the Table 2 variants (default: all, in table order; else those named in ``variants``),
    built at full size on the meta device."""
    unknown = sorted(set(variants or ()) - set(TABLE2_VARIANTS))
    if unknown:
        raise ValueError(f"unknown Table 2 variants {unknown}: expected some of {list(TABLE2_VARIANTS)}")
    rows = []
    for name, variant in TABLE2_VARIANTS.items():
        if variants is not None and name not in variants:
            continue
        model = SpeakerModel.build(
            encoder, head=variant["head"], lora=(lora or LoRAConfig()) if variant["lora"] else None, meta=True
        )
        rows.append(model_complexity(model, name, seconds))
        logger.info("counted %s: %s", name, rows[-1].params_label)
    return rows


def encoder_parameter_breakdown(encoder: nn.Module) -> dict[str, int]:
    """Parameters of a ``Wav2Vec2BertModel`` grouped by module kind, summed over layers.

    Groups: the feature projection, the two macaron FFNs, self-attention (incl. the relative position
    embedding), the convolution module, the layer norms around them, and ``masked_spec_embed`` (only in a bare
    transformers model: svlib's encoder drops it). Groups without parameters are left out.
    """
    groups = {
        "feature_projection": "feature_projection.",
        "ffn1 + ffn2": (".ffn1.", ".ffn2."),
        "self_attn": ".self_attn.",
        "conv_module": ".conv_module.",
        "layer norms": ("_layer_norm.", ".final_layer_norm."),
        "masked_spec_embed": "masked_spec_embed",
    }
    counts = dict.fromkeys(groups, 0)
    for name, p in encoder.named_parameters():
        dotted = "." + name
        for group, keys in groups.items():
            if any(k in dotted for k in ((keys,) if isinstance(keys, str) else keys)):
                counts[group] += p.numel()
                break
        else:
            raise ValueError(f"parameter {name!r} belongs to no group of the breakdown")
    return {group: n for group, n in counts.items() if n}


def structure_complexity(structure=None, seconds: float = 1.0, head: str = "adapter_mfa") -> Complexity:
    """:class:`Complexity` of a pruned encoder + head, built at full size on the meta device (Table 3's pruned row).

    Args:
        structure: a pruned structure (:class:`~svlib.model.structure.PrunedStructure`, a dict or a JSON file in
            the authors' format); ``None`` for the authors' 80 % structure shipped with svlib.
        seconds: audio length the MACs are counted for.
        head: the speaker head type whose parameters and MACs are added (Table 3: ``"adapter_mfa"``).

    Returns:
        The counts; ``model`` is ``"pruned"``.
    """
    encoder = W2VBertEncoder(build_pruned_encoder(structure, meta=True))
    with torch.device("meta"):
        head_module = build_head(HeadConfig(type=head, num_states=encoder.num_states, hidden_size=encoder.hidden_size))
    return model_complexity(SpeakerModel(encoder, head_module), name="pruned", seconds=seconds)
