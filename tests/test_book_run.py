"""svlib.book.run: chapter order from the toc, papermill parameter injection, failure reports, resume, the profile's
missing paths, the CLI, and the results tables. Chapters here are tiny throwaway notebooks in tmp_path."""

import json
import logging
import math
from pathlib import Path

import nbformat
import pytest

from svlib.analysis.tables import TABLE_COLUMNS, book_tables, eval_record_name, ours_rows
from svlib.book import run as book
from svlib.book.run import ChapterError, MissingPathsError, run_book, toc_chapters
from svlib.cli import build_parser
from svlib.core.results import record_result

LOG_CELL = (
    "from pathlib import Path\n"
    "with open(log, 'a') as f:\n"
    "    f.write(f'{Path.cwd().name}:{chapter}:{profile}:{knob}\\n')"
)


def _notebook(path: Path, params: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), first, *map(nbformat.v4.new_code_cell, cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _book(tmp_path: Path, failing: str | None = None) -> tuple[Path, Path]:
    """A book with chapters c_first, b_second, a_third (toc order differs from name order) and a markdown root."""
    log = tmp_path / "log.txt"
    chapters = ["c_first", "b_second", "a_third"]
    for name in chapters:
        params = f'profile = "demo"\nchapter = {name!r}\nlog = "unset"\nknob = 1'
        if name == "b_second":
            params += "\nonly_second = 0"
        cells = [LOG_CELL]
        if name == failing:
            cells.append("x = 1\nraise ValueError('broken on purpose')")
        _notebook(tmp_path / "chap" / f"{name}.ipynb", params, *cells)
    (tmp_path / "chap" / "intro.md").write_text("# Intro\n")
    toc = {"format": "jb-book", "root": "chap/intro",
           "parts": [{"caption": "A", "chapters": [{"file": "chap/c_first"}, {"file": "chap/b_second"}]},
                     {"caption": "B", "chapters": [{"file": "chap/a_third"}, {"file": "chap/intro2"}]}]}
    (tmp_path / "chap" / "intro2.md").write_text("# Not a chapter\n")
    (tmp_path / "_toc.yml").write_text(json.dumps(toc))
    return tmp_path / "_toc.yml", log


def _profiles(tmp_path: Path) -> Path:
    root = tmp_path / "configs"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "profile.yaml").write_text("profile: demo\nencoder: tiny\n")
    (root / "paperish" / "sub").mkdir(parents=True)
    (root / "paperish" / "profile.yaml").write_text("profile: paperish\nencoder: ${SVT_ENCODER}\n")
    (root / "paperish" / "s1.yaml").write_text(
        "train_dir: ${SVT_TRAIN}\naugment: {musan: '${SVT_MUSAN}', rirs: '${SVT_PRESENT}'}\nname: s1\n")
    (root / "paperish" / "sub" / "x.yaml").write_text("encoder: ${SVT_ENCODER}\n")
    return root


