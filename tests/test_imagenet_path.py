"""The ImageNet path end to end: a generated image folder -> ImageNet ResNet50 -> pruning."""

import pytest
import torch

import infoprune
from infoprune.data.imagefolder import ImageFolder, Preprocessing, write_imagefolder_standin
from infoprune.models import build_model

# the groups a method may prune in ResNet50: the first two convs of every bottleneck, the stem
# (it feeds layer1.0's convs and projection, not an add), and each stage's residual stream (the
# third convs and the projection of the stage, named after the first of them, layerN.0.conv3)
BOTTLENECKS = [(stage, i) for stage, count in zip(range(1, 5), (3, 4, 6, 3)) for i in range(count)]
PRUNABLE = {"conv1"} | {f"layer{s}.{i}.conv{j}" for s, i in BOTTLENECKS for j in (1, 2)} | {f"layer{s}.0.conv3" for s in range(1, 5)}


def test_a_ratio_method_prunes_the_branch_convs_of_resnet50_from_a_folder_loader(tmp_path):
    root = write_imagefolder_standin(tmp_path, classes=3, per_class=6, size=(40, 36))
    loader = ImageFolder(root, Preprocessing(crop=32, resize=36)).loader("train", batch_size=6, workers=0)
    model = build_model("resnet50-imagenet", num_classes=3).eval()
    result = infoprune.prune(model, loader, "random", ratio=0.3, device="cpu", seed=0)
    assert set(result.masks) == PRUNABLE
    assert result.params_after < result.params_before
    assert result.model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    stage = result.model.layer1  # a residual stream shrinks as one group: every producer alike
    assert stage[0].conv3.out_channels == stage[0].downsample[0].out_channels == stage[2].conv3.out_channels


@pytest.mark.slow
def test_mipp_runs_end_to_end_on_imagenet_resnet50_with_a_generated_folder(tmp_path):
    """MIPP with tiny iteration counts on 64×64 images: the plumbing, not the quality. With the
    residual streams left whole (``coupled="keep"``, the paper's App. D.3.2) MIPP needs twice the
    widest tested layer (512) in calibration samples: 1026 images of 3 classes (pruning the
    streams too would test layer4's 2048 channels, and need 4096)."""
    root = write_imagefolder_standin(tmp_path, classes=3, per_class=342, size=(72, 80))
    loader = ImageFolder(root, Preprocessing(crop=64, resize=72)).loader("val", batch_size=128, workers=2)
    train = ImageFolder(root, Preprocessing(crop=64, resize=72)).loader("train", batch_size=128, workers=2)
    model = build_model("resnet50-imagenet", num_classes=3).eval()
    tiny = dict(fit_iterations=20, refit_iterations=2, ordering_iterations=2, repeats=3, hidden_size=32)
    result = infoprune.prune(model, train, "mipp", confidence=0.99, coupled="keep", device="cpu", seed=0, **tiny)
    assert set(result.masks) == PRUNABLE and result.params_after < result.params_before
    assert all(result.masks[f"layer{stage}.0.conv3"].all() for stage in range(1, 5))  # the streams stay whole
    inputs, _labels = next(iter(loader))
    assert result.model.eval()(inputs).shape == (len(inputs), 3)


@pytest.mark.slow
def test_cli_prunes_a_checkpoint_of_resnet18_on_an_image_folder(tmp_path):
    """`infoprune prune --data imagefolder --weights`: the ImageNet recipe, 224×224 centre crops."""
    import json

    from infoprune import cli

    root = write_imagefolder_standin(tmp_path / "images", classes=3, per_class=4)
    torch.save(build_model("resnet18-imagenet", num_classes=3).state_dict(), tmp_path / "resnet18.pth")
    argv = ["prune", "--model", "resnet18-imagenet", "--data", "imagefolder", "--data-dir", str(root),
            "--weights", str(tmp_path / "resnet18.pth"), "--method", "l1", "--ratio", "0.3", "--allow-collapse",
            "--retrain-epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pruning"]["flops_after"] < summary["pruning"]["flops_before"]
    assert summary["config"]["weights"].endswith("resnet18.pth")
    assert summary["pruning"]["collapsed"]  # global l1 empties this random-init stem: refused without --allow-collapse
