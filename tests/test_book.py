"""The book's structure: the chapters listed in _toc.yml follow the conventions of DESIGN.md, and _config.yml
keeps the build strict (only toc files, execution errors fail the build)."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_yaml(name):
    return yaml.safe_load((ROOT / name).read_text(encoding="utf8"))


def _toc_files(node):
    """Every ``file:`` entry of a jb-book toc, in order."""
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []):
                yield from _toc_files(child)


TOC = _load_yaml("_toc.yml")
PAGES = list(_toc_files(TOC))


def _resolve(entry):
    """A toc entry names a file with or without its suffix (Jupyter Book tries .ipynb, then .md)."""
    path = ROOT / entry
    if path.suffix in (".ipynb", ".md"):
        return path
    return next((p for p in (path.with_suffix(".ipynb"), path.with_suffix(".md")) if p.exists()), path.with_suffix(".ipynb"))


CHAPTERS = [entry for entry in PAGES if _resolve(entry).suffix == ".ipynb"]
"""Executable chapters; markdown pages (the intro, the API reference) have no cells to check."""


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _assignments(source):
    """(name, value node) for every top-level ``name = value`` / ``name: T = value`` of a cell."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            yield from ((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value


def _notebook(entry):
    path = _resolve(entry)
    assert path.suffix == ".ipynb" and path.is_file(), f"{entry}: chapter notebook {path.relative_to(ROOT)} is missing"
    return json.loads(path.read_text(encoding="utf8"))


def test_toc_is_a_book_rooted_at_the_intro():
    assert TOC["format"] == "jb-book"
    assert TOC["root"] == "book/intro"
    assert _resolve(TOC["root"]).is_file()
    assert CHAPTERS, "the toc lists no chapters"


@pytest.mark.parametrize("entry", PAGES)
def test_toc_page_exists(entry):
    assert _resolve(entry).is_file(), f"{entry}: listed in _toc.yml but neither .ipynb nor .md exists"