def _log(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_toc_order_markdown_skipped(tmp_path):
    toc, _ = _book(tmp_path)
    assert [p.stem for p in toc_chapters(toc)] == ["c_first", "b_second", "a_third"]


def test_repo_chapters_follow_the_toc():
    assert book.CHAPTERS == [p.stem for p in toc_chapters()]
    assert book.CHAPTERS and all((book.default_toc().parent / "book" / f"{c}.ipynb").is_file() for c in book.CHAPTERS)


def test_run_in_toc_order_with_parameters(tmp_path, caplog):
    toc, log = _book(tmp_path)
    out = tmp_path / "runs"
    with caplog.at_level(logging.INFO, logger="svlib.book.run"):
        paths = run_book("demo", parameters={"log": str(log), "knob": 7, "only_second": 5, "nobody": 1},
                         output_dir=out, toc=toc, config_root=_profiles(tmp_path))
    assert [p.name for p in paths] == ["c_first.ipynb", "b_second.ipynb", "a_third.ipynb"]
    assert _log(log) == ["chap:c_first:demo:7", "chap:b_second:demo:7", "chap:a_third:demo:7"], "cwd = chapter folder"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nobody" in warnings[0] and "only_second" not in warnings[0]
    injected = {p.stem: _injected(p) for p in paths}
    assert "only_second = 5" in injected["b_second"] and "only_second" not in injected["c_first"]
    assert "nobody" not in "".join(injected.values())
    assert not list((tmp_path / "chap").glob("*.failed.ipynb")) and len(list(out.iterdir())) == 3


def _injected(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "".join("".join(c["source"]) for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))


def test_failure_names_chapter_and_cell_and_stops(tmp_path):
    toc, log = _book(tmp_path, failing="b_second")
    out = tmp_path / "runs"
    with pytest.raises(ChapterError) as info:
        run_book("demo", parameters={"log": str(log)}, output_dir=out, toc=toc, config_root=_profiles(tmp_path))
    err = info.value
    assert err.chapter == "b_second" and err.cell_index == 3 and err.cell_line == "x = 1"
    assert "ValueError: broken on purpose" in str(err) and "b_second" in str(err) and "cell 3" in str(err)
    assert err.notebook == out / "b_second.failed.ipynb" and err.notebook.is_file()
    assert _log(log) == ["chap:c_first:demo:1", "chap:b_second:demo:1"], "a_third must not run after a failure"
    assert not (out / "b_second.ipynb").exists()
    assert not list((tmp_path / "chap").glob("*.*.ipynb")), "nothing is written next to the chapters"


def test_resume_from_and_chapter_selection(tmp_path):
    toc, log = _book(tmp_path)
    root = _profiles(tmp_path)
    paths = run_book("demo", resume_from="b_sec", parameters={"log": str(log)}, output_dir=tmp_path / "o",
                     toc=toc, config_root=root)
    assert [p.stem for p in paths] == ["b_second", "a_third"]
    with pytest.raises(ValueError, match="'x' is not a chapter"):
        run_book("demo", chapters=["a_third", "b"], resume_from="x", toc=toc, config_root=root)
    with pytest.raises(ValueError, match="'ab' matches several chapters"):
        book._find([Path("x/ab1.ipynb"), Path("x/ab2.ipynb")], "ab", "chapter")
    with pytest.raises(ValueError, match=r"'zz' is not a chapter.*c_first"):
        run_book("demo", chapters=["zz"], toc=toc, config_root=root)


def test_missing_paths_reported_all_at_once_before_running(tmp_path, monkeypatch):
    toc, log = _book(tmp_path)
    root = _profiles(tmp_path)
    monkeypatch.delenv("SVT_ENCODER", raising=False)
    monkeypatch.delenv("SVT_MUSAN", raising=False)
    monkeypatch.setenv("SVT_TRAIN", str(tmp_path / "nowhere"))
    monkeypatch.setenv("SVT_PRESENT", str(tmp_path))
    with pytest.raises(MissingPathsError) as info:
        run_book("paperish", parameters={"log": str(log)}, toc=toc, config_root=root)
    message = str(info.value)
    assert {m.variable for m in info.value.missing} == {"SVT_ENCODER", "SVT_TRAIN", "SVT_MUSAN"}
    assert "SVT_ENCODER not set" in message and "paperish/sub/x.yaml: encoder" in message
    assert f"SVT_TRAIN={tmp_path / 'nowhere'}: no such file" in message and "augment.musan" in message
    assert "SVT_PRESENT" not in message
    assert not log.exists(), "nothing runs when paths are missing"
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        run_book("nope", toc=toc, config_root=root)


def test_chapter_without_profile_parameter_is_rejected(tmp_path):
    _notebook(tmp_path / "n.ipynb", "x = 1", "print(x)")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: n\n")
    with pytest.raises(ValueError, match="does not define `profile`"):
        run_book("demo", toc=tmp_path / "_toc.yml", config_root=_profiles(tmp_path))


def test_cli_run_failure_exit_code(tmp_path, monkeypatch, capsys):
    toc, log = _book(tmp_path, failing="c_first")
    monkeypatch.setattr(book, "default_toc", lambda: toc)
    monkeypatch.setenv("SVLIB_CONFIGS", str(_profiles(tmp_path)))
    args = build_parser().parse_args(["book", "run", "--profile", "demo", "--chapter", "c_first", "a_third",
                              "-p", "log", str(log), "--output-dir", str(tmp_path / "o")])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "chapter c_first failed at cell 3" in err and "broken on purpose" in err


def test_book_tables_join_paper_and_ours(tmp_path, capsys):
    results = tmp_path / "results"
    name = eval_record_name("LoRA_Adapter_MFA", "vox2+vb2", "s3_lmft", "vox1-o")
    metrics = {"cosine": {"eer_percent": 0.15, "min_dcf_0.01": 0.02}, "asnorm+qmf": {"eer_percent": 0.13}}
    record_result(results, kind="eval", name=name, metrics=metrics, profile="paper")
    demo = eval_record_name("LoRA_Adapter_MFA", "demo", "s3_lmft", "demo")
    record_result(results, kind="eval", name=demo, metrics={"cosine": {"eer_percent": 6.5}}, profile="demo")
    record_result(results, kind="complexity", name="LoRA_Adapter_MFA-pruned80", profile="demo",
                  metrics={"macs": 6.2e9, "flops": 12.4e9, "encoder_params": 123_000_000, "sparsity": 0.79})
    tables = book_tables(results)
    t1, t3 = tables["Table 1"], tables["Table 3"]
    assert list(t1.columns) == TABLE_COLUMNS
    row = t1[(t1.record == name) & (t1.metric == "eer") & (t1.calibration == "yes")].iloc[0]
    assert (row.paper, row.ours, row.profile) == (0.12, 0.13, "paper")
    row = t1[(t1.record == name) & (t1.metric == "min_dcf") & (t1.calibration == "no")].iloc[0]
    assert (row.paper, row.ours) == (0.020, 0.02)
    # the demo record sits right after the paper's (system, stage, cosine, eer) rows, with no paper value
    i = t1.index[(t1.record == demo)].tolist()
    assert len(i) == 1 and math.isnan(t1.paper[i[0]]) and t1.test_set[i[0]] == "demo" and t1.ours[i[0]] == 6.5
    assert t1.record[i[0] - 1].startswith("LoRA_Adapter_MFA.vox2+vb2.s3_lmft.") and t1.calibration[i[0] - 1] == "no"
    macs = t3[(t3.record == "LoRA_Adapter_MFA-pruned80") & (t3.metric == "macs")].iloc[0]
    assert (macs.paper, macs.ours, macs.profile) == (6.31, pytest.approx(6.2), "demo")
    assert t3[(t3.record == "LoRA_Adapter_MFA-pruned80") & (t3.metric == "sparsity")].ours.iloc[0] == pytest.approx(79)
    t2 = tables["Table 2"]
    assert t2[t2.record == demo].variant.tolist() == ["++ LMFT"]
    i = t2.index[t2.record == demo][0]  # next to the first (VoxCeleb2) block's row, not the VoxBlink2 block's
    assert t2.record[i - 1] == "LoRA_Adapter_MFA.vox2.s3_lmft.vox1-o"
    assert t2.ours.notna().sum() == 2 and t2.paper.notna().sum() == 24  # the paper record is in Table 2 too

    parser = build_parser()
    args = parser.parse_args(["book", "tables", "--results", str(results), "--json"])
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"Table 1", "Table 2", "Table 3"} and any(r["ours"] == 0.13 for r in payload["Table 1"])

    # --ours: the rows with our numbers, the demo row after the paper row it sits next to, nothing else
    compact = ours_rows(t2)
    assert compact["paper"].tolist()[::2] == [0.24, 0.14] and compact["ours"].tolist()[1:] == [6.5, 0.15]
    assert math.isnan(compact["ours"][0]) and math.isnan(compact["paper"][1]) and "record" not in compact
    args = parser.parse_args(["book", "tables", "--results", str(results), "--ours"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "6.5" in out and "0.13" in out and "CAM++" not in out


def test_eval_record_names_are_checked():
    assert eval_record_name("MFA", "vox2", "s1_freeze", "vox1-o") == "MFA.vox2.s1_freeze.vox1-o"
    with pytest.raises(ValueError, match="system 'WavLM'"):
        eval_record_name("WavLM", "vox2", "s1_freeze", "vox1-o")
    with pytest.raises(ValueError, match="stage 's4'"):
        eval_record_name("MFA", "vox2", "s4", "vox1-o")
    with pytest.raises(ValueError, match="test code 'Vox1.O'"):
        eval_record_name("MFA", "vox2", "s2_joint", "Vox1.O")
