"""Range restriction: bounds exactly where promised, clean outputs unchanged with bounds="max",
the caller's model untouched, original layer names kept, checkpoints that reload and inject."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import headstrong as hs
from headstrong.train import load_checkpoint, save_checkpoint

from _harden import campaign_and_exact_losses
from _models import build, images, one_thread  # noqa: F401  (autouse fixture)


class HandBuilt(nn.Module):
    """Linear -> ReLU module -> Linear -> functional GELU -> Linear: two activation sites."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(3, 3)
        self.fc3 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(3, 4))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.eye(3))
            self.fc2.bias.zero_()
            self.fc3.weight.copy_(torch.ones(2, 3))
            self.fc3.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(self.act(self.fc1(x)))))


class Untraceable(nn.Module):
    """A data-dependent branch: torch.fx cannot trace it, hooks must do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x))
        if h.sum() > -1e9:  # always true, but fx cannot know
            h = h * 1.0
        return self.fc(h.mean((2, 3)))


def _builtin(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = hs.build_baseline(name, 10, 3)
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.1)
    return model.eval()


MODELS = {
    "cnn-small": lambda: _builtin("cnn-small"),
    "resnet8-w16": lambda: _builtin("resnet8-w16"),
    "resnet18": lambda: build("resnet18"),
    "vit": lambda: build("vit"),
}


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return images(12, seed=3)[0]


def test_hand_built_bounds_exactly_where_promised() -> None:
    model = HandBuilt().eval()
    hard = hs.harden.range_restrict(model, bounds={"act": (0.0, 1.0), "gelu": (-0.1, 0.5)})
    sites = hard.hardening[0]["sites"]
    assert set(sites) == {"act", "gelu"}
    x = torch.tensor([[3.0, 0.4, -2.0, 9.0]])
    # fc1 = x[:3]; relu then clamp to [0, 1]: [1, 0.4, 0]; gelu of that, clamped to [-0.1, 0.5]
    after_act = torch.tensor([[1.0, 0.4, 0.0]])
    expected = F.gelu(after_act).clamp(-0.1, 0.5).sum(1, keepdim=True).expand(1, 2)
    torch.testing.assert_close(hard(x), expected)
    zero = hs.harden.range_restrict(model, bounds={"act": (0.0, 1.0)}, mode="zero")
    after = torch.tensor([[0.0, 0.4, 0.0]])  # 3.0 is outside: set to 0
    torch.testing.assert_close(zero(x), F.gelu(after).sum(1, keepdim=True).expand(1, 2))
    # NaN becomes 0 in both modes
    nan = torch.tensor([[math.nan, 0.4, 0.5, 0.0]])
    for hardened in (hard, zero):
        assert torch.isfinite(hardened(nan)).all()


def test_where_layers_bounds_every_injectable_layer() -> None:
    model = HandBuilt().eval()
    x = torch.randn(20, 4)
    hard = hs.harden.range_restrict(model, x, where="layers")
    assert set(hard.hardening[0]["sites"]) == {"fc1", "fc2", "fc3"}
    torch.testing.assert_close(hard(x), model(x), rtol=0, atol=0)
    low = torch.tensor(hard.hardening[0]["sites"]["fc1"]["low"])
    torch.testing.assert_close(low, model.fc1(x).min())


def test_activations_and_logits(data: torch.Tensor) -> None:
    model = HandBuilt().eval()
    hard = hs.harden.range_restrict(model, bounds={"act": (0.0, 1.0), "logits": (-0.5, 0.5)}, where="activations+logits")
    x = torch.tensor([[3.0, 0.4, -2.0, 9.0]])
    expected = F.gelu(torch.tensor([[1.0, 0.4, 0.0]])).sum(1, keepdim=True).expand(1, 2).clamp(-0.5, 0.5)
    torch.testing.assert_close(hard(x), expected)
    for arch in ("cnn-small", "vit"):
        net = MODELS[arch]()
        bounded = hs.harden.range_restrict(net, data, where="activations+logits")
        assert "logits" in bounded.hardening[0]["sites"]
        assert torch.equal(bounded(data), net(data))
    plain = Untraceable().eval()
    hooked = hs.harden.range_restrict(plain, data, where="activations+logits")
    assert set(hooked.hardening[0]["sites"]) == {"act", "logits"}
    assert torch.equal(hooked(data), plain(data))
    tight = hs.harden.range_restrict(plain, bounds={"logits": (0.0, 0.0)}, where="activations+logits")
    assert torch.equal(tight(data), torch.zeros_like(plain(data)))


@pytest.mark.parametrize("arch", list(MODELS))
def test_max_bounds_keep_clean_outputs_and_names(arch: str, data: torch.Tensor) -> None:
    model = MODELS[arch]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hard = hs.harden.range_restrict(model, data, bounds="max")
    assert hard is not model
    assert torch.equal(hard(data), model(data))
    per_channel = hs.harden.range_restrict(model, data, per_channel=True)
    assert torch.equal(per_channel(data), model(data))
    assert hs.injectable_layers(hard) == hs.injectable_layers(model)
    assert hs.injectable_layers(hard, data[:2]) == hs.injectable_layers(model, data[:2])
    # the caller's model: same values, and no tensor shared with the hardened one
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    ours = {t.data_ptr() for t in model.state_dict().values() if t.numel()}
    assert not ours & {t.data_ptr() for t in hard.state_dict().values() if t.numel()}
    assert not getattr(model, "hardening", None)


def test_restriction_bounds_a_fault(data: torch.Tensor) -> None:
    model = MODELS["cnn-small"]()
    hard = hs.harden.range_restrict(model, data)
    layer = hs.injectable_layers(model)[0]
    faults = hs.FaultSet.from_records([{"kind": "neuron", "layer": layer, "index": 5, "bit": 30}])
    plain = hs.inject(model, data, faults, range_detector=False)
    bounded = hs.inject(hard, data, faults, range_detector=False)
    golden = model(data)
    assert (plain - golden).abs().max() > 1e6  # an exponent flip runs away...
    assert (bounded - golden).abs().max() < 1e3  # ...and the next bound stops it


def test_quantile_bounds_are_tighter(data: torch.Tensor) -> None:
    model = MODELS["cnn-small"]()
    full = hs.harden.bounds_table(hs.harden.range_restrict(model, data))
    tight = hs.harden.bounds_table(hs.harden.range_restrict(model, data, bounds="q0.9"))
    assert all(t["high"] <= f["high"] for t, f in zip(tight, full))
    assert any(t["high"] < f["high"] for t, f in zip(tight, full))


def test_hooks_when_fx_cannot_trace(data: torch.Tensor) -> None:
    model = Untraceable().eval()
    hard = hs.harden.range_restrict(model, data)
    assert hard.hardening[0]["tracer"] == "hooks"
    assert torch.equal(hard(data), model(data))
    fixed = hs.harden.range_restrict(model, bounds={"act": (0.0, 0.01)})
    assert not torch.equal(fixed(data), model(data))
    with pytest.raises(ValueError, match="where='activations'"):
        hs.harden.range_restrict(model, data, where="layers")


def test_checkpoint_round_trip_inject_and_ra(tmp_path, data: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", 10, 3).eval()
    hard = hs.harden.range_restrict(model, data, bounds="q0.99", per_channel=True, mode="zero")
    path = save_checkpoint(tmp_path / "hard.pt", hard)
    loaded, _ = load_checkpoint(path)
    assert loaded.hardening == hard.hardening
    assert torch.equal(loaded(data), hard(data))
    faults = hs.FaultSet.from_records([
        {"kind": "neuron", "layer": "backbone.stage2.0", "index": 17, "bit": 30},
        {"kind": "weight", "layer": "head", "index": 3, "bit": 29},
    ])
    torch.testing.assert_close(hs.inject(loaded, data, faults), hs.inject(hard, data, faults))
    labels = loaded(data).argmax(1)
    est = hs.ra.estimate(loaded, (data, labels), fmt="fp16", estimator="uniform", samples=40, seed=0)
    assert 0.0 <= est.ra <= 1.0
    with pytest.raises(ValueError, match="omit model="):
        load_checkpoint(path, model=hs.build_baseline("cnn-small", 10, 3))


@pytest.mark.parametrize("backbone", ["cnn-small", "resnet8-w16", "resnet18", "timm:convnext_atto"])
def test_checkpoint_round_trip_by_name(tmp_path, backbone: str, data: torch.Tensor) -> None:
    """Every backbone family by name: a hardened checkpoint reloads and injects like the original."""
    torch.manual_seed(0)
    model = hs.build_baseline(backbone, 10, 3).eval()
    hard = hs.harden.duplicate(hs.harden.range_restrict(model, data[:6], where="activations+logits"), ["head"])
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "hard.pt", hard))
    assert torch.equal(loaded(data[:4]), hard(data[:4]))
    assert hs.injectable_layers(loaded) == hs.injectable_layers(model)
    layer = hs.injectable_layers(model)[1]
    faults = hs.FaultSet.from_records([{"kind": "neuron", "layer": layer, "index": 3, "bit": 30},
                                       {"kind": "neuron", "layer": "head", "index": 2, "bit": 30}])
    torch.testing.assert_close(hs.inject(loaded, data[:4], faults), hs.inject(hard, data[:4], faults))


def test_campaign_on_hardened_model_sees_original_layers(tmp_path, data: torch.Tensor) -> None:
    model = MODELS["cnn-small"]()
    hard = hs.harden.range_restrict(model, data)
    labels = model(data).argmax(1)
    spec = hs.CampaignSpec(kind="neuron", layers="all", fmt="fp32", n_faults=8, range_detector=False, seed=0)
    result = hs.run_campaign(hard, (data, labels), spec, out=tmp_path / "run", progress=False)
    assert list(result.per_layer["layer"]) == hs.injectable_layers(model)


def test_bad_input(data: torch.Tensor) -> None:
    model = MODELS["cnn-small"]()
    with pytest.raises(ValueError, match="empty"):
        hs.harden.range_restrict(model, data[:0])
    with pytest.raises(ValueError, match="no finite value"):
        hs.harden.range_restrict(model, torch.full_like(data, math.nan))
    no_act = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="where='layers'"):
        hs.harden.range_restrict(no_act, data)
    for q in ("q0", "q1.5", "qx"):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            hs.harden.range_restrict(model, data, bounds=q)
    with pytest.raises(ValueError, match="clamp, zero"):
        hs.harden.range_restrict(model, data, mode="wrap")
    with pytest.raises(ValueError, match="activations, layers"):
        hs.harden.range_restrict(model, data, where="everywhere")
    with pytest.raises(ValueError, match="unknown site"):
        hs.harden.range_restrict(model, bounds={"nope": (0, 1)})
    hard = hs.harden.range_restrict(model, data)
    assert torch.equal(hs.harden.range_restrict(hard, data)(data), hard(data))  # same options: a copy
    with pytest.raises(ValueError, match="already range-restricted"):
        hs.harden.range_restrict(hard, data, mode="zero")


def test_campaign_on_hardened_model_matches_exact_injection(tmp_path, data: torch.Tensor) -> None:
    """The engine's fast paths (split, cached golden values, pruned replays) on a model whose
    bounds work in place give what exact injection gives, also where test images leave the
    profiled range."""
    model = MODELS["cnn-small"]()
    hard = hs.harden.range_restrict(model, data[:3])  # narrow bounds: the other images exceed them
    fast, exact, _ = campaign_and_exact_losses(hard, data, hard(data).argmax(1), tmp_path / "run")
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_profiling_data_in_any_form(data: torch.Tensor) -> None:
    model = MODELS["cnn-small"]()
    labels = torch.zeros(len(data), dtype=torch.long)
    pairs = torch.utils.data.TensorDataset(data, labels)
    forms = [(data, labels), pairs, torch.utils.data.DataLoader(pairs, batch_size=5)]
    expected = hs.harden.bounds_table(hs.harden.range_restrict(model, data, batch_size=4))
    for form in forms:
        assert hs.harden.bounds_table(hs.harden.range_restrict(model, form)) == expected
    with pytest.raises(ValueError, match="floating-point"):
        hs.harden.range_restrict(model, (data * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="DataLoader"):
        hs.harden.range_restrict(model, 3)
