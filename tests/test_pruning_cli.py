"""``svlib params --structure`` (Table 3's pruned row), ``svlib bench prune-speedup`` and ``svlib bench deploy``."""

import copy
import json

import pytest
import torch

from svlib.bench.pruning import pruned_copy
from svlib.bench.timing import paired_ratio
from svlib.cli import main
from svlib.analysis.complexity import PAPER_TABLE3_PRUNED, structure_complexity
from svlib.model.encoder import encoder_config, new_hf_encoder
from svlib.model.resize import apply_structure
from svlib.model.structure import PrunedStructure
from svlib.model.structure import AUTHORS_STRUCTURE_RESOURCE
from test_pruning_params import AUTHORS_80_PARAMS
from svlib.pruning import structure_params


def test_structure_complexity_matches_table3():
    r = structure_complexity()  # the authors' 80 % structure, Adapter-MFA head, 1 s
    assert r.frames == 49
    assert r.encoder_params == AUTHORS_80_PARAMS and r.head_params == 6_160_640
    assert r.params_label == "124+6.2M"
    assert r.macs / 1e9 == pytest.approx(PAPER_TABLE3_PRUNED["macs_g"], rel=0.01)
    assert r.flops / 1e9 == pytest.approx(PAPER_TABLE3_PRUNED["flops_g"], rel=0.01)
    assert r.encoder_macs / 1e9 == pytest.approx(6.13, abs=0.02)  # RECIPE: bare encoder, FlopCounterMode


