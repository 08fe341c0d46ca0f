"""Knowledge-distillation-guided structured pruning of w2v-BERT 2.0 (paper §2.6, Eqs. 5–9, Table 3).

The pieces, one per paper equation or idea:

* :class:`~svlib.pruning.hardconcrete.HardConcrete` — Hard Concrete gates (Eqs. 6–7);
  :func:`~svlib.pruning.hardconcrete.expected_l0` — their expected L0 norm (Eq. 8);
* :class:`~svlib.pruning.gated.GatedW2VBertEncoder` — the student: transformers' ``Wav2Vec2BertModel`` with gates
  on FFN units, attention heads and conv channels, attached by module wrappers; ``expected_params()`` and
  ``expected_sparsity()`` (Eq. 8), ``extract_structure()``, ``prune_()``;
* :func:`~svlib.pruning.objective.distill_loss` (Eq. 5), :class:`~svlib.pruning.objective.AugmentedLagrangian`
  (Eq. 9), :func:`~svlib.pruning.objective.target_sparsity`, :func:`~svlib.pruning.objective.pruning_param_groups`
  — the training objective and its optimizer groups;
* :class:`~svlib.pruning.structure.PrunedStructure` — structures in the authors' JSON format;
  :func:`~svlib.pruning.prune.build_pruned_encoder` builds a pruned model from a structure alone;
  :func:`~svlib.pruning.params.structure_params` counts one exactly;
* :func:`~svlib.pruning.bench.bench_prune_speedup` — the measured CPU speed-up of a pruned encoder
  (``svlib bench prune-speedup``).

Explained in the book chapters "Hard Concrete gates" and "Lagrangian pruning".
"""

from svlib.pruning.bench import bench_prune_speedup
from svlib.pruning.config import PruningConfig
from svlib.pruning.gated import GatedChannelNorm, GatedLinear, GatedW2VBertEncoder
from svlib.pruning.hardconcrete import BETA, GAMMA, ZETA, HardConcrete, expected_l0
from svlib.pruning.objective import (
    AugmentedLagrangian,
    distill_loss,
    distill_loss_per_layer,
    pruning_param_groups,
    target_sparsity,
)
from svlib.pruning.params import LayerCosts, expected_params, structure_params, structure_sparsity
from svlib.pruning.prune import (
    EmptyBlock,
    apply_structure,
    build_pruned_encoder,
    prune_attention,
    prune_convolution,
    prune_feed_forward,
)
from svlib.pruning.structure import PrunedStructure, authors_structure, is_structure_dict, load_structure

__all__ = [
    "BETA",
    "GAMMA",
    "ZETA",
    "AugmentedLagrangian",
    "EmptyBlock",
    "GatedChannelNorm",
    "GatedLinear",
    "GatedW2VBertEncoder",
    "HardConcrete",
    "LayerCosts",
    "PrunedStructure",
    "PruningConfig",
    "apply_structure",
    "authors_structure",
    "bench_prune_speedup",
    "build_pruned_encoder",
    "distill_loss",
    "distill_loss_per_layer",
    "expected_l0",
    "expected_params",
    "is_structure_dict",
    "load_structure",
    "prune_attention",
    "prune_convolution",
    "prune_feed_forward",
    "pruning_param_groups",
    "structure_params",
    "structure_sparsity",
    "target_sparsity",
]
