"""Training recipes of MIPP Table 2, mixup, and checkpoint-resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from infoprune.data import LabelledTensors
from infoprune.data.augment import random_crop_flip
from infoprune.training import RECIPES, epoch_cost, get_recipe, mixup, recalibrate_batchnorm, train


def test_cifar_recipes_are_those_of_mipp_table_2():
    cifar10, cifar100 = RECIPES["cifar10"], RECIPES["cifar100"]
    assert (cifar10.lr, cifar10.epochs, cifar10.batch_size) == (0.1, 200, 128)
    assert (cifar10.momentum, cifar10.weight_decay) == (0.9, 5e-4)
    assert [cifar10.lr_at(e) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    retrain = RECIPES["cifar10-retrain"]
    assert (retrain.lr, retrain.epochs, retrain.weight_decay) == (1e-2, 120, 5e-4)
    assert [retrain.lr_at(e) for e in (59, 60, 89, 90)] == pytest.approx([1e-2, 1e-3, 1e-3, 1e-4])
    assert cifar100.batch_size == RECIPES["cifar100-retrain"].batch_size == 256
    assert cifar100.mixup_alpha > 0 and cifar100.cutout > 0 and cifar10.mixup_alpha == cifar10.cutout == 0


def test_every_recipe_number_can_be_overridden_and_scaled_epochs_keep_relative_milestones():
    quick = get_recipe("cifar10", epochs=20, lr=0.05, batch_size=32, mixup_alpha=0.2)
    assert (quick.epochs, quick.lr, quick.batch_size, quick.mixup_alpha) == (20, 0.05, 32, 0.2)
    assert [quick.lr_at(e) for e in (9, 10, 14, 15)] == pytest.approx([0.05, 0.005, 0.005, 5e-4])
    with pytest.raises(ValueError, match="no field"):
        get_recipe("cifar10", learning_rate=0.1)
    with pytest.raises(ValueError, match="available"):
        get_recipe("imagenet-ish")


def test_mixup_mixes_inputs_with_a_partner_by_the_same_lambda():
    inputs, labels = torch.randn(32, 3, 4, 4), torch.arange(32)
    mixed, first, second, lam = mixup(inputs, labels, 1.0, torch.Generator().manual_seed(0))
    again = mixup(inputs, labels, 1.0, torch.Generator().manual_seed(0))
    assert 0 <= lam <= 1 and lam == again[3] and torch.equal(mixed, again[0])
    assert torch.equal(first, labels) and sorted(second.tolist()) == labels.tolist()
    torch.testing.assert_close(mixed, lam * inputs + (1 - lam) * inputs[second])


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def toy_data() -> LabelledTensors:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 3, 8, 8, generator=generator)
    return LabelledTensors(inputs, torch.randint(0, 3, (40,), generator=generator))


class StopAfter:
    """A transform that interrupts training at its ``calls``-th batch."""

    def __init__(self, inner, calls: int) -> None:
        self.inner, self.left = inner, calls

    def __call__(self, inputs, generator):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.inner(inputs, generator)


def test_an_interrupted_training_resumes_to_the_same_result_as_an_uninterrupted_one(tmp_path):
    recipe = get_recipe("cifar100", epochs=4, batch_size=16, lr=0.05)  # mixup + cutout + step decay
    data, augment = toy_data(), random_crop_flip(padding=2)
    reference = small_cnn()
    reference_losses = train(reference, data, recipe, device="cpu", seed=3, transform=augment)

    resumed, checkpoint = small_cnn(), tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):  # 3 batches per epoch: stops inside epoch 3
        train(resumed, data, recipe, device="cpu", seed=3, transform=StopAfter(augment, 7), checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["losses"] == reference_losses[:2]
    resumed = small_cnn()  # a fresh process would start from a fresh model
    losses = train(resumed, data, recipe, device="cpu", seed=3, transform=augment, checkpoint=checkpoint)
    assert losses == reference_losses
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["checkpoint.pt"]

    finished = small_cnn()
    assert train(finished, data, recipe, device="cpu", seed=3, transform=augment, checkpoint=checkpoint) == losses
    assert torch.equal(finished[0].weight, reference[0].weight)


def test_a_checkpoint_of_another_run_is_not_silently_resumed(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    recipe = get_recipe("cifar10", epochs=1, batch_size=20)
    train(small_cnn(), toy_data(), recipe, device="cpu", checkpoint=checkpoint)
    with pytest.raises(ValueError, match="Delete it"):
        train(small_cnn(), toy_data(), recipe.with_epochs(2), device="cpu", checkpoint=checkpoint)
    with pytest.raises(ValueError, match="seed"):
        train(small_cnn(), toy_data(), recipe, device="cpu", seed=1, checkpoint=checkpoint)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_matches_the_cpu_up_to_float_tolerance():
    recipe, augment = get_recipe("cifar10", epochs=2, batch_size=16, lr=0.05), random_crop_flip(padding=2)
    cpu_model, cuda_model = small_cnn(), small_cnn()
    on_cpu = train(cpu_model, toy_data(), recipe, device="cpu", transform=augment)
    on_cuda = train(cuda_model, toy_data(), recipe, device="cuda", transform=augment)
    assert on_cuda == pytest.approx(on_cpu, rel=1e-2)
    torch.testing.assert_close(cuda_model[0].weight.cpu(), cpu_model[0].weight, rtol=1e-2, atol=1e-3)


def test_batchnorm_recalibration_gives_the_statistics_of_the_inputs_and_leaves_weights_alone():
    model = small_cnn().eval()
    model[1].running_mean.fill_(5.0)
    model[1].running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    inputs = toy_data().inputs
    assert recalibrate_batchnorm(model, inputs, batch_size=7)  # uneven batches: still the average over all
    with torch.no_grad():
        conv = model[0](inputs)
    per_batch = [conv[i : i + 7] for i in range(0, len(inputs), 7)]
    means = torch.stack([b.mean((0, 2, 3)) for b in per_batch])
    variances = torch.stack([b.var((0, 2, 3), unbiased=True) for b in per_batch])
    torch.testing.assert_close(model[1].running_mean, means.mean(0))  # momentum=None: the mean of the batch statistics
    torch.testing.assert_close(model[1].running_var, variances.mean(0))
    assert model[1].momentum == 0.1 and not model.training  # momentum and mode restored
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_batchnorm_recalibration_of_a_model_without_batchnorm_changes_nothing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    before = copy.deepcopy(model.state_dict())
    assert recalibrate_batchnorm(model, toy_data().inputs) is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_on_epoch_is_told_each_epoch_in_eval_mode_and_training_goes_on():
    model, seen = small_cnn(), []
    train(model, toy_data(), get_recipe("mnist", epochs=3, batch_size=16), "cpu",
          on_epoch=lambda epoch: seen.append((epoch, model.training)))  # fmt: skip
    assert seen == [(1, False), (2, False), (3, False)]


def test_epoch_cost_scales_the_step_time_to_the_epoch_and_leaves_the_model_untouched():
    model, data = small_cnn(), toy_data()
    before = copy.deepcopy(model.state_dict())
    cost = epoch_cost(model, data, get_recipe("mnist", epochs=1, batch_size=10), "cpu", steps=3)
    assert 0 < cost.wall_seconds < 5 and 0 < cost.cpu_seconds < 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="steps"):
        epoch_cost(model, data, get_recipe("mnist", epochs=1), "cpu", steps=0)
