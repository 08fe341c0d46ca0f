"""Expected parameter count (Eq. 8) against the numel of physically pruned models."""

import copy
import itertools
import random

import pytest
import torch

from svlib.analysis.complexity import count_parameters
from svlib.model.encoder import build_hf_encoder, encoder_config
from svlib.model.resize import build_pruned_encoder, prune_attention
from svlib.model.structure import PrunedStructure, authors_structure
from svlib.pruning import GatedW2VBertEncoder, LayerCosts, structure_params, structure_sparsity

SMALL = {"hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 40, "num_hidden_layers": 3,
         "conv_depthwise_kernel_size": 5}
"""A second small config (3 heads of 16, kernel 5) next to ``tiny`` (4 heads of 16, kernel 31)."""


def _random_structure(config, rng: random.Random) -> PrunedStructure:
    """Random unit counts, with the extremes (0 and all) drawn often."""

    def count(full: int) -> int:
        return rng.choice([0, full, rng.randint(0, full), rng.randint(1, full)])

    n = config.num_hidden_layers
    return PrunedStructure(
        ffn=[(count(config.intermediate_size), count(config.intermediate_size)) for _ in range(n)],
        heads=[count(config.num_attention_heads) for _ in range(n)],
        conv=[count(config.hidden_size) for _ in range(n)],
        config=config.to_dict(),
    )


def test_unit_costs_full_size():
    """The per-unit |g| of Eq. (8) at full size, by hand (D = 1024, d = 64, K = 31, no conv biases)."""
    with torch.device("meta"):
        layer = build_hf_encoder("w2v-bert-2.0", meta=True).encoder.layers[0]
    costs = LayerCosts.from_layer(layer)
    d_model, d_head, kernel = 1024, 64, 31
    # a removed block has no parameters: the output bias (D) is shared, kept while at least one unit is kept
    assert (costs.ffn.units, costs.ffn.per_unit, costs.ffn.shared) == (4096, 2 * d_model + 1, 2 * d_model + d_model)
    assert (costs.attention.units, costs.attention.per_unit) == (16, 4 * d_model * d_head + 3 * d_head)
    # layer norm + distance_embedding + linear_out.bias
    assert costs.attention.shared == 2 * d_model + (64 + 8 + 1) * d_head + d_model
    # pointwise_conv1 rows c and c + C (2D), depthwise kernel (K), depthwise LN (2), pointwise_conv2 column (D)
    assert (costs.conv.units, costs.conv.per_unit) == (1024, 2 * d_model + kernel + 2 + d_model)
    assert costs.conv.shared == 2 * d_model


@pytest.mark.parametrize("overrides", [{}, SMALL], ids=["tiny", "small"])
def test_hard_structures_count_exactly(overrides):
    """Eq. (8) with hard 0/1 gates equals the numel of the pruned model, for random structures with empty blocks."""
    config = encoder_config("tiny", **overrides)
    rng = random.Random(0)
    structures = [PrunedStructure.full(config)] + [_random_structure(config, rng) for _ in range(6)]
    structures.append(PrunedStructure(ffn=[(0, 0)] * config.num_hidden_layers, heads=[0] * config.num_hidden_layers,
                                      conv=[0] * config.num_hidden_layers, config=config.to_dict()))
    for structure in structures:
        pruned = build_pruned_encoder(structure)
        assert structure_params(structure) == count_parameters(pruned), structure
        assert count_parameters(build_pruned_encoder(structure, meta=True)) == count_parameters(pruned)
    teacher = build_hf_encoder("tiny", **overrides)
    assert structure_params(structures[0]) == count_parameters(teacher)
    assert structure_sparsity(structures[0]) == 0.0


AUTHORS_80_PARAMS = 124_307_464
"""Parameters of the authors' 80 % structure: 124,309,512 as svlib counted it before, less ``masked_spec_embed``
(1,024, unused: the authors' checkpoints lack it) and less ``linear_out.bias`` of layer 24's removed attention
(1,024: ``use_attention: false`` blocks have no parameters in the authors' checkpoints). Table 3: "124M"."""
FULL_PARAMS = 580_493_120 - 1_024  # the unpruned encoder without masked_spec_embed


def test_authors_structure_full_size():
    """The authors' 80 % structure at full size on the meta device: formula = numel, "124M" of Table 3."""
    structure = authors_structure()
    pruned = build_pruned_encoder(structure, meta=True)
    assert structure_params(structure) == count_parameters(pruned) == AUTHORS_80_PARAMS
    layer24 = pruned.encoder.layers[23]  # use_attention: false
    assert count_parameters(layer24.self_attn) == count_parameters(layer24.self_attn_layer_norm) == 0
    full = build_pruned_encoder(PrunedStructure.full(structure.config), meta=True)
    assert count_parameters(full) == FULL_PARAMS
    assert structure_sparsity(structure) == pytest.approx(1 - AUTHORS_80_PARAMS / FULL_PARAMS)


def test_expected_count_of_independent_gates_by_enumeration():
    """With soft keep probabilities the attention term is the expectation over all 2^H head subsets."""
    model = build_hf_encoder("tiny")
    layer = model.encoder.layers[0]
    costs = LayerCosts.from_layer(layer)
    q = torch.tensor([0.9, 0.2, 0.6, 0.05], dtype=torch.float64)
    expectation = 0.0
    for kept in itertools.product([0, 1], repeat=4):
        probability = float(torch.prod(torch.where(torch.tensor(kept) == 1, q, 1 - q)))
        pruned = copy.deepcopy(layer)
        prune_attention(pruned, [h for h in range(4) if kept[h]])
        count = count_parameters(pruned.self_attn) + count_parameters(pruned.self_attn_layer_norm)
        expectation += probability * count
    assert costs.attention.expected(q).item() == pytest.approx(expectation, rel=1e-12)


def test_gated_expected_params_is_differentiable_and_exact_for_saturated_gates():
    torch.manual_seed(0)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    assert student.teacher_params == count_parameters(build_hf_encoder("tiny"))
    student.expected_sparsity().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.log_alpha_parameters())
    # saturate the gates at random (±30 → E[L0] = 1 or ~1e-14), with some blocks entirely closed
    with torch.no_grad():
        for i, gates in enumerate(student.gates()):
            for name, gate in gates.items():
                gate.log_alpha.copy_(torch.where(torch.rand(gate.n) < 0.5, 30.0, -30.0))
                if (i + len(name)) % 3 == 0:
                    gate.log_alpha.fill_(-30.0)
    expected = student.expected_params().item()
    sparsity = student.expected_sparsity().item()
    pruned = student.eval().prune_()
    assert expected == pytest.approx(count_parameters(pruned), abs=1e-6)
    assert sparsity == pytest.approx(1 - count_parameters(pruned) / student.teacher_params, abs=1e-6)
