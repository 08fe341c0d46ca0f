"""Pruned structures: how many units of each block a pruned w2v-BERT 2.0 keeps, in the authors' JSON format.

The authors (ZXHY-82/w2v-BERT-2.0_SV) store a pruned structure *inside* the full transformers config dict of the
unpruned model, with five extra keys, one entry per Conformer layer:

* ``intermediate_size_group``: ``[ffn1_units, ffn2_units]`` kept in the two macaron FFNs;
* ``use_feed_forward``: ``[ffn1_used, ffn2_used]``;
* ``num_attention_heads_group``: attention heads kept;
* ``use_attention``: whether the attention block is used;
* ``conv_group``: ``[channels_in, channels_kept]`` of the convolution module (GLU output channels);

plus the Hard Concrete constants of the run that found the structure, ``limit_l`` (γ), ``limit_r`` (ζ),
``temperature`` (β) and ``prune`` (:attr:`PrunedStructure.gates`; :mod:`svlib.pruning` fills them in).
:class:`PrunedStructure` reads and writes that format (the config keys are kept as they are, so a structure file
also describes the unpruned teacher). A block with zero units is "not used" and, as in the authors' checkpoints,
has no parameters at all, its output bias and layer norm included (see :mod:`svlib.model.resize`); so ``use_*`` is
simply ``units > 0``.

svlib ships the authors' 80 % structure as package data (:func:`authors_structure`).

**Hardware alignment** (beyond the paper): a matrix multiplication whose inner size is a multiple of 8 or 16 runs on
the fast paths of CPU and GPU kernels (vector widths, tensor-core tiles); the 19, 37 or 203 units a Hard Concrete
mask keeps do not. :func:`align_units` and :meth:`PrunedStructure.aligned` round each block's kept FFN units and
conv channels to such a multiple; heads are left as they are (a head is already ``d_head`` = 64 columns wide).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from transformers import Wav2Vec2BertConfig

from svlib.core.atomic import atomic_write

logger = logging.getLogger(__name__)

STRUCTURE_KEYS = (
    "intermediate_size_group",
    "use_feed_forward",
    "conv_group",
    "num_attention_heads_group",
    "use_attention",
)
"""The per-layer keys of the authors' structure format."""
GATE_KEYS = ("limit_l", "limit_r", "temperature", "prune")
"""The Hard Concrete keys the authors store next to the structure."""
AUTHORS_STRUCTURE_RESOURCE = "configs/authors_pruned_structure_0.8.json"
"""Package-data path (inside ``svlib``) of the authors' final 80 % structure."""


