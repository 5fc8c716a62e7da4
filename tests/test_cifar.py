"""CIFAR from disk, its generated stand-in, the augmentations, and user tensor files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from infoprune.data import DATASETS, load_cifar, load_dataset, load_tensor_dataset, write_cifar_standin
from infoprune.data.augment import compose, cutout, random_crop_flip
from infoprune.data.cifar import CIFAR_FORMATS


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_standin_round_trip_recovers_the_stored_pixels_and_labels(tmp_path, name):
    folder = write_cifar_standin(tmp_path, name, train_size=200, test_size=30, seed=1)
    fmt = CIFAR_FORMATS[name]
    assert sorted(p.name for p in folder.iterdir()) == sorted((*fmt.train_files, fmt.test_file))
    splits = load_cifar(name, tmp_path, val_fraction=0.1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 30)
    assert splits.num_classes == fmt.num_classes and splits.train.inputs.shape[1:] == (3, 32, 32)
    with open(folder / fmt.test_file, "rb") as handle:
        raw = pickle.load(handle)
    mean, std = torch.tensor(fmt.mean).reshape(1, 3, 1, 1), torch.tensor(fmt.std).reshape(1, 3, 1, 1)
    pixels = ((splits.test.inputs * std + mean) * 255).round().to(torch.uint8).reshape(30, -1)
    assert torch.equal(pixels, torch.from_numpy(raw[b"data"]))
    assert splits.test.labels.tolist() == raw[fmt.label_key.encode()]


def test_the_folder_itself_or_its_parent_can_be_given(tmp_path):
    folder = write_cifar_standin(tmp_path, train_size=50, test_size=10)
    a, b = load_cifar("cifar10", tmp_path), load_cifar("cifar10", folder)
    assert torch.equal(a.test.inputs, b.test.inputs)


def test_validation_split_is_seeded_and_disjoint_from_training(tmp_path):
    write_cifar_standin(tmp_path, train_size=100, test_size=10)
    first, again, other = (load_cifar("cifar10", tmp_path, seed=s) for s in (3, 3, 4))
    assert torch.equal(first.val.inputs, again.val.inputs)
    assert not torch.equal(first.val.inputs, other.val.inputs)
    everything = torch.cat([first.train.inputs, first.val.inputs]).flatten(1)
    assert torch.unique(everything, dim=0).shape[0] == 100


def test_registry_loads_cifar_with_the_standard_augmentation(tmp_path):
    write_cifar_standin(tmp_path, "cifar100", train_size=50, test_size=10)
    splits = load_dataset("cifar100", tmp_path, seed=0)
    assert splits.name == "cifar100" and splits.train_transform is not None
    assert {"cifar10", "cifar100", "deformed-mnist", "tensor-file"} <= set(DATASETS)


@pytest.mark.parametrize("where", ["missing", "empty", "none"])
def test_a_missing_or_wrong_directory_names_the_expected_files(tmp_path, where):
    data_dir = {"missing": tmp_path / "nope", "empty": tmp_path, "none": None}[where]
    with pytest.raises(FileNotFoundError) as error:
        load_cifar("cifar10", data_dir)
    message = str(error.value)
    assert "data_batch_1" in message and "data_batch_5" in message and "test_batch" in message
    assert "--data-dir" in message
    with pytest.raises(FileNotFoundError, match="fine|train, test"):
        load_cifar("cifar100", data_dir)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_standin(tmp_path, train_size=50, test_size=10)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle)
    with pytest.raises(pickle.UnpicklingError, match="refusing builtins.print"):
        load_cifar("cifar10", tmp_path)


def test_random_crop_flip_takes_a_window_of_the_padded_image_maybe_mirrored():
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(padding=2)(images, torch.Generator().manual_seed(1))
    again = random_crop_flip(padding=2)(images, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = 0
    for i in range(16):
        windows = {
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if torch.equal(out[i], (lambda w: w.flip(2) if flip else w)(padded[i, :, dy : dy + 8, dx : dx + 8]))
        }
        assert windows, f"image {i} is not a (mirrored) window of its padded original"
        flips += all(flip for *_, flip in windows)
    assert 0 < flips < 16


def test_cutout_zeroes_one_clipped_square_per_image():
    images = torch.ones(200, 3, 32, 32)
    out = cutout(8)(images, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(dim=1)  # (N, H, W): same hole in every channel
    assert torch.equal((out == 0).any(dim=1), zeros)
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == 64 and counts.min() >= 16 and (counts < 64).any()
    for hole in zeros[:20]:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()
    assert compose(None, None) is None


def test_tensor_file_is_split_into_train_val_test(tmp_path):
    inputs, labels = torch.randn(100, 4), torch.arange(100) % 3
    torch.save({"inputs": inputs, "labels": labels}, tmp_path / "data.pt")
    splits = load_dataset("tensor-file", tmp_path / "data.pt", seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (81, 9, 10, 3)
    joined = torch.cat([splits.train.inputs, splits.val.inputs, splits.test.inputs])
    assert torch.equal(joined[joined[:, 0].argsort()], inputs[inputs[:, 0].argsort()])


def test_tensor_directory_keeps_its_test_file(tmp_path):
    torch.save((torch.randn(50, 1, 4, 4), torch.arange(50) % 5), tmp_path / "train.pt")
    test_inputs = torch.randn(7, 1, 4, 4)
    torch.save((test_inputs, torch.zeros(7, dtype=torch.long)), tmp_path / "test.pt")
    splits = load_tensor_dataset(tmp_path, val_fraction=0.2)
    assert torch.equal(splits.test.inputs, test_inputs)
    assert (len(splits.train), len(splits.val), splits.num_classes) == (40, 10, 5)


def test_bad_tensor_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tensor_dataset(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="test.pt"):
        load_tensor_dataset(tmp_path)
    torch.save({"x": torch.randn(3)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not inputs and labels"):
        load_tensor_dataset(tmp_path / "wrong.pt")
    torch.save((torch.randn(5, 2), torch.rand(5)), tmp_path / "float_labels.pt")
    with pytest.raises(ValueError, match="integer tensor"):
        load_tensor_dataset(tmp_path / "float_labels.pt")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="Could not read"):
        load_tensor_dataset(tmp_path / "array.npy")
