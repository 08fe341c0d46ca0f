"""Pruned structures in the authors' JSON format: loading, round trips, validation, package data."""

import json
import re
import tomllib
from pathlib import Path

import pytest

from svlib.pruning.config import PruningConfig
import torch

from svlib.model.encoder import build_hf_encoder, encoder_config
from svlib.model.structure import PrunedStructure, authors_structure, is_structure_dict
from svlib.pruning import GatedW2VBertEncoder
from svlib.model.structure import STRUCTURE_KEYS

ROOT = Path(__file__).resolve().parents[1]
AUTHORS_FILE = Path("/work/shared/reference/authors_pruned_structure_0.8.json")


def test_authors_structure_loads():
    structure = authors_structure()
    assert structure.num_layers == 24
    assert structure.ffn[0] == (1662, 1916) and structure.conv[0] == 812 and structure.heads[0] == 13
    assert structure.heads[23] == 0
    assert structure.hf_config().hidden_size == 1024


def test_kept_fractions_count_units_against_the_unpruned_config():
    full = PrunedStructure.full(authors_structure().config)
    assert full.kept_fractions() == dict.fromkeys(full.kept_fractions(), 1.0)
    structure = authors_structure()
    fractions = structure.kept_fractions()
    # counted here from the per-layer lists, independently of the method
    assert fractions["attention heads"] == sum(structure.heads) / (16 * 24)
    assert fractions["conv channels"] == sum(structure.conv) / (1024 * 24)
    assert fractions["FFN units"] == sum(a + b for a, b in structure.ffn) / (2 * 4096 * 24)
    per_layer = structure.kept_fractions(per_layer=True)
    assert per_layer["FFN 1 units"][0] == 1662 / 4096 and per_layer["conv channels"][0] == 812 / 1024
    assert per_layer["attention heads"][23] == 0.0
    assert all(len(v) == 24 for v in per_layer.values())


@pytest.mark.skipif(not AUTHORS_FILE.is_file(), reason="the shared reference copy is not present")
def test_shared_reference_file_loads_and_equals_the_packaged_copy():
    from_file = PrunedStructure.load(AUTHORS_FILE)
    assert from_file == authors_structure()
    original = json.loads(AUTHORS_FILE.read_text())
    ours = from_file.to_dict()
    assert set(ours) == set(original)
    for key in STRUCTURE_KEYS:
        assert ours[key] == original[key], key


def test_package_data_glob_ships_the_structure():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["svlib"]
    path = "configs/authors_pruned_structure_0.8.json"
    assert (ROOT / "svlib" / path).is_file()
    assert any(re.fullmatch(g.replace(".", r"\.").replace("*", "[^/]*"), path) for g in globs)


def test_save_load_round_trip(tmp_path):
    structure = PrunedStructure(ffn=[(3, 0), (256, 17), (1, 1), (0, 0)], heads=[0, 4, 1, 2], conv=[64, 0, 5, 9],
                                config=encoder_config("tiny").to_dict(), gates=PruningConfig().gate_settings())
    path = structure.save(tmp_path / "sub" / "structure.json")
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporary file
    loaded = PrunedStructure.load(path)
    assert loaded == structure
    d = json.loads(path.read_text())
    assert is_structure_dict(d)
    assert d["use_attention"] == [False, True, True, True]
    assert d["use_feed_forward"][0] == [True, False] and d["conv_group"][1] == [64, 0]
    assert d["limit_l"] == -0.1 and d["limit_r"] == 1.1 and d["temperature"] == pytest.approx(2 / 3)
    assert loaded.gates == structure.gates
    bare = PrunedStructure(ffn=structure.ffn, heads=structure.heads, conv=structure.conv, config=structure.config)
    assert "limit_l" not in bare.to_dict() and bare == structure  # the gate settings are written only when known


def test_extract_structure_from_gated_student():
    torch.manual_seed(0)
    student = GatedW2VBertEncoder.from_encoder(build_hf_encoder("tiny"))
    with torch.no_grad():
        student.gates()[2]["attention"].log_alpha.fill_(-9.0)
    d = student.eval().extract_structure()
    structure = PrunedStructure.from_dict(d)
    assert structure.heads[2] == 0 and d["use_attention"][2] is False
    counts = [{k: int((m > 0).sum()) for k, m in layer.items()} for layer in student.deterministic_masks()]
    assert structure.heads == [c["attention"] for c in counts]
    assert structure.conv == [c["conv"] for c in counts]


def test_invalid_structures_are_rejected(tmp_path):
    config = encoder_config("tiny").to_dict()
    good = PrunedStructure.full(config).to_dict()
    with pytest.raises(ValueError, match="attention heads"):
        PrunedStructure(ffn=[(1, 1)] * 4, heads=[5, 1, 1, 1], conv=[1] * 4, config=config)
    with pytest.raises(ValueError, match="layers"):
        PrunedStructure(ffn=[(1, 1)] * 3, heads=[1] * 3, conv=[1] * 3, config=config)
    with pytest.raises(ValueError, match="use_attention false"):
        PrunedStructure.from_dict({**good, "use_attention": [False, True, True, True]})
    with pytest.raises(ValueError, match="missing keys"):
        PrunedStructure.from_dict(config)
    with pytest.raises(FileNotFoundError):
        PrunedStructure.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        PrunedStructure.load(tmp_path / "bad.json")
