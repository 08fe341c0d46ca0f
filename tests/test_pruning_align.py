"""Hardware-aligned pruning: kept FFN units and conv channels rounded to a multiple of 8 or 16 (issue 14)."""

import random

import pytest
import torch

from svlib.analysis.complexity import count_parameters
from svlib.model.encoder import build_hf_encoder, encoder_config
from svlib.model.structure import PrunedStructure, align_units, authors_structure
from svlib.pruning import GatedW2VBertEncoder, LayerCosts, PruningConfig, expected_params, structure_params
from svlib.pruning.params import constant_params, structure_keep, structure_sparsity

SMALL = {"hidden_size": 48, "num_attention_heads": 3, "intermediate_size": 40, "num_hidden_layers": 3,
         "conv_depthwise_kernel_size": 5}


@pytest.mark.parametrize(
    "kept, multiple, full, aligned",
    [(0, 8, 64, 0), (1, 8, 64, 8), (3, 8, 64, 8), (4, 8, 64, 8), (11, 8, 64, 8), (12, 8, 64, 16), (13, 8, 64, 16),
     (60, 8, 64, 64), (64, 16, 64, 64), (23, 16, 4096, 16), (24, 16, 4096, 32), (203, 16, 4096, 208),
     (203, 1, 4096, 203), (7, 8, 7, 7)],
)
def test_align_units_rounds_to_the_nearest_multiple_and_never_removes_a_kept_block(kept, multiple, full, aligned):
    assert align_units(kept, multiple, full) == aligned


@pytest.mark.parametrize("kept, multiple", [(3, 0), (-1, 8), (65, 8)])
def test_align_units_rejects_bad_values(kept, multiple):
    with pytest.raises(ValueError, match="align"):
        align_units(kept, multiple, 64)


def test_aligned_authors_structure_keeps_multiples_heads_and_about_its_size():
    structure = authors_structure()
    for multiple in (8, 16):
        aligned = structure.aligned(multiple)
        assert aligned.heads == structure.heads
        assert all(n % multiple == 0 for pair in aligned.ffn for n in pair)
        assert all(c % multiple == 0 for c in aligned.conv)
        # a block is removed exactly when it was removed before
        assert [[n == 0 for n in p] for p in aligned.ffn] == [[n == 0 for n in p] for p in structure.ffn]
        assert [c == 0 for c in aligned.conv] == [c == 0 for c in structure.conv]
        assert abs(structure_sparsity(aligned) - structure_sparsity(structure)) < 0.01
    assert structure.aligned(1) == structure
    with pytest.raises(ValueError, match="align"):
        PruningConfig(align=0)


@pytest.mark.parametrize("overrides", [{}, SMALL], ids=["tiny", "small"])
@pytest.mark.parametrize("multiple", [8, 16])
def test_aligned_expected_count_is_the_aligned_structures_exact_count(overrides, multiple):
    config = encoder_config("tiny", **overrides)
    teacher = build_hf_encoder("tiny", meta=True, **overrides)
    costs = LayerCosts.from_layer(teacher.encoder.layers[0])
    constant = constant_params(teacher)
    rng = random.Random(multiple)
    for _ in range(20):
        n = config.num_hidden_layers

        def count(full: int) -> int:
            return rng.choice([0, full, rng.randint(0, full), rng.randint(1, full)])

        structure = PrunedStructure(
            ffn=[(count(config.intermediate_size), count(config.intermediate_size)) for _ in range(n)],
            heads=[count(config.num_attention_heads) for _ in range(n)],
            conv=[count(config.hidden_size) for _ in range(n)],
            config=config.to_dict(),
        )
        counted = expected_params(costs, constant, structure_keep(structure, costs), align=multiple)
        assert int(round(counted.item())) == structure_params(structure.aligned(multiple))


def test_aligned_expected_count_passes_the_unaligned_gradient_straight_through():
    torch.manual_seed(0)
    plain = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    aligned = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"), PruningConfig(align=16))
    aligned.load_state_dict(plain.state_dict())
    plain.expected_params().backward()
    aligned.expected_params().backward()
    for p, q in zip(plain.log_alpha_parameters(), aligned.log_alpha_parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # the forward value counts multiples of 16 units: it differs from Eq. (8)'s plain expectation
    assert plain.expected_params().item() != aligned.expected_params().item()


def _student_with_counts(align: int, ffn_kept: int) -> GatedW2VBertEncoder:
    """A tiny gated student whose FFN blocks keep ``ffn_kept`` units each (distinct log α), every conv channel, and
    a random number of heads."""
    torch.manual_seed(3)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"), PruningConfig(align=align))
    with torch.no_grad():
        for gates in student.gates():
            for name in ("ffn1", "ffn2"):
                gate = gates[name]
                values = torch.full((gate.n,), -20.0)
                values[torch.randperm(gate.n)[:ffn_kept]] = torch.linspace(4.0, 8.0, ffn_kept)
                # the closed units ordered too, so that rounding up has a well-defined choice
                closed = values == -20.0
                values[closed] = torch.linspace(-12.0, -15.0, int(closed.sum()))
                gate.log_alpha.copy_(values)
            gates["conv"].log_alpha.fill_(8.0)
            gates["attention"].log_alpha.normal_(0.5, 3.0)
    return student.eval()


def test_rounding_up_adds_closed_units_at_zero_so_the_pruned_model_computes_the_masked_one():
    student = _student_with_counts(align=8, ffn_kept=13)  # 13 -> 16 units per FFN
    structure = student.structure()
    assert all(pair == (16, 16) for pair in structure.ffn)
    features = torch.randn(2, 29, 160)
    with torch.no_grad():
        masked = student(features)
        strongest_closed = [
            {name: torch.sort(-g[name].log_alpha, stable=True).indices[13:16].sort().values for name in ("ffn1", "ffn2")}
            for g in student.gates()
        ]
        pruned = student.prune_().eval()
        out = pruned(features)
    assert (out - masked).abs().max().item() <= 1e-4
    for layer, added in zip(pruned.model.encoder.layers, strongest_closed):
        for name in ("ffn1", "ffn2"):
            weight = getattr(layer, name).output_dense.weight  # (D, 16): the three added units' columns are zero
            assert weight.shape[1] == 16
            assert int((weight.abs().sum(0) == 0).sum()) == 3


def test_rounding_down_drops_the_weakest_kept_units():
    student = _student_with_counts(align=8, ffn_kept=11)  # 11 -> 8 units per FFN
    gates = student.gates()
    strongest = [torch.sort(-g["ffn1"].log_alpha, stable=True).indices[:8].sort().values for g in gates]
    weights = [layer.ffn1.intermediate_dense.weight.detach().clone() for layer in student.model.encoder.layers]
    pruned = student.prune_()
    assert pruned.config.to_dict()["intermediate_size_group"] == [[8, 8]] * len(gates)
    for layer, index, weight in zip(pruned.model.encoder.layers, strongest, weights):
        torch.testing.assert_close(layer.ffn1.intermediate_dense.weight, weight[index])
    assert count_parameters(pruned) == structure_params(PrunedStructure.from_dict(pruned.config.to_dict()))