def test_every_notebook_is_in_the_toc():
    listed = {_resolve(entry) for entry in PAGES}
    unlisted = [p.name for p in sorted((ROOT / "book").glob("*.ipynb")) if p not in listed]
    assert not unlisted, f"notebooks missing from _toc.yml (they would not be built): {unlisted}"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_starts_with_parameters_cell(entry):
    code = [c for c in _notebook(entry)["cells"] if c["cell_type"] == "code"]
    assert code, f"{entry}: no code cells"
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), f"{entry}: first code cell not tagged 'parameters'"
    assigned = {name for name, _ in _assignments(_source(first))}
    assert "profile" in assigned, f"{entry}: the parameters cell does not set `profile`"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_defaults_to_demo_profile(entry):
    """The book is built with the defaults on a CPU, so the default profile must be `demo`."""
    first = next(c for c in _notebook(entry)["cells"] if c["cell_type"] == "code")
    values = [ast.literal_eval(value) for name, value in _assignments(_source(first)) if name == "profile"]
    assert values and values[-1] == "demo", f"{entry}: default profile is {values[-1:]!r}, not 'demo'"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_ends_with_assert_cell(entry):
    last = _notebook(entry)["cells"][-1]
    assert last["cell_type"] == "code", f"{entry}: the last cell is not a code cell"
    assert re.search(r"^\s*assert\b", _source(last), re.MULTILINE), f"{entry}: the last cell has no assert"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_checks_its_prose_for_typed_in_numbers(entry):
    """The assert cell runs svlib.book.prose.check_prose on this chapter: under nbval and in the book build, a number
    typed into the markdown that the chapter also glues fails the chapter."""
    stem = _resolve(entry).stem
    calls = re.findall(r"check_prose\(\s*[\"']([^\"']+)[\"']", _source(_notebook(entry)["cells"][-1]))
    assert calls == [stem], f"{entry}: the last cell must call check_prose({stem!r}), found {calls}"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_glue_roles_name_values_the_chapter_glues_and_stay_out_of_headings(entry):
    from svlib.book.prose import glue_keys

    code = "\n".join(_source(c) for c in _notebook(entry)["cells"] if c["cell_type"] == "code")
    glued = set(re.findall(r"\bglue\(\s*[\"']([^\"']+)[\"']", code))
    markdown = _markdown(entry)
    missing = sorted(set(glue_keys(markdown)) - glued)
    assert not missing, f"{entry}: glue roles with no glue(...) call in the code: {missing}"
    headings = [line for line in markdown.splitlines() if line.startswith("#") and "{glue" in line]
    assert not headings, f"{entry}: a glued number in a heading (the toc shows the raw role): {headings}"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_no_cell_ends_with_a_glue_call(entry):
    """svlib.book.prose.glue returns its value, so a cell whose last statement is a glue(...) call prints that value
    as a bare number under its code on the page (ch. 2 showed "3200", ch. 10 "224")."""
    for i, cell in enumerate(_notebook(entry)["cells"]):
        if cell["cell_type"] != "code" or not _source(cell).strip():
            continue
        body = ast.parse(_source(cell)).body
        last = body[-1] if body else None
        is_glue = (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
                   and getattr(last.value.func, "id", None) == "glue")
        assert not is_glue, f"{entry}: cell {i} ends with a glue(...) call, whose value the page would show"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_is_committed_with_outputs_stripped(entry):
    for i, cell in enumerate(_notebook(entry)["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{entry}: cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{entry}: cell {i} has an execution count"


def test_config_keeps_the_build_strict():
    config = _load_yaml("_config.yml")
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    sphinx = config["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    assert "://" not in sphinx["mathjax_path"], "MathJax must be the vendored local copy"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_papermill_reads_every_parameter(entry, caplog):
    """papermill parses each line of the parameters cell (`papermill --help-notebook`, `svlib book run -p`); a line
    it cannot parse (one with a second "=", e.g. in its comment) is skipped with a warning and its parameter goes unlisted."""
    from papermill.translators import PythonTranslator

    first = next(c for c in _notebook(entry)["cells"] if c["cell_type"] == "code")
    with caplog.at_level("WARNING", logger="papermill.translators"):
        names = {p.name for p in PythonTranslator.inspect({"source": _source(first)})}
    assert not caplog.records, f"{entry}: {[r.getMessage() for r in caplog.records]}"
    assert names == {name for name, _ in _assignments(_source(first))}


CODE_COLUMNS = 79
"""The widest code line that fits the book's code column (1280-px window; `make format` formats to it)."""


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_code_fits_the_code_column(entry):
    """A line wider than the column is cut off (or needs sideways scrolling) on the built page."""
    long = [line for cell in _notebook(entry)["cells"] if cell["cell_type"] == "code"
            for line in _source(cell).splitlines() if len(line) > CODE_COLUMNS]
    assert long == [], f"{entry}: {len(long)} code line(s) over {CODE_COLUMNS} columns (run `make format`): {long[:3]}"


def test_every_library_module_has_its_reference_on_the_api_page():
    """A chapter's {func} reference to a module missing from book/api.md fails only at the end of `make book`
    (-W); the command-line wrappers (svlib.cli) are documented by the README instead."""
    documented = set(re.findall(r"automodule:: (svlib[\w.]*)", (ROOT / "book" / "api.md").read_text()))
    modules = set()
    for path in (ROOT / "svlib").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(p.startswith("_") for p in parts) and parts[:2] != ["svlib", "cli"] and parts != ["svlib"]:
            modules.add(".".join(parts))
    assert sorted(modules - documented) == []


# -- the textbook's apparatus: objectives, citations, links, summaries ------------------------------------------

LESSONS = [entry for entry in CHAPTERS if re.match(r"book/\d\d_", entry)]
"""The numbered chapters (the appendix of runs is a record, not a lesson)."""

CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB = ROOT / "references.bib"


def _markdown(entry):
    path = _resolve(entry)
    if path.suffix == ".md":
        return path.read_text(encoding="utf8")
    return "\n".join(_source(c) for c in _notebook(entry)["cells"] if c["cell_type"] == "markdown")


def _bib_keys():
    return set(re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf8"), re.MULTILINE))


def _cited(text):
    return {key.strip() for keys in CITE.findall(text) for key in keys.split(",")}


@pytest.mark.parametrize("entry", LESSONS)
def test_chapter_opens_with_objectives_and_prerequisites(entry):
    first = _source(_notebook(entry)["cells"][0])
    assert "```{admonition} In this chapter" in first, f"{entry}: the first cell has no 'In this chapter' box"
    box = first[first.index("```{admonition} In this chapter") :]
    for part in ("**You will**", "**Before you start:**", "**Run time:**"):
        assert part in box, f"{entry}: the 'In this chapter' box lacks {part}"


@pytest.mark.parametrize("entry", LESSONS)
def test_chapter_closes_with_a_summary_in_prose(entry):
    cells = _notebook(entry)["cells"]
    closing = _source([c for c in cells if c["cell_type"] == "markdown"][-1])
    before, heading, summary = closing.partition("## What this chapter established")
    assert heading, f"{entry}: the last markdown cell is not 'What this chapter established'"
    assert not before.strip(), f"{entry}: the summary cell starts with prose of the section above it: {before[:60]!r}"
    assert len(summary.split()) >= 40, f"{entry}: the closing summary has {len(summary.split())} words"
    assert "hide-input" in cells[-1]["metadata"].get("tags", []), f"{entry}: the assert cell shows its code"


@pytest.mark.parametrize("entry", LESSONS)
def test_chapter_cites_works_of_the_bibliography(entry):
    cited = _cited(_markdown(entry))
    assert cited, f"{entry}: cites nothing"
    unknown = cited - _bib_keys()
    assert not unknown, f"{entry}: cites keys missing from references.bib: {sorted(unknown)}"


def test_every_bibliography_entry_is_cited_and_listed():
    cited = set().union(*(_cited(_markdown(entry)) for entry in PAGES))
    assert _bib_keys() - cited == set(), f"entries of references.bib no page cites: {sorted(_bib_keys() - cited)}"
    assert "book/references" in PAGES, "the bibliography page is not in _toc.yml"
    assert "{bibliography}" in _markdown("book/references")
    assert _load_yaml("_config.yml")["bibtex_bibfiles"] == ["references.bib"]


def test_pages_link_chapters_instead_of_quoting_their_titles():
    titles = {}
    for entry in CHAPTERS:
        heading = next(line for line in _source(_notebook(entry)["cells"][0]).splitlines() if line.startswith("# "))
        titles[heading[2:].strip()] = entry
    for entry in PAGES:
        text = re.sub(r"\s+", " ", _markdown(entry))  # a title may break across lines
        quoted = [t for t in titles if f'"{t}"' in text]
        assert not quoted, f"{entry}: quotes chapter titles {quoted}; link them with {{doc}}"


EXERCISE = re.compile(r"```\{exercise\} ?([^\n]*)\n:label: (ex-[\w-]+)")
"""An exercise directive: (title, label)."""
SOLUTION_START = re.compile(r"```\{solution-start\} (ex-[\w-]+)")


def _exercises(entry):
    """[(label, [code of its solution's cells])] of a chapter, from the cells between each ``solution-start`` and
    ``solution-end`` (sphinx-exercise's gated solutions, whose code cells run in the build)."""
    cells = _notebook(entry)["cells"]
    labels, solutions, current = [], {}, None
    for cell in cells:
        text = _source(cell)
        if cell["cell_type"] == "markdown":
            labels += [label for _, label in EXERCISE.findall(text)]
            if current is not None and "```{solution-end}" in text:
                current = None
            started = SOLUTION_START.findall(text)
            if started:
                current = started[-1]
                solutions[current] = []
        elif current is not None:
            solutions[current].append(text)
    return [(label, solutions.get(label)) for label in labels]


def _titles(entry):
    return {label: title for title, label in EXERCISE.findall(_markdown(entry))}


@pytest.mark.parametrize("entry", LESSONS)
def test_chapter_has_two_exercises_with_executed_solutions(entry):
    exercises = _exercises(entry)
    assert len(exercises) >= 2, f"{entry}: {len(exercises)} exercises, at least 2 expected"
    for label, code in exercises:
        assert code is not None, f"{entry}: exercise {label} has no solution-start/solution-end block"
        assert "`" not in _titles(entry)[label], f"{entry}: {label}'s title has markup (sphinx-exercise cannot link it)"
        assert code, f"{entry}: the solution of {label} has no code cell (it would not run in the build)"
        assert any(re.search(r"^\s*assert\b", c, re.MULTILINE) for c in code), (
            f"{entry}: the solution of {label} asserts nothing, so a wrong answer would not fail the build"
        )


def test_exercise_labels_are_unique_across_the_book():
    labels = [label for entry in LESSONS for label, _ in _exercises(entry)]
    assert len(labels) == len(set(labels)), f"repeated exercise labels: {sorted(l for l in labels if labels.count(l) > 1)}"


def test_the_lecturers_page_places_every_exercise_in_a_session():
    text = _markdown("book/lecturers")
    placed = set(re.findall(r"\{ref\}`(?:[^`<]*<)?(ex-[\w-]+)>?`", text))
    labels = {label for entry in LESSONS for label, _ in _exercises(entry)}
    assert placed == labels, f"exercises in no session: {sorted(labels - placed)}; unknown: {sorted(placed - labels)}"
    assert all(f"{{doc}}`{Path(entry).name}`" in text for entry in LESSONS), "a chapter is in no session"


def test_chapter_numbers_follow_the_table_of_contents():
    numbers = [int(Path(entry).name[:2]) for entry in LESSONS]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (
        f"chapter file numbers in toc order: {numbers}; rename the files so that they count up with the toc"
    )