def align_units(kept: int, multiple: int, full: int) -> int:
    """A block's kept units rounded to the nearest multiple of ``multiple`` (halves up), within ``[multiple, full]``.

    A removed block (0 units) stays removed; a kept block keeps at least one multiple, so rounding never removes a
    block the gates kept. ``multiple = 1`` returns ``kept``.

    Args:
        kept: units kept by the gates.
        multiple: the alignment, e.g. 8 or 16.
        full: units of the unpruned block (the result never exceeds it).

    Returns:
        The aligned count.
    """
    if multiple < 1:
        raise ValueError(f"align: the multiple must be a positive integer, got {multiple!r}")
    if not 0 <= kept <= full:
        raise ValueError(f"align: {kept} units kept of {full}")
    if kept == 0 or multiple == 1:
        return kept
    return min(full, max(multiple, multiple * ((2 * kept + multiple) // (2 * multiple))))


def is_structure_dict(d: dict) -> bool:
    """Whether a config dict carries a pruned structure (all of :data:`STRUCTURE_KEYS`).

    Args:
        d: a config dict, e.g. a ``Wav2Vec2BertConfig.to_dict()`` or a loaded structure file.

    Returns:
        ``True`` if every structure key is present.
    """
    return all(k in d for k in STRUCTURE_KEYS)


@dataclass
class PrunedStructure:
    """Units kept per Conformer layer, and the config of the unpruned model they come from.

    Args:
        ffn: per layer ``(ffn1_units, ffn2_units)``: intermediate units kept in the two macaron FFNs.
        heads: per layer, attention heads kept.
        conv: per layer, convolution-module channels kept (GLU output channels).
        config: the unpruned ``Wav2Vec2BertConfig`` as a dict (structure keys, if any, are ignored).
        gates: the Hard Concrete settings the structure was found with (:data:`GATE_KEYS`, e.g. ``{"limit_l": -0.1,
            "limit_r": 1.1, "temperature": 2/3, "prune": False}``), written next to it; empty when unknown. Not
            part of the comparison of two structures.
    """

    ffn: list[tuple[int, int]]
    heads: list[int]
    conv: list[int]
    config: dict
    gates: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        config = {k: v for k, v in self.config.items() if k not in STRUCTURE_KEYS + GATE_KEYS}
        self.config = json.loads(json.dumps(config))  # a private copy, in the form it takes in a JSON file
        unknown = sorted(set(self.gates) - set(GATE_KEYS))
        if unknown:
            raise ValueError(f"PrunedStructure.gates: unknown keys {unknown}; expected some of {list(GATE_KEYS)}")
        self.gates = dict(self.gates)
        self.ffn = [tuple(int(n) for n in pair) for pair in self.ffn]
        self.heads = [int(h) for h in self.heads]
        self.conv = [int(c) for c in self.conv]
        cfg = self.hf_config()
        layers = cfg.num_hidden_layers
        for name, values in (("ffn", self.ffn), ("heads", self.heads), ("conv", self.conv)):
            if len(values) != layers:
                raise ValueError(f"PrunedStructure.{name} has {len(values)} layers; the config has {layers}")
        for i, ((f1, f2), h, c) in enumerate(zip(self.ffn, self.heads, self.conv)):
            for name, n, full in (
                ("ffn1 units", f1, cfg.intermediate_size),
                ("ffn2 units", f2, cfg.intermediate_size),
                ("attention heads", h, cfg.num_attention_heads),
                ("conv channels", c, cfg.hidden_size),
            ):
                if not 0 <= n <= full:
                    raise ValueError(f"layer {i}: {n} {name} kept; expected 0 … {full}")

    # -- sizes -------------------------------------------------------------------------------------------------------
    def hf_config(self) -> Wav2Vec2BertConfig:
        """The unpruned model's ``Wav2Vec2BertConfig``."""
        return Wav2Vec2BertConfig(**self.config)

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def kept_fractions(self, per_layer: bool = False) -> dict:
        """The fraction of units kept, by kind: ``"FFN 1 units"``, ``"FFN 2 units"``, ``"attention heads"``,
        ``"conv channels"``, and ``"FFN units"`` (both FFNs together).

        Args:
            per_layer: one fraction per Conformer layer (lists) instead of one over all layers.

        Returns:
            ``{kind: fraction}`` or ``{kind: [fraction per layer]}``.
        """
        cfg = self.hf_config()
        kept = {
            "FFN 1 units": ([f1 for f1, _ in self.ffn], cfg.intermediate_size),
            "FFN 2 units": ([f2 for _, f2 in self.ffn], cfg.intermediate_size),
            "FFN units": ([f1 + f2 for f1, f2 in self.ffn], 2 * cfg.intermediate_size),
            "attention heads": (self.heads, cfg.num_attention_heads),
            "conv channels": (self.conv, cfg.hidden_size),
        }
        if per_layer:
            return {kind: [n / full for n in counts] for kind, (counts, full) in kept.items()}
        return {kind: sum(counts) / (full * self.num_layers) for kind, (counts, full) in kept.items()}

    @classmethod
    def full(cls, config: Wav2Vec2BertConfig | dict) -> "PrunedStructure":
        """The unpruned structure of ``config`` (every unit kept).

        Args:
            config: a ``Wav2Vec2BertConfig`` or its dict.

        Returns:
            A structure keeping all units.
        """
        d = config.to_dict() if isinstance(config, Wav2Vec2BertConfig) else dict(config)
        cfg = Wav2Vec2BertConfig(**{k: v for k, v in d.items() if k not in STRUCTURE_KEYS + GATE_KEYS})
        n = cfg.num_hidden_layers
        return cls(
            ffn=[(cfg.intermediate_size, cfg.intermediate_size)] * n,
            heads=[cfg.num_attention_heads] * n,
            conv=[cfg.hidden_size] * n,
            config=d,
        )

    def aligned(self, multiple: int) -> "PrunedStructure":
        """This structure with every block's kept FFN units and conv channels rounded by :func:`align_units`.

        Args:
            multiple: the alignment (8 or 16 for CPU and GPU kernels; 1 returns an equal structure).

        Returns:
            A new structure (same config and gate settings); heads unchanged.
        """
        cfg = self.hf_config()
        inter, channels = cfg.intermediate_size, cfg.hidden_size
        return PrunedStructure(
            ffn=[(align_units(f1, multiple, inter), align_units(f2, multiple, inter)) for f1, f2 in self.ffn],
            heads=list(self.heads),
            conv=[align_units(c, multiple, channels) for c in self.conv],
            config=self.config,
            gates=self.gates,
        )

    # -- the authors' format ---------------------------------------------------------------------------------------
    def structure_dict(self) -> dict:
        """Only the five per-layer structure keys of the authors' format."""
        channels = self.hf_config().hidden_size
        return {
            "intermediate_size_group": [list(pair) for pair in self.ffn],
            "use_feed_forward": [[f1 > 0, f2 > 0] for f1, f2 in self.ffn],
            "conv_group": [[channels, c] for c in self.conv],
            "num_attention_heads_group": list(self.heads),
            "use_attention": [h > 0 for h in self.heads],
        }

    def to_dict(self) -> dict:
        """The authors' format: the unpruned config dict + the Hard Concrete constants (:attr:`gates`) + the
        structure keys."""
        return {**self.config, **self.gates, **self.structure_dict()}

    @classmethod
    def from_dict(cls, d: dict, source: str = "structure") -> "PrunedStructure":
        """Read the authors' format.

        ``use_attention`` / ``use_feed_forward`` ``False`` with a non-zero unit count is contradictory and rejected;
        ``True`` with zero units means an empty block.

        Args:
            d: the dict (a full config with the structure keys).
            source: name of where ``d`` came from, for error messages.

        Returns:
            The structure.
        """
        missing = [k for k in STRUCTURE_KEYS if k not in d]
        if missing:
            raise ValueError(f"{source}: not a pruned structure, missing keys {missing} (authors' format expected)")
        ffn, heads, conv = d["intermediate_size_group"], d["num_attention_heads_group"], d["conv_group"]
        lengths = {len(ffn), len(heads), len(conv), len(d["use_attention"]), len(d["use_feed_forward"])}
        if len(lengths) != 1:
            raise ValueError(f"{source}: the structure keys {STRUCTURE_KEYS} have different numbers of layers")
        hidden = Wav2Vec2BertConfig(**{k: v for k, v in d.items() if k not in STRUCTURE_KEYS + GATE_KEYS}).hidden_size
        for i in range(len(heads)):
            if len(ffn[i]) != 2 or len(d["use_feed_forward"][i]) != 2 or len(conv[i]) != 2:
                raise ValueError(
                    f"{source}: layer {i} needs pairs in intermediate_size_group, use_feed_forward and conv_group"
                )
            if conv[i][0] != hidden:
                raise ValueError(f"{source}: layer {i} conv_group {conv[i]} should start with hidden_size {hidden}")
            for used, n, name in (
                (d["use_attention"][i], heads[i], "use_attention"),
                (d["use_feed_forward"][i][0], ffn[i][0], "use_feed_forward[0]"),
                (d["use_feed_forward"][i][1], ffn[i][1], "use_feed_forward[1]"),
            ):
                if not used and n > 0:
                    raise ValueError(f"{source}: layer {i} has {name} false but keeps {n} units")
        return cls(ffn=[tuple(p) for p in ffn], heads=list(heads), conv=[c[1] for c in conv], config=dict(d),
                   gates={k: d[k] for k in GATE_KEYS if k in d})

    def save(self, path: str | Path) -> Path:
        """Write the authors' format as JSON, atomically.

        Args:
            path: the JSON file.

        Returns:
            ``path``.
        """
        text = json.dumps(self.to_dict(), indent=2)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))

    @classmethod
    def load(cls, path: str | Path) -> "PrunedStructure":
        """Read a structure JSON file (the authors' format).

        Args:
            path: the JSON file.

        Returns:
            The structure.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pruned-structure file {path} does not exist")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d, source=str(path))


def authors_structure() -> PrunedStructure:
    """The authors' final ≈80 % structure of w2v-BERT 2.0 (shipped with svlib as package data).

    Returns:
        The structure of ``svlib/configs/authors_pruned_structure_0.8.json``.
    """
    text = resources.files("svlib").joinpath(AUTHORS_STRUCTURE_RESOURCE).read_text()
    return PrunedStructure.from_dict(json.loads(text), source=f"svlib/{AUTHORS_STRUCTURE_RESOURCE}")


def load_structure(structure: "PrunedStructure | dict | str | Path | None") -> PrunedStructure:
    """Accept a structure in any of its forms.

    Args:
        structure: a :class:`PrunedStructure`, a dict in the authors' format, a JSON file path, or ``None`` for
            :func:`authors_structure`.

    Returns:
        The structure.
    """
    if structure is None:
        return authors_structure()
    if isinstance(structure, PrunedStructure):
        return structure
    if isinstance(structure, dict):
        return PrunedStructure.from_dict(structure)
    return PrunedStructure.load(structure)
