"""The text-guided classifier and its baseline: the same trunk, two heads.

Both models are plain ``nn.Module`` trees with a ``backbone`` (features) and a ``head`` (the
classification Linear, always the last injectable layer); the text-guided one adds a
``projection`` Linear to the text width D between them. Forward passes use torch ops only, with
no data-dependent Python branches, so torch.fx can split them for fault injection.
``classifier_name`` names the classification layer for reports ("head" in both).
``spec`` holds what is needed to rebuild the model by name (see ``headstrong.train``).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from headstrong.textguided.backbones import create_features

__all__ = ["TextGuidedClassifier", "BaselineClassifier", "build_baseline", "INITS", "random_unit_rows", "simplex_etf"]

INITS = ("text", "name", "random", "random-linear", "etf")
# Inits that need only the head's shape, not class embeddings.
SHAPE_ONLY_INITS = ("random", "random-linear", "etf")
CLIP_LOGIT_SCALE = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = math.log(100.0)


def random_unit_rows(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Gaussian rows scaled to unit norm: the ``random`` init of the ablation."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(num_classes, dim, generator=generator)
    return F.normalize(rows, dim=1)


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """[C, D] rows of a simplex equiangular tight frame: unit norm, every pair at cosine
    -1/(C-1), the best-separated C directions (Papyan et al., PNAS 2020: the geometry the
    classifier of a network trained to zero loss collapses to). Built in the (C-1)-dimensional
    subspace orthogonal to the all-ones vector and placed in D dimensions by a random
    orthonormal map seeded by ``seed``; needs D >= C - 1."""
    if num_classes < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes; got {num_classes}")
    if dim < num_classes - 1:
        raise ValueError(f"a simplex ETF of {num_classes} classes needs embed_dim >= {num_classes - 1}; got {dim}")
    c = num_classes
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c  # columns: the centred standard basis
    basis, _ = torch.linalg.qr(centred)  # first C-1 columns span the space orthogonal to ones
    coords = basis[:, : c - 1].T @ centred  # [C-1, C]
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(dim, c - 1, generator=generator, dtype=torch.float64))
    rows = (rotation @ coords).T  # [C, D]
    return F.normalize(rows, dim=1).float()


class TextGuidedClassifier(nn.Module):
    """backbone -> projection to D -> unit-normalise -> head (rows = class embeddings) -> x exp(scale).

    ``class_embeddings`` [C, D] initialise the head's rows (renormalised) for ``init="text"`` and
    ``init="name"`` (the caller encodes "a photo of a {class}." for the latter). ``random`` draws
    random unit rows, ``random-linear`` keeps nn.Linear's own init and ``etf`` sets the rows to a
    simplex equiangular tight frame (``simplex_etf``); these only need the shape, so
    ``class_embeddings`` may be None with ``num_classes`` and ``embed_dim`` given.
    ``freeze_head`` keeps the head's rows fixed; the logit scale is clamped at ``max_logit_scale``
    (ln 100 as in CLIP; None for no clamp).
    """

    classifier_name = "head"

    def __init__(
        self,
        backbone: str | nn.Module,
        class_embeddings: Optional[torch.Tensor] = None,
        in_chans: int = 3,
        *,
        init: str = "text",
        num_classes: Optional[int] = None,
        embed_dim: Optional[int] = None,
        small_input: bool = False,
        freeze_head: bool = False,
        max_logit_scale: Optional[float] = CLIP_MAX_LOGIT_SCALE,
        logit_scale_init: float = CLIP_LOGIT_SCALE,
        num_features: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
        rows, num_classes, embed_dim = _check_embeddings(class_embeddings, init, num_classes, embed_dim)
        self.backbone, width = create_features(backbone, in_chans, small_input, num_features)
        self.projection = nn.Linear(width, embed_dim)
        self.head = nn.Linear(embed_dim, num_classes, bias=False)
        with torch.no_grad():
            if init in ("text", "name"):
                self.head.weight.copy_(F.normalize(rows.float(), dim=1))
            elif init == "random":
                self.head.weight.copy_(random_unit_rows(num_classes, embed_dim, seed))
            elif init == "etf":
                self.head.weight.copy_(simplex_etf(num_classes, embed_dim, seed))
        self.head.weight.requires_grad_(not freeze_head)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.max_logit_scale = float("inf") if max_logit_scale is None else float(max_logit_scale)
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.spec: dict[str, Any] = {
            "kind": "text", "backbone": backbone if isinstance(backbone, str) else None,
            "in_chans": in_chans, "num_classes": self.num_classes, "embed_dim": self.embed_dim,
            "init": init, "small_input": small_input, "freeze_head": freeze_head,
            "max_logit_scale": max_logit_scale, "logit_scale_init": float(logit_scale_init),
            "num_features": num_features,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings in the text space, [N, D]."""
        return F.normalize(self.projection(self.backbone(x)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.forward_features(x))
        return logits * self.logit_scale.clamp(max=self.max_logit_scale).exp()


def _check_embeddings(
    rows: Optional[torch.Tensor], init: str, num_classes: Optional[int], embed_dim: Optional[int]
) -> tuple[Optional[torch.Tensor], int, int]:
    """``(rows or None, num_classes, embed_dim)``; rows given to a shape-only init give the shape."""
    if rows is not None and init in SHAPE_ONLY_INITS:
        rows = torch.as_tensor(rows)  # only its shape matters
        if rows.ndim == 2:
            num_classes, embed_dim = num_classes or rows.shape[0], embed_dim or rows.shape[1]
        rows = None
    if rows is None:
        if init in ("text", "name"):
            raise ValueError(f"init={init!r} needs class_embeddings [num_classes, D]; got None")
        if not num_classes or not embed_dim:
            raise ValueError(f"init={init!r} without class_embeddings needs num_classes and embed_dim")
        if init == "etf" and embed_dim < num_classes - 1:
            raise ValueError(f"init='etf' needs embed_dim >= num_classes - 1 = {num_classes - 1}; got {embed_dim}")
        return None, int(num_classes), int(embed_dim)
    rows = torch.as_tensor(rows)
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] < 1:
        raise ValueError(f"class_embeddings must be [num_classes >= 2, D]; got shape {tuple(rows.shape)}")
    if num_classes is not None and num_classes != rows.shape[0]:
        raise ValueError(
            f"class_embeddings has {rows.shape[0]} rows but num_classes={num_classes}; "
            f"give one embedding per class"
        )
    if not torch.isfinite(rows).all() or (rows.norm(dim=1) == 0).any():
        raise ValueError("class_embeddings has a zero or non-finite row; every class needs a direction")
    return rows, int(rows.shape[0]), int(rows.shape[1])


