"""Shared test set-up.

One intra-op thread: the test machines are small and shared, and several OpenMP threads
competing for two busy cores make small CPU convolutions tens of times slower.
"""

import torch

torch.set_num_threads(1)
