"""One device check for every entry point, run before anything loads.

``torch.device("cuda")`` is accepted on a machine without a GPU and fails much later, deep in a
model's ``.to()``, with a driver message; an unknown name fails with torch's list of twenty
device types. ``resolve_device`` turns both into one ValueError that says what is allowed.
"""

from __future__ import annotations

import torch

from headstrong._checks import check_int

ALLOWED = "auto, cpu, cuda, cuda:N (N a GPU index) or mps"
_KINDS = ("cpu", "cuda", "mps")


def resolve_device(name: "str | torch.device", available: bool = True) -> torch.device:
    """The device ``name`` means here: ``auto`` is the first GPU if there is one, else the CPU.

    Raises ValueError for a name torch does not know, a kind headstrong does not run on, or
    (with ``available``) a GPU this machine does not have; a config meant for another machine is
    read with ``available=False`` and checked where it runs.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        if not isinstance(name, str):
            raise TypeError(f"device must be a string such as 'cpu'; got {type(name).__name__}; expected {ALLOWED}")
        text = name.strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {name!r}; expected {ALLOWED}") from None
    if device.type not in _KINDS:
        raise ValueError(f"device {str(device)!r} is not supported; expected {ALLOWED}")
    if not available:
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "" if torch.version.cuda else ", and this torch was built without CUDA"
            raise ValueError(f"device {str(device)!r}: no CUDA GPU is available on this machine{built}; "
                             "use --device cpu (or auto, which picks a GPU when there is one)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s); "
                             f"expected cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use --device cpu or auto")
    return device


def check_threads(threads: "int | None") -> "int | None":
    """``threads`` if it is None (torch's own choice) or a whole number of at least 1."""
    return check_int("threads", threads, 1, none_ok=True)


def set_threads(threads: "int | None") -> None:
    """Set torch's CPU threads (checked first: torch's own check says only 'positive integer')."""
    if check_threads(threads) is not None:
        torch.set_num_threads(threads)
