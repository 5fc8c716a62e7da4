"""Image folders (ImageNet's layout): ``ROOT/train/CLASS/*.jpg`` and ``ROOT/val/CLASS/*.jpg``.

One sub-directory per class under ``train/`` and ``val/`` (the same class names; ``val/`` may
lack some), holding JPEG or PNG files (any case of ``.jpg``, ``.jpeg``, ``.png``). Classes are
numbered in sorted order of their folder names, as torchvision's ``ImageFolder`` does.
Images are decoded with Pillow and converted to RGB; all preprocessing is plain torch:

* training: random resized crop to 224 (area 8–100 % of the image, aspect ratio 3/4–4/3,
  Szegedy et al. 2015), random horizontal flip;
* evaluation: resize the shorter side to 256 (bilinear, antialiased), centre crop 224;
* both: scale to [0, 1] and normalise with the ImageNet mean and std (:data:`IMAGENET_MEAN`).

:class:`ImageFolder` streams the images through a ``DataLoader`` with worker processes, the way
to train on ImageNet itself. ``load_dataset("imagefolder", ROOT)`` (``--data imagefolder``)
instead decodes every image once into memory for the tensor-based pipeline (``infoprune
prune``/``sweep``): 0.6 MB per 224×224 image, so it suits folders up to some ten thousand
images (a class subset, or a calibration folder), not the full 1.28 M training images. There
the training augmentation acts on the stored centre crops (a random resized crop *of the
224×224 centre crop*, resized back, and a flip), a deviation from the exact recipe. The
validation split is ``val/``; ``DatasetSplits.val`` and ``.test`` are both that folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from infoprune.data.base import BatchTransform, DatasetSplits, LabelledTensors

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val")
LAYOUT = (
    "Expected ROOT/train/CLASS/IMAGE and ROOT/val/CLASS/IMAGE: one sub-directory per class, of "
    f"{'/'.join(EXTENSIONS)} files (ImageNet's layout)."
)


@dataclass(frozen=True)
class Preprocessing:
    """Crop and resize sizes of the ImageNet recipe (224 / 256 by default)."""

    crop: int = 224
    resize: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


# ---------------------------------------------------------------------------------------------
# Reading the layout


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (", …" if len(names) > 5 else "")


def scan_folder(root: str | Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """``(class names, {split: [(image path, class index)]})``; errors name what is missing."""
    root = Path(root).expanduser() if root is not None else None
    if root is None:
        raise FileNotFoundError(f"No data directory given (--data-dir ROOT). {LAYOUT}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a directory. {LAYOUT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir())
        raise FileNotFoundError(
            f"{root} has no {' and no '.join(f'{s}/' for s in missing)} folder (it holds: {_shown(present) or 'nothing'}). {LAYOUT}"
        )
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root / 'train'} has no class sub-directories. {LAYOUT}")
    samples: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        folder = root / split
        loose = _images_in(folder)
        if loose:
            raise ValueError(f"{folder} holds images outside class folders ({_shown([p.name for p in loose])}); "
                             f"move each into {folder}/CLASS/. {LAYOUT}")  # fmt: skip
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown = [c for c in present if c not in classes]
        if unknown:
            raise ValueError(f"{folder} has classes that train/ lacks: {_shown(unknown)}. {LAYOUT}")
        empty = [c for c in (classes if split == "train" else present) if not _images_in(folder / c)]
        if empty:
            raise FileNotFoundError(f"{folder} has class folders without any image: {_shown(empty)}. {LAYOUT}")
        samples[split] = [(path, classes.index(c)) for c in present for path in _images_in(folder / c)]
    return classes, samples


# ---------------------------------------------------------------------------------------------
# Decoding and preprocessing (torch only)


def read_image(path: Path) -> torch.Tensor:
    """The image at ``path`` as floats in [0, 1], shape (3, H, W) (decoded with Pillow, RGB)."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size`` (bilinear, antialiased), keeping the aspect."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    target = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(image[None], size=target, mode="bilinear", antialias=True, align_corners=False)[0]


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def random_resized_crop(image: torch.Tensor, setting: Preprocessing, generator: torch.Generator) -> torch.Tensor:
    """A random region of ``scale`` × the area and aspect ``ratio`` (log-uniform), resized to
    ``crop``×``crop``; after 10 failed draws, the largest centred region of allowed aspect."""
    h, w = image.shape[-2:]
    area = h * w
    log_ratio = (math.log(setting.ratio[0]), math.log(setting.ratio[1]))
    for _ in range(10):
        draws = torch.rand(4, generator=generator).tolist()
        target = area * (setting.scale[0] + draws[0] * (setting.scale[1] - setting.scale[0]))
        aspect = math.exp(log_ratio[0] + draws[1] * (log_ratio[1] - log_ratio[0]))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(draws[2] * (h - ch + 1)), int(draws[3] * (w - cw + 1))
            break
    else:
        aspect = min(max(w / h, setting.ratio[0]), setting.ratio[1])
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        cw, ch = min(cw, w), min(ch, h)
        top, left = (h - ch) // 2, (w - cw) // 2
    region = image[None, :, top : top + ch, left : left + cw]
    return F.interpolate(region, size=(setting.crop, setting.crop), mode="bilinear", antialias=True, align_corners=False)[0]


def normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).reshape(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(-1, 1, 1)
    return (image - mean) / std


def eval_transform(image: torch.Tensor, setting: Preprocessing = Preprocessing()) -> torch.Tensor:
    """Resize 256, centre crop 224, normalise."""
    return normalise(centre_crop(resize_shorter(image, setting.resize), setting.crop))


def train_transform(image: torch.Tensor, generator: torch.Generator, setting: Preprocessing = Preprocessing()) -> torch.Tensor:
    """Random resized crop 224, random horizontal flip, normalise."""
    image = random_resized_crop(image, setting, generator)
    if torch.rand(1, generator=generator).item() < 0.5:
        image = image.flip(-1)
    return normalise(image)


# ---------------------------------------------------------------------------------------------
# Streaming (DataLoader) and in-memory access


class ImageFolderDataset(Dataset):
    """``(image, label)`` pairs of one split, preprocessed for training or evaluation.

    Training draws are seeded by (``seed``, epoch, index), so a run is reproducible whatever
    the number of workers; call :meth:`set_epoch` before each epoch for fresh crops.
    """

    def __init__(self, samples: list[tuple[Path, int]], train: bool, setting: Preprocessing = Preprocessing(),
                 seed: int = 0) -> None:  # fmt: skip
        self.samples, self.train, self.setting, self.seed, self.epoch = samples, train, setting, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = read_image(path)
        if self.train:
            seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            return train_transform(image, torch.Generator().manual_seed(seed), self.setting), label
        return eval_transform(image, self.setting), label


class ImageFolder:
    """An image folder's classes and its train/val :class:`ImageFolderDataset` splits."""

    def __init__(self, root: str | Path, setting: Preprocessing = Preprocessing(), seed: int = 0) -> None:
        self.root = Path(root)
        self.classes, samples = scan_folder(root)
        self.train = ImageFolderDataset(samples["train"], train=True, setting=setting, seed=seed)
        self.val = ImageFolderDataset(samples["val"], train=False, setting=setting, seed=seed)

    def loader(self, split: str, batch_size: int = 256, workers: int = 8, seed: int = 0) -> DataLoader:
        """A DataLoader over ``split`` (``"train"``: shuffled, seeded; ``"val"``: in order)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        dataset = self.train if split == "train" else self.val
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            generator=torch.Generator().manual_seed(seed),
        )


def centre_crop_augmentation(setting: Preprocessing = Preprocessing()) -> BatchTransform:
    """The in-memory stand-in for the training recipe: per image a random resized crop of the
    stored centre crop, resized back, and a random flip (both on normalised tensors)."""

    def transform(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = torch.stack([random_resized_crop(image, setting, generator) for image in inputs])
        flip = torch.rand(len(inputs), generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(-1), out)

    return transform


def _decode_all(dataset: ImageFolderDataset) -> LabelledTensors:
    images = torch.stack([eval_transform(read_image(path), dataset.setting) for path, _ in dataset.samples])
    return LabelledTensors(images, torch.tensor([label for _, label in dataset.samples]))


def load_imagefolder(root: str | Path | None, seed: int = 0, setting: Preprocessing = Preprocessing()) -> DatasetSplits:
    """Every image of ``root`` decoded into memory (centre crops), for the tensor pipeline."""
    folder = ImageFolder(root, setting, seed)
    val = _decode_all(folder.val)
    return DatasetSplits(
        "imagefolder",
        train=_decode_all(folder.train),
        val=val,
        test=val,
        num_classes=len(folder.classes),
        train_transform=centre_crop_augmentation(setting),
    )


def write_imagefolder_standin(
    root: str | Path, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (40, 48), seed: int = 0
) -> Path:
    """Write a small generated image folder (JPEG train, PNG val) for tests and demos.

    Class ``c`` is a noisy image of its own colour; ``size`` is (height, width).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    colours = rng.uniform(30, 225, size=(classes, 3))
    for split, extension, count in (("train", "JPEG", per_class), ("val", "png", max(1, per_class // 2))):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(colours[c] + rng.normal(0, 20, size=(*size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.{extension}")
    return root
