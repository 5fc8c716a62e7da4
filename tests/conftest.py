"""Shared test set-up.

One intra-op thread: the test machines are small (and often shared), and several OpenMP
threads competing for two busy cores make small CPU convolutions tens of times slower.
Progress bars are off, and every test starts from the same torch seed.
"""

import os

import pytest
import torch

os.environ.setdefault("INFOPRUNE_PROGRESS", "0")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
