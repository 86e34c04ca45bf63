"""Image data sets by name, as tensors in memory wherever they fit.

Fashion-MNIST is read straight from Debian's gzipped IDX files when they are installed (no
network); the other sets come from torchvision, which downloads them only when they are not
found under ``root``. Every set yields ``(float image [C, H, W], int label)``, normalised with the
set's mean and std, so the training recipe and the fault campaigns see the same inputs.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from headstrong._checks import check_int

__all__ = ["DatasetInfo", "dataset_info", "list_datasets", "load_dataset", "subset", "default_root"]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_STL10_CLASSES = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set before seeing it."""

    name: str
    classes: tuple[str, ...]
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = field(default=True)  # whether mirrored images are still valid (not for digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _cifar100_classes() -> tuple[str, ...]:
    # torchvision's order (alphabetical fine labels), kept here so no download is needed.
    return tuple(
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
        "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
        "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
        "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
        "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
        "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew "
        "skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
        "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf "
        "woman worm".split()
    )


_INFOS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", _FASHION_CLASSES, 1, 28, (0.2860,), (0.3530,), hflip=True
    ),
    "mnist": DatasetInfo(
        "mnist", tuple(f"{i} - {w}" for i, w in enumerate(
            "zero one two three four five six seven eight nine".split())),
        1, 28, (0.1307,), (0.3081,), hflip=False,
    ),
    "cifar10": DatasetInfo(
        "cifar10", _CIFAR10_CLASSES, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", _cifar100_classes(), 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "stl10": DatasetInfo(
        "stl10", _STL10_CLASSES, 3, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)
    ),
}

_IMAGEFOLDER = "imagefolder:"
_SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    """Names accepted by ``load_dataset`` (plus ``imagefolder:PATH``)."""
    return [*_INFOS, "imagefolder:PATH"]


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_INFOS), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(
        f"unknown data set {name!r}{hint}; expected one of {', '.join(list_datasets())}"
    )


def default_root() -> Path:
    """Where torchvision data sets are kept: $HEADSTRONG_DATA, else ~/.cache/headstrong/data."""
    env = os.environ.get("HEADSTRONG_DATA")
    return Path(env) if env else Path.home() / ".cache" / "headstrong" / "data"


def _folder_path(name: str, split: Optional[str]) -> Path:
    text = name[len(_IMAGEFOLDER):].strip()
    if not text:
        raise ValueError("imagefolder: needs a path; give imagefolder:PATH, a folder with one sub-folder of images per class")
    base = Path(text).expanduser()
    if not base.is_dir():
        raise ValueError(f"image folder {str(base)!r} does not exist; give imagefolder:PATH to a directory")
    if split is not None and (base / split).is_dir():
        return base / split
    return base


def dataset_info(name: str, root: Optional[str | Path] = None) -> DatasetInfo:
    """Classes (in torchvision's order), channels, native size, mean and std of a data set."""
    if name.startswith(_IMAGEFOLDER):
        from torchvision.datasets.folder import find_classes

        path = _folder_path(name, "train")
        try:
            classes, _ = find_classes(str(path))
        except FileNotFoundError:
            raise ValueError(
                f"image folder {str(path)!r} has no class sub-folders; put each class's images in "
                "PATH/<class>/ (or PATH/train/<class>/ and PATH/test/<class>/)"
            ) from None
        return DatasetInfo(name, tuple(classes), 3, 224, _IMAGENET_MEAN, _IMAGENET_STD)
    info = _INFOS.get(name)
    if info is None:
        raise _unknown(name)
    return info


