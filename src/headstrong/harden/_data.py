"""The images a hardening step profiles on: a tensor, an (images, labels) pair, a data set or a loader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def image_batches(data: Any, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Batches of images from a tensor [N, ...], an ``(images, labels)`` pair, a map-style data
    set of ``(image, label)`` items, or an iterable of batches (a DataLoader)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = data[0]
    if isinstance(data, torch.Tensor):
        for start in range(0, len(data), batch_size):
            yield _images(data[start:start + batch_size])
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            yield _images(torch.stack([torch.as_tensor(data[i][0]) for i in range(start, stop)]))
    elif hasattr(data, "__iter__"):
        for batch in data:
            yield _images(batch[0] if isinstance(batch, (tuple, list)) else batch)
    else:
        raise TypeError(
            f"data must be an image tensor, an (images, labels) pair, a data set or a DataLoader; got {type(data).__name__}"
        )


def _images(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"images have dtype {x.dtype}; give floating-point images (as the model was trained on)")
    return x
