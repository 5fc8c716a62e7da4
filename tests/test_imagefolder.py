"""The image-folder loader on a generated folder: layout, preprocessing, errors that name the problem."""

import shutil

import pytest
import torch

from infoprune.data import load_dataset
from infoprune.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolder,
    Preprocessing,
    centre_crop,
    eval_transform,
    random_resized_crop,
    read_image,
    resize_shorter,
    write_imagefolder_standin,
)

SMALL = Preprocessing(crop=16, resize=20)


@pytest.fixture
def folder(tmp_path):
    return write_imagefolder_standin(tmp_path / "images", classes=3, per_class=4, size=(24, 30))


def test_classes_splits_and_decoding(folder):
    data = ImageFolder(folder, SMALL)
    assert data.classes == ["n00000000", "n00000001", "n00000002"]
    assert len(data.train) == 12 and len(data.val) == 6
    image, label = data.val[0]
    assert image.shape == (3, 16, 16) and label == 0
    raw = read_image(data.val.samples[0][0])
    assert raw.shape == (3, 24, 30) and 0 <= raw.min() and raw.max() <= 1
    # normalised with the ImageNet statistics: undoing it gives back [0, 1] pixels of that image
    pixels = image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    assert pixels.mean().item() == pytest.approx(raw.mean().item(), abs=0.03)


def test_eval_preprocessing_resizes_the_shorter_side_then_crops_the_centre():
    image = torch.zeros(3, 30, 60)
    image[:, :, 25:35] = 1.0  # a bright vertical band in the middle
    assert resize_shorter(image, 20).shape == (3, 20, 40)
    assert centre_crop(resize_shorter(image, 20), 16).shape == (3, 16, 16)
    out = eval_transform(image, SMALL)
    assert out.shape == (3, 16, 16) and out[:, :, 8].mean() > out[:, :, 0].mean()


def test_random_resized_crop_is_seeded_and_the_loader_batches(folder):
    image = torch.rand(3, 24, 30)
    first = random_resized_crop(image, SMALL, torch.Generator().manual_seed(3))
    again = random_resized_crop(image, SMALL, torch.Generator().manual_seed(3))
    assert first.shape == (3, 16, 16) and torch.equal(first, again)
    data = ImageFolder(folder, SMALL, seed=1)
    assert torch.equal(data.train[5][0], data.train[5][0])  # same (seed, epoch, index): same crop
    data.train.set_epoch(1)
    inputs, labels = next(iter(data.loader("train", batch_size=5, workers=1)))
    assert inputs.shape == (5, 3, 16, 16) and labels.dtype == torch.long
    with pytest.raises(ValueError, match="split must be one of"):
        data.loader("test")


def test_load_dataset_decodes_the_folder_into_memory(folder):
    splits = load_dataset("imagefolder", folder)
    assert splits.num_classes == 3 and splits.train.inputs.shape == (12, 3, 224, 224)
    assert torch.equal(splits.val.labels, torch.tensor([0, 0, 1, 1, 2, 2]))
    augmented = splits.train_transform(splits.train.inputs[:4], torch.Generator().manual_seed(0))
    assert augmented.shape == (4, 3, 224, 224)


def test_layout_errors_name_what_is_missing(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    shutil.rmtree(folder / "val")
    with pytest.raises(FileNotFoundError, match=r"has no val/ folder \(it holds: train\)"):
        ImageFolder(folder)
    (folder / "val" / "n00000007").mkdir(parents=True)
    with pytest.raises(ValueError, match="classes that train/ lacks: n00000007"):
        ImageFolder(folder)
    shutil.rmtree(folder / "val" / "n00000007")
    for image in (folder / "train" / "n00000001").iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match="class folders without any image: n00000001"):
        ImageFolder(folder)
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    (flat / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-directories"):
        ImageFolder(flat)
    shutil.copy(next((folder / "train" / "n00000000").iterdir()), flat / "train" / "loose.jpeg")
    (flat / "train" / "n00000000").mkdir()
    shutil.copy(flat / "train" / "loose.jpeg", flat / "train" / "n00000000" / "a.jpeg")
    with pytest.raises(ValueError, match="images outside class folders \\(loose.jpeg\\)"):
        ImageFolder(flat)
