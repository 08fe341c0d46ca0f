"""Shared fixtures: small models and waveforms that keep the suite fast on a 2-core CPU."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def wave():
    """A 1.3 s random 16 kHz waveform (odd number of fbank frames)."""
    return 0.1 * torch.randn(20_900)