class BaselineClassifier(nn.Module):
    """The same backbone with its usual C-way Linear (with bias), named ``head``; ``freeze_head``
    keeps that Linear at its initialisation (weight and bias)."""

    classifier_name = "head"

    def __init__(
        self,
        backbone: str | nn.Module,
        num_classes: int,
        in_chans: int = 3,
        *,
        small_input: bool = False,
        num_features: Optional[int] = None,
        freeze_head: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {num_classes}")
        self.backbone, width = create_features(backbone, in_chans, small_input, num_features)
        self.head = nn.Linear(width, num_classes)
        self.head.requires_grad_(not freeze_head)
        self.num_classes = int(num_classes)
        self.spec: dict[str, Any] = {
            "kind": "baseline", "backbone": backbone if isinstance(backbone, str) else None,
            "in_chans": in_chans, "num_classes": self.num_classes, "small_input": small_input,
            "num_features": num_features, "freeze_head": freeze_head,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_baseline(
    backbone: str | nn.Module,
    num_classes: int,
    in_chans: int = 3,
    *,
    small_input: bool = False,
    num_features: Optional[int] = None,
    freeze_head: bool = False,
) -> BaselineClassifier:
    """The baseline for a text-guided model: same trunk, ordinary Linear classifier."""
    return BaselineClassifier(backbone, num_classes, in_chans, small_input=small_input, num_features=num_features,
                              freeze_head=freeze_head)


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model (untrained weights) from its ``spec``; load the state dict afterwards."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if spec.get("backbone") is None:
        raise ValueError("this model was built from a module, not a backbone name; it cannot be rebuilt by name")
    if kind == "baseline":
        return BaselineClassifier(
            spec["backbone"], spec["num_classes"], spec["in_chans"],
            small_input=spec["small_input"], num_features=spec.get("num_features"),
            freeze_head=bool(spec.get("freeze_head", False)),
        )
    if kind == "text":
        model = TextGuidedClassifier(
            spec["backbone"], None, spec["in_chans"], init="random-linear",
            num_classes=spec["num_classes"], embed_dim=spec["embed_dim"],
            small_input=spec["small_input"], freeze_head=spec["freeze_head"],
            max_logit_scale=spec["max_logit_scale"], logit_scale_init=spec["logit_scale_init"],
            num_features=spec.get("num_features"),
        )
        model.spec["init"] = spec["init"]  # rows come from the state dict, not from an init
        return model
    raise ValueError(f"unknown model kind {kind!r} in spec; expected 'baseline' or 'text'")
