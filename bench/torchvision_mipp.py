"""MIPP on torchvision models with the calibration set it needs (twice the widest layer).

Runs with torchvision (not an infoprune dependency; see docs/results/torchvision-models.txt for
the venv): ``PYTHONPATH=src python bench/torchvision_mipp.py MODEL SAMPLES``, e.g.
``shufflenet_v2_x1_0 2048`` or ``convnext_tiny 6144``. Random init, 64 × 64 inputs, random
labels, flops=0.5; prints FLOPs kept, CPU seconds and max |physical − masked| on 16 inputs.
"""

import sys
import time

import torch
from torchvision import models

import infoprune
from infoprune.network import Network


def main() -> None:
    name, samples = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(models, name)(num_classes=10).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 3, 64, 64, generator=generator)
    y = torch.randint(0, 10, (samples,), generator=generator)
    start = time.process_time()
    result = infoprune.prune(model, (x, y), method="mipp", flops=0.5, device="cpu", progress=None)
    print(f"mipp {name} 64x64, {samples} samples: FLOPs kept {result.flops_after / result.flops_before:.3f}, "
          f"{time.process_time() - start:.0f} CPU s")
    network = Network(model, x[:2])
    with torch.no_grad(), network.masked(result.masks):
        masked = model(x[:16])
    with torch.no_grad():
        print(f"max |physical - masked| {float((result.model(x[:16]) - masked).abs().max()):.1e}")


if __name__ == "__main__":
    main()
