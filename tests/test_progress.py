"""svlib.core.progress: every svlib progress bar obeys TQDM_DISABLE, which tqdm itself ignores once disable= is
passed (the book build sets it; frozen notebook bars such as "0/224 [00:00<?]" showed on its pages before)."""

import pytest
from tqdm.auto import tqdm

from svlib.core.progress import progress_bar, progress_disabled


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("", False), ("0", False), ("false", False)])
def test_tqdm_disable_turns_every_bar_off(monkeypatch, value, off):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled() is off
    with progress_bar(total=3, enabled=True) as bar:
        assert bar.disable is off
    with progress_bar(total=3, enabled=False) as bar:
        assert bar.disable


def test_tqdm_alone_ignores_the_variable_once_disable_is_given(monkeypatch):
    """Why the wrapper exists: with disable= passed, as svlib's callers must (rank 0 only), tqdm shows the bar."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with tqdm(total=3, disable=False) as bar:
        assert not bar.disable


def test_disable_is_refused_so_a_caller_cannot_bypass_the_variable():
    with pytest.raises(TypeError, match="enabled="):
        progress_bar(total=3, disable=False)
