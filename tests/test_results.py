"""svlib.core.results: records written atomically with their provenance, read back as a table; and the paper's numbers in
results/paper_reference.csv checked against the paper's own table lines (a typo in the CSV fails here)."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from svlib import __version__
from svlib.core.paths import default_data_root, default_results_dir, expand_env, home
from svlib.core.results import load_results, record_result
from svlib.analysis.tables import paper_reference

ROOT = Path(__file__).resolve().parents[1]
PAPER = Path("/work/shared/paper/w2v-bert-sv-paper.txt")


# ------------------------------------------------------------------------------------------------ the results store
def test_record_and_load_round_trip(tmp_path):
    config = {"lr": 1e-4, "head": "adapter_mfa", "nested": {"b": 2, "a": 1}}
    metrics = {"cosine": {"eer_percent": np.float64(1.5), "min_dcf_0.01": torch.tensor(0.25)},
               "asnorm+qmf": {"eer_percent": 1.25, "n_trials": np.int64(892)}}
    path = record_result(tmp_path, kind="eval", name="MFA.demo.s1_freeze.demo", metrics=metrics, profile="demo",
                         config=config, extra={"note": Path("x")})
    assert path == tmp_path / "demo" / "eval" / "MFA.demo.s1_freeze.demo.json"
    record = json.loads(path.read_text())
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    assert record["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert record["config"] == config and record["extra"] == {"note": "x"}
    assert record["svlib_version"] == __version__ and record["profile"] == "demo"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["date"])
    assert record["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", record["git_commit"])
    assert isinstance(record["git_dirty"], bool) == (record["git_commit"] is not None)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temporary file left behind"

    yaml_file = tmp_path / "s1.yaml"
    yaml_file.write_bytes(b"epochs: 15\n")
    record_result(tmp_path, kind="complexity", name="MFA", metrics={"macs": 28_750_000_000, "params_label": "580+6.2M"},
                  profile="paper", config=yaml_file)
    df = load_results(tmp_path)
    assert list(df["profile"]) == ["demo", "paper"]
    demo, paper = df.iloc[0], df.iloc[1]
    assert demo["cosine.eer_percent"] == 1.5 and demo["cosine.min_dcf_0.01"] == 0.25
    assert demo["asnorm+qmf.n_trials"] == 892 and np.isnan(paper["cosine.eer_percent"])
    assert paper["config_sha256"] == hashlib.sha256(b"epochs: 15\n").hexdigest()
    assert paper["config_path"] == str(yaml_file) and paper["macs"] == 28_750_000_000


def test_rerun_replaces_the_record(tmp_path):
    for eer in (2.0, 1.0):
        record_result(tmp_path, kind="eval", name="a", metrics={"eer_percent": eer}, profile="demo")
    df = load_results(tmp_path)
    assert len(df) == 1 and df["eer_percent"].iloc[0] == 1.0


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"name='a/b'"):
        record_result(tmp_path, kind="eval", name="a/b", metrics={}, profile="demo")
    with pytest.raises(ValueError, match=r"metrics\['eer'\] is nan"):
        record_result(tmp_path, kind="eval", name="a", metrics={"eer": float("nan")}, profile="demo")
    with pytest.raises(ValueError, match=r"metrics\['x'\] is a list"):
        record_result(tmp_path, kind="eval", name="a", metrics={"x": [1, 2]}, profile="demo")
    with pytest.raises(ValueError, match=r"clash with metadata"):
        record_result(tmp_path, kind="eval", name="a", metrics={"profile": 1}, profile="demo")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        record_result(tmp_path, kind="eval", name="a", metrics={}, profile="demo", config=tmp_path / "missing.yaml")
    assert load_results(tmp_path).empty
    (tmp_path / "demo" / "eval").mkdir(parents=True)
    (tmp_path / "demo" / "eval" / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a results record"):
        load_results(tmp_path)


def test_default_roots(monkeypatch, tmp_path):
    """Runs write where told, else under the per-user workspace: never into the checkout or the installed package."""
    for var in ("SVLIB_RESULTS", "SVLIB_HOME", "SVLIB_DATA", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert home() == tmp_path / "user" / ".local" / "share" / "svlib"
    assert default_results_dir() == home() / "records" and default_data_root() == home() / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert home() == tmp_path / "xdg" / "svlib"
    monkeypatch.setenv("SVLIB_HOME", str(tmp_path / "work"))
    assert default_results_dir() == tmp_path / "work" / "records" and default_data_root() == tmp_path / "work" / "data"
    monkeypatch.setenv("SVLIB_RESULTS", str(tmp_path / "store"))
    monkeypatch.setenv("SVLIB_DATA", str(tmp_path / "corpora"))
    assert default_results_dir() == tmp_path / "store" and default_data_root() == tmp_path / "corpora"
    assert expand_env({"a": "${SVLIB_HOME}/exp/x", "b": {"c": "${SVLIB_DATA}/demo"}}, "test") == {
        "a": f"{tmp_path}/work/exp/x", "b": {"c": f"{tmp_path}/corpora/demo"}}
    monkeypatch.delenv("SVLIB_NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ValueError, match="SVLIB_NOT_SET_ANYWHERE"):
        expand_env({"k": "x/${SVLIB_NOT_SET_ANYWHERE}/y"}, "test")


# ---------------------------------------------------------------------------------------- the paper's numbers
def _table_lines(title: str) -> list[str]:
    """The lines of a table of the paper text, from its header line to the first blank line after it."""
    lines = PAPER.read_text(encoding="utf8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = lines[start + 2:]  # the caption, then a blank line
    return body[: body.index("")]


def _number(cell: str) -> str | None:
    """The number of a printed cell ('0.17*', '6.78 [‡]', '0.49%', '28.75G'), None for '-'."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)", cell)
    return m.group(1) if m else None


