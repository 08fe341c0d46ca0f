"""svlib.book.prose: typed numbers that a chapter computes are found; the paper's spec and references are not."""

import json

import pytest

from svlib.book import prose


def test_a_typed_copy_of_a_glued_value_is_found_at_the_typed_precision():
    glued = {"gmacs": 28.6123, "params_m": 580.49312, "frames": 49, "n_trials": 892}
    markdown = ("The encoder costs about 28.6 GMACs per second and holds 580M parameters; one second is "
                "**49 encoder frames**, and the list has 892 trials.")
    found = {t.text: t.key for t in prose.typed_numbers(markdown, glued)}
    assert found == {"28.6": "gmacs", "580": "params_m", "49": "frames", "892": "n_trials"}


def test_a_two_digit_rounding_of_a_value_shown_with_more_digits_is_not_a_copy():
    # 28.81 GMACs shown as "28.81"; "about 29°" is the margin in degrees, not a copy of it
    markdown = "It costs {glue:text}`gmacs:.2f` GMACs; the margin is about 29°; the FFNs hold 69 %."
    assert prose.typed_numbers(markdown, {"gmacs": 28.81, "ffn_share": 69.4}) == []
    shown = "It costs {glue:text}`gmacs:.0f` GMACs, about 29 GMACs."
    assert [t.text for t in prose.typed_numbers(shown, {"gmacs": 28.81})] == ["29"]


def test_thousands_separators_and_numbers_inside_glued_strings():
    found = prose.typed_numbers("It keeps 1,024 values.", {"summary": "1,024 of 25,600 dims"})
    assert [(t.text, t.key) for t in found] == [("1,024", "summary")]


def test_glued_roles_math_code_references_and_one_digit_numbers_are_not_typed_numbers():
    glued = {"gmacs": 28.6, "frames": 49.0, "eq": 5.0, "sec": 2.6, "four": 4.0, "margin": 0.2}
    markdown = (
        "It costs {glue:text}`gmacs:.1f` GMACs, $T = 49$ frames, ``frames = 49`` in code, §2.6 and Section 2.6, "
        "Eqs. 5 and 49, Table 49, 4 layers, margin 0.2, [a link](ch49.ipynb) and <img width=\"49\">.\n\n"
        "```python\nx = 28.6\n```\n"
        "```{literalinclude} ../configs/demo/s49.yaml\n:lines: 1-49\n```\n"
    )
    assert prose.typed_numbers(markdown, glued) == []


def test_a_different_number_at_the_typed_precision_is_not_flagged():
    # Table 3's 28.75 GMACs (the paper) next to a computed 28.61: different at two decimals
    assert prose.typed_numbers("Table 3 reports 28.75 GMACs.", {"gmacs": 28.61}) == []
    # 0.43 -> 0.30 % (Table 2) is not a demo EER of 24.3 %
    assert prose.typed_numbers("from 0.43 to 0.30 %", {"eer": 24.3}) == []


def test_glue_keys_drop_format_specs_and_document_paths():
    markdown = "{glue:text}`a:.1f`, {glue}`b`, {glue:text}`other.ipynb::c:,d` and {glue:md}`d`"
    assert prose.glue_keys(markdown) == ["a", "b", "c", "d"]


def _notebook(tmp_path, *markdown):
    path = tmp_path / "99_chapter.ipynb"
    cells = [{"cell_type": "markdown", "metadata": {}, "source": [m]} for m in markdown]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_check_prose_names_typed_numbers_and_unglued_keys(tmp_path):
    path = _notebook(tmp_path, "There are 892 trials.", "And {glue:text}`n_speakers:d` speakers.")
    with pytest.raises(AssertionError) as err:
        prose.check_prose(path, {"n_trials": 892})
    message = str(err.value)
    assert "'892' (glued as 'n_trials')" in message
    assert "'n_speakers' is used in the markdown but was not glued" in message
    assert prose.check_prose(_notebook(tmp_path, "{glue:text}`n_trials:,d` trials"), {"n_trials": 892}) == 1


def test_check_prose_finds_a_chapter_by_name_and_says_which_exist(tmp_path):
    path = _notebook(tmp_path, "Nothing computed here: 580M is the paper's count.")
    assert prose.check_prose("99_chapter", {}, chapters=[path]) == 0
    with pytest.raises(FileNotFoundError, match="99_chapter"):
        prose.check_prose("42_missing", {}, chapters=[path])


def test_glue_records_plain_python_numbers(monkeypatch):
    pytest.importorskip("myst_nb")
    import numpy as np
    import torch

    shown = []
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: shown.append((name, value)))
    monkeypatch.setattr(prose, "GLUED", {})
    assert prose.glue("a", np.float64(0.25)) == 0.25 and type(prose.GLUED["a"]) is float
    assert prose.glue("b", torch.tensor(3)) == 3 and type(prose.GLUED["b"]) is int
    assert shown == [("a", 0.25), ("b", 3)]


def test_exercises_and_admonitions_are_prose_and_their_options_are_not():
    markdown = ("```{exercise} Predict, then run: 49 frames\n:label: ex-49\n\nHow many of the 892 trials?\n```\n\n"
                "```{admonition} In this chapter\n:class: tip\nIt takes 49 s.\n```")
    assert [t.text for t in prose.typed_numbers(markdown, {"frames": 49, "n_trials": 892})] == ["49", "892", "49"]


def test_check_prose_rejects_a_format_spec_that_does_not_apply(tmp_path):
    path = _notebook(tmp_path, "{glue:text}`name:.1f` and {glue:text}`count:,d`")
    with pytest.raises(AssertionError, match="format spec '.1f' does not apply"):
        prose.check_prose(path, {"name": "Vox1-O", "count": 892})
