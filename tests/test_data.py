"""Data sets by name: IDX parsing, normalisation, subsets, augmentation, folders, bad names."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from headstrong.data import FASHION_MNIST_SYSTEM_DIR, dataset_info, list_datasets, load_dataset, subset


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist_files(directory: Path, compress: bool, n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        suffix = ".gz" if compress else ""
        _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


def test_fashion_mnist_reads_idx_files_under_root_and_normalises(tmp_path: Path) -> None:
    arrays = _fake_mnist_files(tmp_path, compress=True)
    ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    images, labels = arrays["t10k"]
    assert len(ds) == len(labels)
    info = dataset_info("fashion-mnist")
    for i in (0, 7):
        x, y = ds[i]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert y == int(labels[i])
        restored = x * info.std[0] + info.mean[0]
        np.testing.assert_allclose(restored[0].numpy(), images[i] / 255.0, atol=1e-5)


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="Debian's Fashion-MNIST is not installed")
def test_fashion_mnist_from_debian_files_has_the_real_sizes() -> None:
    ds = load_dataset("fashion-mnist", "test", root="/nonexistent-root")
    assert len(ds) == 10_000
    counts = torch.bincount(ds.targets, minlength=10)
    assert counts.tolist() == [1000] * 10  # the test split is balanced


def test_mnist_comes_through_torchvision_without_download(tmp_path: Path) -> None:
    arrays = _fake_mnist_files(tmp_path / "MNIST" / "raw", compress=False)
    ds = load_dataset("mnist", "train", root=tmp_path)
    assert len(ds) == 20 and ds[3][1] == int(arrays["train"][1][3])
    assert dataset_info("mnist").hflip is False  # digits are not mirrored by the augmentation


def test_limit_takes_a_seeded_subset(tmp_path: Path) -> None:
    _fake_mnist_files(tmp_path, compress=True, n=50)
    a = load_dataset("fashion-mnist", "train", root=tmp_path, limit=10, seed=1)
    b = load_dataset("fashion-mnist", "train", root=tmp_path, limit=10, seed=1)
    c = load_dataset("fashion-mnist", "train", root=tmp_path, limit=10, seed=2)
    assert len(a) == 10 and a.indices == b.indices and a.indices != c.indices
    assert a.classes == list(dataset_info("fashion-mnist").classes)
    assert len(subset(a, 100)) == 10
    with pytest.raises(ValueError, match="must be at least 1"):
        subset(a, 0)


def test_augment_crops_and_flips_reproducibly_and_resize_changes_the_side(tmp_path: Path) -> None:
    _fake_mnist_files(tmp_path, compress=True)
    plain = load_dataset("fashion-mnist", "train", root=tmp_path)
    aug = load_dataset("fashion-mnist", "train", root=tmp_path, augment=True)
    torch.manual_seed(0)
    first = torch.stack([aug[0][0] for _ in range(8)])
    torch.manual_seed(0)
    again = torch.stack([aug[0][0] for _ in range(8)])
    assert torch.equal(first, again)
    assert any(not torch.equal(v, plain[0][0]) for v in first)
    big = load_dataset("fashion-mnist", "train", root=tmp_path, image_size=32)
    assert big[0][0].shape == (1, 32, 32)


def test_dataset_info_orders_classes_as_torchvision() -> None:
    assert dataset_info("cifar10").classes[:3] == ("airplane", "automobile", "bird")
    cifar100 = dataset_info("cifar100").classes
    assert len(cifar100) == 100 and list(cifar100) == sorted(cifar100)
    assert dataset_info("stl10").image_size == 96 and dataset_info("stl10").in_chans == 3
    assert dataset_info("fashion-mnist").classes[0] == "T-shirt/top"


def test_imagefolder_with_train_and_test_folders(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((20, 24, 3), 40 * k + i, dtype=np.uint8)).save(folder / f"{i}.png")
    name = f"imagefolder:{tmp_path}"
    assert dataset_info(name).classes == ("cat", "dog")
    ds = load_dataset(name, "test", image_size=16)
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and y == 1
    assert len(load_dataset(name, "train", image_size=16, augment=True, limit=4)) == 4


def test_unknown_names_and_splits_list_the_choices() -> None:
    with pytest.raises(ValueError, match="fashion-mnist.*did you mean|did you mean fashion-mnist"):
        dataset_info("fashion-mnst")
    with pytest.raises(ValueError) as error:
        load_dataset("imagenet")
    for choice in list_datasets():
        assert choice in str(error.value)
    with pytest.raises(ValueError, match="expected one of train, test"):
        load_dataset("fashion-mnist", "val")
    with pytest.raises(ValueError, match="does not exist"):
        dataset_info("imagefolder:/no/such/folder")