needs_paper = pytest.mark.skipif(not PAPER.is_file(), reason=f"paper text {PAPER} not available")


@pytest.fixture(scope="module")
def reference():
    return paper_reference()


def _csv_numbers(df, table, columns):
    rows = df[(df["table"] == table) & (df["source"] == f"paper Table {table}")]
    return sorted(tuple(r[c] for c in columns) + (f"{r['value']:g}",) for _, r in rows.iterrows())


@needs_paper
def test_table1_matches_the_paper_text(reference):
    tests = ["Vox1-O", "Vox1-O", "Vox1-E", "Vox1-E", "Vox1-H", "Vox1-H", "CN-Celeb", "CN-Celeb"]
    marks = {"×": "no", "✓": "yes"}
    parsed, frontend, system, params = [], None, None, None
    for line in _table_lines("Table 1:")[2:]:  # two header lines
        cells = line.split("\t")
        assert len(cells) == 13, f"unexpected Table 1 line {line!r}"
        frontend, system, params = cells[0] or frontend, cells[1] or system, cells[2] or params
        for i, cell in enumerate(cells[5:]):
            if _number(cell) is not None:
                metric = "eer" if i % 2 == 0 else "min_dcf"
                parsed.append((frontend, system, params, marks[cells[3]], marks[cells[4]], tests[i], metric,
                               f"{float(_number(cell)):g}"))
    assert len(parsed) == 86
    columns = ["frontend", "system", "params", "lmft", "calibration", "test_set", "metric"]
    assert _csv_numbers(reference, 1, columns) == sorted(parsed)


@needs_paper
def test_table1_training_data_follows_the_marks(reference):
    rows = reference[(reference["table"] == 1) & (reference["source"] == "paper Table 1")]
    lines = {f"{c[0]}|{c[1]}" for c in (line.split("\t") for line in _table_lines("Table 1:")[2:])}
    assert "w2v-BERT 2.0|LoRA_Adapter_MFA" in lines
    cn = rows[rows["test_set"] == "CN-Celeb"]
    assert set(cn["train_data"]) == {"CN-Celeb1&2"}  # every printed CN-Celeb number carries ‡
    starred = rows[rows["system"].isin(["ResNet293 [3]", "LoRA_Adapter_MFA"]) & (rows["test_set"] != "CN-Celeb")]
    assert set(starred["train_data"]) == {"VoxCeleb2 & VoxBlink2"} and len(starred) == 24