def test_cli_params_structure_json(capsys):
    import svlib

    path = svlib.__path__[0] + "/" + AUTHORS_STRUCTURE_RESOURCE
    assert main(["params", "--structure", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["encoder_params"] == AUTHORS_80_PARAMS and out["params_label"] == "124+6.2M"
    assert out["sparsity"] == pytest.approx(0.786, abs=1e-3)
    assert out["paper_table3_pruned"]["macs_g"] == 6.31


def test_cli_params_structure_table(tmp_path, capsys):
    structure = PrunedStructure(ffn=[(8, 0)] * 4, heads=[1, 0, 2, 4], conv=[8] * 4, config=encoder_config("tiny").to_dict())
    path = structure.save(tmp_path / "tiny_structure.json")
    assert main(["params", "--structure", str(path)]) == 0
    text = capsys.readouterr().out
    assert "svlib" in text and "paper" in text and "124+6.2M" in text and "6.31" in text


def test_cli_params_structure_missing_file(tmp_path, capsys):
    assert main(["params", "--structure", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_bench_prune_speedup_small_structure(tmp_path, capsys):
    config = encoder_config("tiny").to_dict()
    structure = PrunedStructure(ffn=[(64, 32), (0, 8), (16, 16), (4, 0)], heads=[1, 0, 2, 4], conv=[8, 16, 0, 64],
                                config=config)
    path = structure.save(tmp_path / "tiny_structure.json")
    assert main(["bench", "prune-speedup", "--structure", str(path), "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["structure"] == str(path)
    assert [r["seconds"] for r in out["rows"]] == [1.0, 4.0]
    assert all(r["mac_ratio"] > 1 and r["full_s"] > 0 and r["pruned_s"] > 0 for r in out["rows"])
    assert all(len(r["speedup_paired"]["ratios"]) == 1 for r in out["rows"])
    assert out["pruned_params"] < out["full_params"]


def test_paired_ratio_divides_the_runs_of_each_round():
    times = {"a": {"times": [2.0, 4.0, 9.0]}, "b": {"times": [1.0, 1.0, 3.0]}}
    r = paired_ratio(times, "a", "b")
    assert r["ratios"] == [2.0, 4.0, 3.0] and r["median"] == 3.0 and (r["min"], r["max"]) == (2.0, 4.0)
    assert (r["q1"], r["q3"]) == (2.5, 3.5)  # the interquartile range of the per-round ratios
    with pytest.raises(ValueError):
        paired_ratio({"a": {"times": [1.0]}, "b": {"times": [1.0, 2.0]}}, "a", "b")


def test_cli_bench_prune_speedup_at_the_lengths_asked_for(tmp_path, capsys):
    """--lengths: the MACs grow faster than the length (relative-position attention is quadratic in frames)."""
    config = encoder_config("tiny").to_dict()
    structure = PrunedStructure(ffn=[(64, 32), (0, 8), (16, 16), (4, 0)], heads=[1, 0, 2, 4], conv=[8, 16, 0, 64],
                                config=config)
    path = structure.save(tmp_path / "tiny_structure.json")
    assert main(["bench", "prune-speedup", "--structure", str(path), "--repeats", "2", "--lengths", "1", "10"]) == 0
    text = capsys.readouterr().out
    assert "1 s: full" in text and "10 s: full" in text and "IQR" in text
    assert main(["bench", "prune-speedup", "--structure", str(path), "--repeats", "1", "--lengths", "1", "10",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["seconds"] for r in rows] == [1.0, 10.0]
    per_frame = [r["full_gmacs"] / r["frames"] for r in rows]
    assert per_frame[1] > 1.01 * per_frame[0], "MACs per frame grow with the length (attention)"


def test_cli_bench_prune_speedup_times_aligned_variants_beside_the_pruned_one(tmp_path, capsys):
    config = encoder_config("tiny").to_dict()
    structure = PrunedStructure(ffn=[(61, 30), (0, 3), (16, 13), (4, 0)], heads=[1, 0, 2, 4], conv=[9, 20, 0, 64],
                                config=config)
    path = structure.save(tmp_path / "tiny_structure.json")
    assert main(["bench", "prune-speedup", "--structure", str(path), "--repeats", "2", "--lengths", "1",
                 "--align", "8", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variant_params"] == {"pruned": structure_params(structure),
                                     "aligned 8": structure_params(structure.aligned(8)),
                                     "aligned 16": structure_params(structure.aligned(16))}
    (row,) = out["rows"]
    assert list(row["variants"]) == ["pruned", "aligned 8", "aligned 16"]
    assert all(len(v["speedup_paired"]["ratios"]) == 2 and v["mac_ratio"] > 1 for v in row["variants"].values())
    assert row["variants"]["pruned"]["mac_ratio"] == row["mac_ratio"]
    assert main(["bench", "prune-speedup", "--structure", str(path), "--repeats", "1", "--lengths", "1",
                 "--align", "8"]) == 0
    assert "aligned 8:" in capsys.readouterr().out


def test_cli_bench_deploy_times_six_variants_and_counts_their_macs(tmp_path, capsys):
    """{full, pruned} x {torch fp32, onnx fp32, onnx int8} on the tiny config: every variant timed at every length,
    the full torch model's paired speed-up over itself exactly 1, MACs as svlib counts them for Table 3."""
    config = encoder_config("tiny").to_dict()
    structure = PrunedStructure(ffn=[(61, 30), (0, 3), (16, 13), (4, 0)], heads=[1, 0, 2, 4], conv=[9, 20, 0, 64],
                                config=config)
    path = structure.save(tmp_path / "tiny_structure.json")
    assert main(["bench", "deploy", "--encoder", "tiny", "--structure", str(path), "--repeats", "2", "--lengths",
                 "1", "3", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["seconds"] for r in out["rows"]] == [1, 3] and out["threads"] == 1
    assert set(out["onnx_bytes"]) == {"full onnx fp32", "full onnx int8", "pruned onnx fp32", "pruned onnx int8"}
    assert out["onnx_bytes"]["pruned onnx fp32"] < out["onnx_bytes"]["full onnx fp32"]
    for row in out["rows"]:
        assert list(row["variants"]) == [f"{m} {b}" for m in ("full", "pruned")
                                         for b in ("torch fp32", "onnx fp32", "onnx int8")]
        assert row["variants"]["full torch fp32"]["speedup_paired"]["ratios"] == [1.0, 1.0]
        for v in row["variants"].values():
            assert v["q1"] <= v["s"] <= v["q3"] and v["s_per_audio_s"] == pytest.approx(v["s"] / row["seconds"])
        assert row["pruned_gmacs"] * 1e9 == structure_complexity(path, seconds=row["seconds"]).macs
        assert row["mac_ratio"] == pytest.approx(row["full_gmacs"] / row["pruned_gmacs"])
    assert out["rows"][1]["full_gmacs"] > 2.5 * out["rows"][0]["full_gmacs"]
    assert main(["bench", "deploy", "--encoder", "tiny", "--structure", str(path), "--repeats", "1", "--lengths",
                 "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "pruned onnx int8" in text and "s per audio s" in text and "MAC ratio" in text
    assert main(["bench", "deploy", "--encoder", "tiny", "--repeats", "1"]) != 0
    assert "encoder 'tiny': give a structure" in capsys.readouterr().err


def test_pruned_copy_is_the_resized_deep_copy_and_leaves_the_model_alone():
    """bench_prune_speedup's variants share the full model's tensors instead of deep-copying them first: same pruned
    model as apply_structure on a deep copy, and the full model keeps its shapes and weights."""
    structure = PrunedStructure(ffn=[(64, 32), (0, 8), (16, 16), (4, 0)], heads=[1, 0, 2, 4], conv=[8, 16, 0, 64],
                                config=encoder_config("tiny").to_dict())
    torch.manual_seed(0)
    full = new_hf_encoder(structure.hf_config()).eval()
    before = {k: v.clone() for k, v in full.state_dict().items()}
    shared = pruned_copy(full, structure).eval()
    copied = apply_structure(copy.deepcopy(full), structure).eval()
    after = full.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 37, structure.hf_config().feature_projection_input_dim)
    with torch.no_grad():
        a, b, c = (m(input_features=x).last_hidden_state for m in (shared, copied, full))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sum(p.numel() for p in shared.parameters()) == structure_params(structure)
