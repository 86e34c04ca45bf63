"""The data a hardening step reads: image tensors, (images, labels) pairs, data sets or loaders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def image_batches(data: Any, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Batches of images from a tensor [N, ...], an ``(images, labels)`` pair, a map-style data
    set of ``(image, label)`` items, or an iterable of batches (a DataLoader)."""
    for x, _ in labelled_batches(data, batch_size, need_labels=False):
        yield x


def labelled_batches(data: Any, batch_size: int = 256, *, need_labels: bool = True) -> Iterator[tuple[torch.Tensor, Any]]:
    """``(images, labels)`` batches from the same inputs as ``image_batches``."""
    if isinstance(data, torch.Tensor):
        if need_labels:
            raise TypeError("training data must carry labels: give (images, labels), a data set or a DataLoader")
        for start in range(0, len(data), batch_size):
            yield _images(data[start:start + batch_size]), None
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        y = torch.as_tensor(y)
        if len(x) != len(y):
            raise ValueError(f"images and labels differ in length: {len(x)} vs {len(y)}")
        for start in range(0, len(x), batch_size):
            yield _images(x[start:start + batch_size]), y[start:start + batch_size]
        return
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        for start in range(0, len(data), batch_size):
            items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
            images = torch.stack([torch.as_tensor(item[0]) for item in items])
            labels = torch.as_tensor([int(item[1]) for item in items])
            yield _images(images), labels
        return
    if hasattr(data, "__iter__"):
        for batch in data:
            if isinstance(batch, (tuple, list)):
                yield _images(batch[0]), (torch.as_tensor(batch[1]) if len(batch) > 1 else None)
            elif need_labels:
                raise TypeError("training batches must be (images, labels) pairs")
            else:
                yield _images(batch), None
        return
    raise TypeError(
        f"data must be an image tensor, an (images, labels) pair, a data set or a DataLoader; got {type(data).__name__}"
    )


def _images(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"images have dtype {x.dtype}; give floating-point images (as the model was trained on)")
    return x