@needs_paper
def test_table2_matches_the_paper_text(reference):
    data_labels = {"VoxCeleb2": "VoxCeleb2", "VoxCeleb2 & VoxBlink2": "VoxCeleb2 & VoxBlink2",
                   "CnCeleb1 &2": "CN-Celeb1&2"}
    parsed, system, data, params, test = [], None, None, None, "Vox1-O"
    for line in _table_lines("Table 2:")[1:]:  # the header line
        cells = line.split("\t")
        if cells[0] == "CN-Celeb Test EER":
            test = "CN-Celeb"
            continue
        label = cells[0]
        if label.endswith("(freeze PTM)"):
            system, label = label[: -len("(freeze PTM)")], "freeze PTM"
        data, params = data_labels[cells[1]] if cells[1] else data, cells[2] or params
        parsed.append((system, label, data, params, test, f"{float(_number(cells[3])):g}"))
    assert len(parsed) == 24
    assert _csv_numbers(reference, 2, ["system", "variant", "train_data", "params", "test_set"]) == sorted(parsed)


@needs_paper
def test_table3_matches_the_paper_text(reference):
    """The text extraction of Table 3 interleaves its two rows, so compare the printed numbers by unit."""
    text = "\n".join(_table_lines("Table 3:")[1:])
    rows = reference[(reference["table"] == 3) & (reference["source"] == "paper Table 3")]
    by_metric = {m: sorted(f"{v:g}" for v in rows[rows["metric"] == m]["value"]) for m in set(rows["metric"])}
    giga = sorted({f"{float(x):g}" for x in re.findall(r"(\d+\.\d+)G", text)})
    assert sorted(by_metric["macs"] + by_metric["flops"]) == giga
    eers = [f"{float(x):g}" for x in re.findall(r"(\d+\.\d+)%", text)]
    ordered = rows[rows["metric"] == "eer"].sort_values(["params", "lmft"], ascending=[False, True])
    assert [f"{v:g}" for v in ordered["value"]] == eers == ["0.23", "0.14", "0.35", "0.18"]
    params = sorted({f"{a}+{b}" for a, b in re.findall(r"(\d+)\+(\d+\.\d+)M", text)})
    csv_params = sorted({f"{r['params']}" for _, r in rows.iterrows()})
    assert [p + "M" for p in params] == csv_params
    assert re.search(r"\t0%\t580\+6\.2M\t", text) and re.search(r"\t≈ 80%\t124\+6\.2M\t", text)
    for record, sparsity, encoder in (("LoRA_Adapter_MFA", 0, 580), ("LoRA_Adapter_MFA-pruned80", 80, 124)):
        sizes = rows[rows["record"] == record].set_index("metric")["value"]
        assert (sizes["sparsity"], sizes["params_encoder"], sizes["params_head"]) == (sparsity, encoder, 6.2)


def test_reference_spot_checks_and_companions(reference):
    def value(**where):
        rows = reference
        for k, v in where.items():
            rows = rows[rows[k] == v]
        assert len(rows) == 1, where
        return rows["value"].item()

    rec = "LoRA_Adapter_MFA.vox2+vb2.s3_lmft.vox1-h"
    assert value(table=1, record=rec, metric="eer", calibration="yes") == 0.55  # the abstract's 0.55 %
    assert value(table=1, record=rec, metric="eer", calibration="no") == 0.73
    assert value(table=1, system="ResNet293 [3]", test_set="Vox1-O", metric="eer") == 0.17
    assert value(table=1, record="LoRA_Adapter_MFA.cnceleb.s2_joint.cnceleb", metric="min_dcf") == 0.297
    assert value(table=2, record="MFA.vox2.s1_freeze.vox1-o") == 0.46
    assert value(table=3, record="LoRA_Adapter_MFA-pruned80", metric="flops") == 12.75
    wespeaker = reference[reference["source"].str.startswith("WeSpeaker reproduction")]
    assert sorted(wespeaker["value"]) == [0.25, 0.398, 0.838] and set(wespeaker["calibration"]) == {"no"}
    assert set(reference["source"]) == {"paper Table 1", "paper Table 2", "paper Table 3",
                                        "WeSpeaker reproduction (Vox2 only, no calibration)",
                                        "DiariZen (structured pruning of WavLM, reported speed-up)"}
    records = reference[reference["record"] != ""]["record"]
    from svlib.analysis.tables import parse_eval_record_name

    for name in records[records.str.contains(r"\.")]:
        parse_eval_record_name(name)  # every join key follows the record convention
