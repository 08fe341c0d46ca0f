"""Every number a table shows as the paper's is the reference CSV's number at the row's own key (never "the last
row that matched"), and the chapters read the paper's numbers only through these keyed functions."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from svlib.analysis.complexity import PAPER_PARAMS_M, PAPER_TABLE3_FULL, PAPER_TABLE3_PRUNED
from svlib.analysis.tables import paper_reference, paper_value, style_table, table1, table1_ours, table2, table3
from svlib.core.results import record_result

ROOT = Path(__file__).resolve().parents[1]
REF = paper_reference()
PAPER = REF[REF["source"].str.startswith("paper Table")]
YES_NO = {"✓": "yes", "×": "no", "": ""}
METRICS = {"EER (%)": "eer", "minDCF": "min_dcf"}


def _csv(**key) -> list[float]:
    rows = PAPER
    for column, value in key.items():
        rows = rows[rows[column] == value]
    return rows["value"].tolist()


def test_a_key_names_exactly_one_number():
    assert paper_value(table=2, system="MFA", variant="freeze PTM", train_data="VoxCeleb2", metric="eer") == 0.46
    with pytest.raises(KeyError, match="3 of the paper's numbers match"):  # three training sets print this row
        paper_value(table=2, system="LoRA_Adapter_MFA", variant="freeze PTM", metric="eer")
    with pytest.raises(KeyError, match="0 of the paper's numbers"):  # WeSpeaker's number is not the paper's
        paper_value(table=1, system="LoRA_Adapter_MFA", variant="WeSpeaker recipe", test_set="Vox1-O", metric="eer")


def test_table1_cells_are_the_csv_numbers_at_their_keys():
    shown = 0
    for test_sets in (("Vox1-O", "Vox1-E", "Vox1-H"), ("CN-Celeb",)):
        for (frontend, system, params, lmft, calibration), row in table1(test_sets=test_sets).iterrows():
            for (test_set, label), value in row.items():
                expected = _csv(table=1, frontend=frontend, system=system, params=params, lmft=YES_NO[lmft],
                                calibration=YES_NO[calibration], test_set=test_set, metric=METRICS[label])
                if math.isnan(value):
                    assert expected == [], (system, test_set, label)
                else:
                    assert expected == [value], (system, test_set, label)
                    shown += 1
    assert shown == len(PAPER[PAPER["table"] == 1])  # every printed number of Table 1, once


def test_table2_and_table3_paper_cells_are_the_csv_numbers(tmp_path):
    t2 = table2(tmp_path)
    shown = 0
    for (system, variant), row in t2.iterrows():
        for (group, column), value in row.items():
            if group != "paper" or column == "params" or pd.isna(value):
                continue
            train_data, test_set = column.split(" → ")
            assert _csv(table=2, system=system, variant=variant, train_data=train_data, test_set=test_set,
                        metric="eer") == [value], (system, variant, column)
            shown += 1
    assert shown == len(PAPER[PAPER["table"] == 2])
    t3 = table3(tmp_path)
    for variant, record in (("0 %", "LoRA_Adapter_MFA"), ("≈ 80 %", "LoRA_Adapter_MFA-pruned80")):
        size = t3["size"].loc[variant, "paper"]
        assert [size["GMACs"], size["GFLOPs"], size["sparsity (%)"]] == [
            _csv(table=3, record=record, metric=m)[0] for m in ("macs", "flops", "sparsity")]
        eer = t3["eer"].loc[variant, "paper, Vox1-O"]
        printed = "sparsity 0%" if variant == "0 %" else "sparsity ≈ 80%"
        for lmft, label in (("no", "LMFT ×"), ("yes", "LMFT ✓")):
            assert _csv(table=3, system="LoRA_Adapter_MFA", variant=printed, metric="eer", lmft=lmft) == [eer[label]]
    assert list(t3["other"]["source"].str.startswith("DiariZen")) == [True, True]  # not the paper's: own table


def test_reproductions_keep_their_own_column_and_ours_sit_next_to_the_paper(tmp_path):
    record_result(tmp_path, kind="eval", name="LoRA_Adapter_MFA.demo.s3_lmft.demo", profile="demo",
                  metrics={"cosine": {"eer_percent": 6.5, "min_dcf_0.01": 0.5},
                           "asnorm+qmf": {"eer_percent": 6.0, "min_dcf_0.01": 0.4}})
    t = table1_ours(tmp_path)
    assert list(t["paper", "Vox1-O EER (%)"]) == [0.23, 0.14, 0.12]
    wespeaker = [c for c in t.columns if c[0].startswith("WeSpeaker")]
    assert len(wespeaker) == 1 and t[wespeaker[0]].tolist()[0] == 0.25 and t[wespeaker[0]].isna().tolist()[1:] == [
        True, True]
    demo = "this project (demo): demo"
    assert t[demo, "EER (%)"].tolist()[1:] == [6.5, 6.0] and math.isnan(t[demo, "EER (%)"].iloc[0])


def test_size_constants_come_from_the_csv():
    assert PAPER_PARAMS_M["MFA"] == (580.0, 65.6) and PAPER_PARAMS_M["LoRA_Adapter_MFA"] == (580.0, 12.5)
    assert PAPER_TABLE3_FULL["macs_g"] == _csv(table=3, record="LoRA_Adapter_MFA", metric="macs")[0]
    assert PAPER_TABLE3_PRUNED["flops_g"] == _csv(table=3, record="LoRA_Adapter_MFA-pruned80", metric="flops")[0]


@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_chapters_read_the_paper_only_by_key(notebook):
    """A chapter that filtered the reference CSV itself once showed CN-Celeb EERs as Vox1-O ones."""
    code = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
                     if c["cell_type"] == "code")
    assert "paper_reference(" not in code and "paper_reference.csv" not in code


def test_our_cells_carry_the_recorded_speaker_bootstrap_interval(tmp_path):
    cosine = {"eer_percent": 21.15, "eer_percent_low": 16.21, "eer_percent_high": 27.0,
              "min_dcf_0.01": 0.9, "min_dcf_0.01_low": 0.85, "min_dcf_0.01_high": 0.97}
    record_result(tmp_path, kind="eval", name="LoRA_Adapter_MFA.demo.s3_lmft.demo-cross", profile="demo",
                  metrics={"cosine": cosine})
    record_result(tmp_path, kind="eval", name="LoRA_Adapter_MFA.demo.s3_lmft.demo", profile="demo",
                  metrics={"cosine": {"eer_percent": 6.5, "min_dcf_0.01": 0.5}})
    t = table1_ours(tmp_path)
    cross = "this project (demo): demo, cross-channel"
    assert t[cross, "EER (%)"].iloc[1] == "21.15 [16.21, 27.00]"
    assert t[cross, "minDCF"].iloc[1] == "0.900 [0.850, 0.970]"
    assert t["this project (demo): demo", "EER (%)"].iloc[1] == 6.5  # no interval recorded: the number
    html = style_table(t).to_html()
    assert "21.15 [16.21, 27.00]" in html and "6.50" in html


def test_eer_by_stage_has_one_panel_per_trial_list_with_the_recorded_intervals(tmp_path):
    from svlib.analysis.tables import eer_by_stage
    from svlib.book.plots import plot_eer_by_stage

    for test, cosine in (("demo", {"eer_percent": 9.0}),
                         ("demo-cross", {"eer_percent": 18.1, "eer_percent_low": 12.5, "eer_percent_high": 24.2})):
        record_result(tmp_path, kind="eval", name=f"LoRA_Adapter_MFA.demo.s3_lmft.{test}", profile="demo",
                      metrics={"cosine": cosine})
    panels = eer_by_stage(tmp_path, "demo")
    assert list(panels) == ["paper, Vox1-O", "this project (demo): demo", "this project (demo): demo, cross-channel"]
    assert panels["this project (demo): demo"] == {"LoRA_Adapter_MFA, cosine": {"s3_lmft": 9.0}}
    assert panels["this project (demo): demo, cross-channel"] == {
        "LoRA_Adapter_MFA, cosine": {"s3_lmft": (18.1, 12.5, 24.2)}}
    fig = plot_eer_by_stage(panels)
    bars = [c for c in fig.axes[2].containers]
    assert len(fig.axes) == 3 and len(bars) == 1
