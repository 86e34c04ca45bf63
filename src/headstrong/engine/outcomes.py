"""``Outcomes``: what the engine measures for each evaluated (fault, image) pair.

This is the one place the outcome columns are named: the evaluator fills them, campaigns store
them (``to_frame`` / ``columns``) and summaries read them back by these names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Golden and faulty outcomes, one element per (fault, image) pair (any shape, all alike).

    ``golden_pred`` / ``faulty_pred``: argmax of the golden / faulty logits (int64);
    ``golden_loss`` / ``faulty_loss``: cross-entropy with the label; ``delta_loss``: their absolute
    difference; ``top2_diff``: the golden model's softmax margin ``(p1 - p2) * 100`` (float32);
    ``nonfinite``: the faulty logits hold Inf or NaN; ``masked``: the fault changed no bit of any
    tensor for this pair (a stuck bit already at its value, a bit-error trial that drew nothing),
    so its outputs are the golden ones. A single flip always changes its bit: never masked.
    """

    golden_pred: torch.Tensor
    faulty_pred: torch.Tensor
    golden_loss: torch.Tensor
    faulty_loss: torch.Tensor
    delta_loss: torch.Tensor
    top2_diff: torch.Tensor
    nonfinite: torch.Tensor
    masked: torch.Tensor

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "golden_pred", "faulty_pred", "golden_loss", "faulty_loss", "delta_loss", "top2_diff", "nonfinite", "masked",
    )  # fmt: skip
    DTYPES: ClassVar[dict[str, torch.dtype]] = {
        "golden_pred": torch.int64, "faulty_pred": torch.int64, "golden_loss": torch.float32,
        "faulty_loss": torch.float32, "delta_loss": torch.float32, "top2_diff": torch.float32,
        "nonfinite": torch.bool, "masked": torch.bool,
    }  # fmt: skip

    @classmethod
    def empty(cls, *shape: int) -> Outcomes:
        """Outcomes of ``shape`` pairs to fill in: masked set (a pair no edit reached is golden)."""
        return cls(**{k: (torch.ones if k == "masked" else torch.zeros)(shape, dtype=d) for k, d in cls.DTYPES.items()})

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.golden_pred.shape)

    def __len__(self) -> int:
        return len(self.golden_pred)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Column name -> tensor, in ``COLUMNS`` order."""
        return {name: getattr(self, name) for name in self.COLUMNS}

    def __eq__(self, other: object) -> bool:
        """Equal shapes and values in every column (NaN equal to NaN)."""
        if not isinstance(other, Outcomes):
            return NotImplemented
        for name, mine in self.tensors().items():
            theirs = getattr(other, name)
            if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
                return False
            same = mine == theirs
            if mine.is_floating_point():
                same |= mine.isnan() & theirs.isnan()
            if not bool(same.all()):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  (mutable tensors)

    def map(self, fn: Any) -> Outcomes:
        """The same outcomes with ``fn`` applied to every column (a view, a selection, a reshape)."""
        return dataclasses.replace(self, **{k: fn(v) for k, v in self.tensors().items()})

    def columns(self) -> dict[str, np.ndarray]:
        """Column name -> flat numpy array (pairs in row-major order), as records store them."""
        return {k: v.detach().cpu().reshape(-1).numpy() for k, v in self.tensors().items()}

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row a pair (row-major over the shape), one column each field."""
        import pandas as pd

        return pd.DataFrame(self.columns(), columns=list(self.COLUMNS))
