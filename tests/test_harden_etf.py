"""The ETF head (init="etf") and freeze_head on both heads."""

from __future__ import annotations

import pytest
import torch

import headstrong as hs
from headstrong.textguided.models import model_from_spec, simplex_etf

from _models import one_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize(("classes", "dim"), [(2, 1), (10, 9), (10, 64), (100, 128)])
def test_simplex_etf_geometry(classes: int, dim: int) -> None:
    rows = simplex_etf(classes, dim, seed=1)
    assert rows.shape == (classes, dim)
    gram = rows.double() @ rows.double().T
    torch.testing.assert_close(gram.diagonal(), torch.ones(classes, dtype=torch.float64), atol=1e-6, rtol=0)
    off = gram[~torch.eye(classes, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1.0 / (classes - 1)), atol=1e-6, rtol=0)
    if dim > 1:
        assert not torch.equal(rows, simplex_etf(classes, dim, seed=2))  # placed by the seed


def test_etf_head_and_freeze() -> None:
    model = hs.TextGuidedClassifier("cnn-small", None, 1, init="etf", num_classes=10, embed_dim=16,
                                    freeze_head=True, seed=3)
    torch.testing.assert_close(model.head.weight, simplex_etf(10, 16, seed=3))
    assert not model.head.weight.requires_grad
    assert model.spec["init"] == "etf"
    # rows handed to a shape-only init give only the shape (the recipe passes zeros)
    same = hs.TextGuidedClassifier("cnn-small", torch.zeros(10, 16), 1, init="etf", seed=3)
    assert torch.equal(same.head.weight, model.head.weight)
    with pytest.raises(ValueError, match="embed_dim >= num_classes - 1"):
        hs.TextGuidedClassifier("cnn-small", None, 1, init="etf", num_classes=10, embed_dim=4)


def test_frozen_baseline_head_stays_fixed_in_training() -> None:
    model = hs.build_baseline("cnn-small", 10, 1, freeze_head=True)
    head = [p.clone() for p in model.head.parameters()]
    assert not any(p.requires_grad for p in model.head.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4))
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(head, model.head.parameters()))
    rebuilt = model_from_spec(model.spec)
    assert not any(p.requires_grad for p in rebuilt.head.parameters())