class TensorImageDataset(Dataset):
    """uint8 images [N, C, H, W] held in memory, normalised (and augmented) per item.

    Augmentation is the recipe's, the same for every model: a random crop after zero padding by
    one eighth of the side, and a horizontal flip where the set allows it. It draws from torch's
    global generator so a seeded run is repeatable.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        image_size: Optional[int] = None,
        augment: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.targets = labels.long()
        self.info = info
        self.classes = list(info.classes)
        self.image_size = image_size or images.shape[-1]
        self.augment = augment
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)[0]
        if self.augment:
            x = _random_crop_flip(x, self.info.hflip)
        x = (x - self._mean) / self._std
        return x, int(self.targets[index])


def _random_crop_flip(x: torch.Tensor, hflip: bool) -> torch.Tensor:
    size = x.shape[-1]
    pad = max(1, size // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    x = padded[:, i:i + size, j:j + size]
    if hflip and torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped or not): magic, dims, then big-endian uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _find_idx(directory: Path, stem: str) -> Optional[Path]:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_from_idx(directory: Path, split: str) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    prefix = "train" if split == "train" else "t10k"
    images = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x = torch.from_numpy(_read_idx(images).copy())[:, None]
    y = torch.from_numpy(_read_idx(labels).astype(np.int64))
    return x, y


# Where torchvision looks for each set under the data root, and the files it needs there.
_EXPECTED_FILES = {
    "fashion-mnist": ("FashionMNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                      "t10k-labels-idx1-ubyte (each may be .gz)"),
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
              "t10k-labels-idx1-ubyte (each may be .gz)"),
    "cifar10": ("cifar-10-batches-py", "data_batch_1 ... data_batch_5, test_batch, batches.meta "
                "(unpacked cifar-10-python.tar.gz)"),
    "cifar100": ("cifar-100-python", "train, test, meta (unpacked cifar-100-python.tar.gz)"),
    "stl10": ("stl10_binary", "train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt "
              "(unpacked stl10_binary.tar.gz)"),
}


def _torchvision(factory: Callable[..., Dataset], root: Path, name: str, **kwargs) -> Dataset:
    """Open a torchvision set, downloading it only when it is not already under ``root``.

    Offline (or with the server down) the failure names the files looked for and where to put them.
    """
    try:
        return factory(str(root), download=False, **kwargs)
    except RuntimeError:
        pass
    try:
        return factory(str(root), download=True, **kwargs)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum a RuntimeError
        folder, files = _EXPECTED_FILES[name]
        reason = str(getattr(error, "reason", "") or error).splitlines()[0][:120] or type(error).__name__
        extra = f", or {FASHION_MNIST_SYSTEM_DIR}" if name == "fashion-mnist" else ""
        raise ValueError(
            f"data set {name!r} is not on disk and could not be downloaded ({reason}); looked for {files} in "
            f"{root / folder}{extra}; put the files there (or set HEADSTRONG_DATA / --data-root to the folder "
            "that holds them)"
        ) from None


@functools.lru_cache(maxsize=8)
def _load_arrays(name: str, split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, C, H, W] and labels; kept per process (items never write to them)."""
    train = split == "train"
    if name == "fashion-mnist":
        for directory in (root, root / "fashion-mnist", FASHION_MNIST_SYSTEM_DIR, root / "FashionMNIST" / "raw"):
            arrays = _fashion_from_idx(directory, split)
            if arrays is not None:
                return arrays
    import torchvision.datasets as tvd  # slow to import; not needed for the IDX files

    if name == "fashion-mnist":
        ds = _torchvision(tvd.FashionMNIST, root, name, train=train)
        return ds.data[:, None].contiguous(), ds.targets
    if name == "mnist":
        ds = _torchvision(tvd.MNIST, root, name, train=train)
        return ds.data[:, None].contiguous(), ds.targets
    if name in ("cifar10", "cifar100"):
        factory = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        ds = _torchvision(factory, root, name, train=train)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    if name == "stl10":
        ds = _torchvision(tvd.STL10, root, name, split=split)
        return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels.astype(np.int64))
    raise _unknown(name)


def _imagefolder(name: str, split: str, image_size: Optional[int], augment: bool) -> Dataset:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    info = dataset_info(name)
    size = image_size or info.image_size
    steps: list = [T.Resize(size), T.CenterCrop(size)]
    if augment:
        steps = [T.RandomResizedCrop(size, scale=(0.35, 1.0)), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(info.mean, info.std)]
    folder = _folder_path(name, split)
    try:
        ds = ImageFolder(str(folder), transform=T.Compose(steps))
    except FileNotFoundError as error:  # a class folder without a single image file
        raise ValueError(
            f"image folder {str(folder)!r}: {str(error).splitlines()[0]}; every class folder needs image files "
            "(.jpg, .png, ...)"
        ) from None
    if tuple(ds.classes) != info.classes:
        raise ValueError(
            f"image folder {name!r}: split {split!r} has classes {ds.classes}, "
            f"but the train split has {list(info.classes)}; both must hold the same class folders"
        )
    return ds


def subset(dataset: Dataset, n: Optional[int], seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` items (all of them when n is None or not smaller)."""
    n = check_int("subset size (limit)", n, 1, none_ok=True)
    if n is None or n >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:n].sort().values.tolist()
    sub = Subset(dataset, indices)
    sub.classes = getattr(dataset, "classes", None)  # type: ignore[attr-defined]
    return sub


def load_dataset(
    name: str,
    split: str = "train",
    root: Optional[str | Path] = None,
    image_size: Optional[int] = None,
    augment: bool = False,
    limit: Optional[int] = None,
    seed: int = 0,
) -> Dataset:
    """A data set by name: ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``stl10`` or
    ``imagefolder:PATH`` (with ``train``/``test`` sub-folders, or one folder used for both).

    ``image_size`` resizes, ``augment`` turns on the recipe's crop-and-flip, ``limit`` keeps a
    seeded random subset of that many items for quick runs.
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(_SPLITS)}")
    check_int("image_size (pixels)", image_size, 8, none_ok=True)
    if name.startswith(_IMAGEFOLDER):
        ds = _imagefolder(name, split, image_size, augment)
    else:
        info = dataset_info(name)
        root_path = Path(root).expanduser() if root is not None else default_root()
        images, labels = _load_arrays(name, split, root_path)
        ds = TensorImageDataset(images, labels, info, image_size=image_size, augment=augment)
    return subset(ds, limit, seed)
