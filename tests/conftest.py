"""Shared fixtures: small models and waveforms that keep the suite fast on a 2-core CPU."""

import os
from pathlib import Path

import pytest
import torch

# the tests' workspace is the checkout, as with `make test` (the demo corpus in data/, the chapters' models in exp/)
os.environ.setdefault("SVLIB_HOME", str(Path(__file__).resolve().parents[1]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def wave():
    """A 1.3 s random 16 kHz waveform (odd number of fbank frames)."""
    return 0.1 * torch.randn(20_900)


@pytest.fixture(autouse=True)
def _results_store(request, tmp_path_factory, monkeypatch):
    """Runs made by unit tests record their results in a temporary store, never in the checkout's _build/results
    (the chapters, run by nbval, share the book's store as they do when the book is built)."""
    if not str(request.node.path).endswith(".ipynb"):
        monkeypatch.setenv("SVLIB_RESULTS", str(tmp_path_factory.mktemp("results")))
