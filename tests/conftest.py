import os

import pytest
import torch

os.environ.setdefault("INFOPRUNE_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
