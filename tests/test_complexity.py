"""Table 2/3 structure columns: parameters and MACs at full size, counted on the meta device."""

import json

import pytest
import torch
from torch import nn

from svlib.cli import main
from svlib.analysis.complexity import PAPER_PARAMS_M, PAPER_TABLE3_FULL, count_macs, table2_complexity


@pytest.fixture(scope="module")
def rows():
    return {r.model: r for r in table2_complexity()}


def test_exact_parameter_counts(rows):
    assert {r.encoder_params for r in rows.values()} == {580_492_096}  # without masked_spec_embed
    assert rows["ECAPA-TDNN"].head_params == 8_807_385
    assert rows["MFA"].head_params == 65_564_928
    assert rows["Adapter_MFA"].head_params == 6_160_640
    assert rows["LoRA_Adapter_MFA"].lora_params == 6_291_456
    assert rows["LoRA_Adapter_MFA"].head_params == 6_160_640


@pytest.mark.parametrize("name", list(PAPER_PARAMS_M))
def test_params_within_one_percent_of_table2(rows, name):
    enc_m, extra_m = PAPER_PARAMS_M[name]
    assert rows[name].encoder_params / 1e6 == pytest.approx(enc_m, rel=0.01)
    assert rows[name].extra_params / 1e6 == pytest.approx(extra_m, rel=0.01)


def test_macs_and_flops_within_one_percent_of_table3(rows):
    r = rows["LoRA_Adapter_MFA"]
    assert r.frames == 49
    assert r.macs / 1e9 == pytest.approx(PAPER_TABLE3_FULL["macs_g"], rel=0.01)
    assert r.flops / 1e9 == pytest.approx(PAPER_TABLE3_FULL["flops_g"], rel=0.01)
    # the unmerged LoRA branch costs r·(d_in + d_out) MACs per frame and adapted linear
    assert r.lora_macs == 49 * 24 * 2 * 64 * (1024 + 1024)


def test_mac_counter_against_hand_count():
    lin, conv = nn.Linear(30, 20), nn.Conv1d(8, 8, 5, groups=8)
    assert count_macs(lin, torch.zeros(7, 30)) == 7 * 30 * 20
    assert count_macs(conv, torch.zeros(1, 8, 50)) == 46 * 8 * 5  # depthwise: one 5-tap filter per channel


def test_cli_params_json(capsys):
    assert main(["params", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [v["model"] for v in out["variants"]]
    assert names == ["ECAPA-TDNN", "MFA", "Adapter_MFA", "LoRA_Adapter_MFA"]
    assert out["variants"][3]["params_label"] == "580+12.5M"


def test_one_variant_counts_as_in_the_full_table(rows):
    (one,) = table2_complexity(variants=["LoRA_Adapter_MFA"])
    assert one == rows["LoRA_Adapter_MFA"]
    with pytest.raises(ValueError, match="unknown Table 2 variants"):
        table2_complexity(variants=["LoRA"])
