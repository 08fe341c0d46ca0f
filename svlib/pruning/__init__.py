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
* :func:`~svlib.pruning.params.structure_params` and :func:`~svlib.pruning.params.structure_sparsity` — the exact
  size of a pruned structure.

What a pruned model *is* — its structure in the authors' JSON format (:class:`svlib.model.structure.PrunedStructure`)
and the resized transformers modules (:mod:`svlib.model.resize`) — belongs to the model layer, so that a pruned model
loads like any other; the measured speed-up is :func:`svlib.bench.pruning.bench_prune_speedup`.

Explained in the book chapters "Hard Concrete gates" and "Lagrangian pruning".
"""

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

__all__ = [
    "BETA",
    "GAMMA",
    "ZETA",
    "AugmentedLagrangian",
    "GatedChannelNorm",
    "GatedLinear",
    "GatedW2VBertEncoder",
    "HardConcrete",
    "LayerCosts",
    "PruningConfig",
    "distill_loss",
    "distill_loss_per_layer",
    "expected_l0",
    "expected_params",
    "pruning_param_groups",
    "structure_params",
    "structure_sparsity",
    "target_sparsity",
]
