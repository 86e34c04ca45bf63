"""Every fast path of ``FaultEvaluator`` matches ``hs.inject`` on the same faults.

As in test_engine_inject.py, formats other than fp32 run float64 models so that batched and
replayed passes cannot round across a boundary of the format differently.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import headstrong as hs
from headstrong.engine import FaultEvaluator
from headstrong.engine.split import PrunedReplay, SplitModel
from headstrong.faults import FaultSet, sample_neuron_faults, sample_weight_faults

from _models import build, images, one_thread  # noqa: F401  (autouse fixture)
from _reference import reference_golden

LAYERS = {
    "cnn": (["conv1", "bn1", "conv2", "gn", "conv3", "fc1", "ln", "fc2"], ["conv1", "conv2", "conv3", "bn1", "fc1", "fc2"]),
    "resnet18": (["conv1", "layer1.0.conv2", "layer1.0.bn2", "layer2.0.downsample.1", "layer4.1.bn2", "fc"],
                 ["conv1", "layer2.0.downsample.0", "layer3.0.conv1", "layer1.1.bn1", "fc"]),
    "mobilenet": (["features.0.0", "features.1.block.0.0", "features.1.block.1.fc2", "features.3.block.2.1", "classifier.3"],
                  ["features.1.block.0.0", "features.2.block.1.0", "features.1.block.1.fc1", "classifier.0", "classifier.3"]),
    "vit": (["patch_embed.proj", "blocks.0.norm1", "blocks.0.attn.qkv", "blocks.1.mlp.fc1", "norm", "head"],
            ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.1.norm2", "head"]),
}


def make_faults(ev: FaultEvaluator, arch: str, n_images: int, seed: int = 0) -> FaultSet:
    """Per layer, one fault per image (sample column set) with bits from every region."""
    g = torch.Generator().manual_seed(seed)
    info = ev.layer_info.set_index("layer")
    neuron, weight = LAYERS[arch]
    bits = ev.fmt.bits
    sets = []
    for layer in neuron:
        row = {"layer": layer, "output_shape": info.loc[layer, "output_shape"]}
        sets.append(sample_neuron_faults(row, n_images, bits, g))
    for layer in weight:
        row = {"layer": layer, "weight_shape": info.loc[layer, "weight_shape"]}
        sets.append(sample_weight_faults(row, n_images, bits, g))
    faults = FaultSet.concat(sets)
    top = faults.bit.clone()
    top[::3] = bits - 2  # plenty of large (exponent / high magnitude) flips
    return FaultSet(faults.kind, faults.layer, faults.index, top, torch.arange(len(faults)) % n_images)


def expected(model, x, y, faults, fmt, range_detector=True):
    """Outcomes from hs.inject: fault i on image faults.sample[i]."""
    logits = hs.inject(model, x, faults, fmt=fmt, range_detector=range_detector)
    rows = faults.sample
    picked = logits[torch.arange(len(faults)), rows]
    kinds = faults.kind
    golden = {k: reference_golden(model, x, fmt, k) for k in set(kinds)}
    golden = torch.stack([golden[k][r] for k, r in zip(kinds, rows.tolist())])
    g_loss = F.cross_entropy(golden.float(), y[rows], reduction="none")
    f_loss = F.cross_entropy(picked.float(), y[rows], reduction="none")
    return {"faulty_pred": picked.argmax(1), "golden_pred": golden.argmax(1), "golden_loss": g_loss,
            "faulty_loss": f_loss, "delta_loss": (f_loss - g_loss).abs(),
            "nonfinite": ~torch.isfinite(picked).all(1)}


def assert_outcomes_match(got: hs.engine.Outcomes, want: dict, rtol: float) -> None:
    assert torch.equal(got.nonfinite, want["nonfinite"])
    assert torch.equal(got.golden_pred, want["golden_pred"])
    assert torch.equal(got.faulty_pred, want["faulty_pred"])
    for key in ("golden_loss", "faulty_loss", "delta_loss"):
        a, b = getattr(got, key).double(), want[key].double()
        fin = torch.isfinite(b)
        assert torch.equal(fin, torch.isfinite(a)), key
        assert torch.allclose(a[fin], b[fin], rtol=rtol, atol=rtol), (key, (a - b).abs().max())


CASES = [("cnn", "fp32"), ("cnn", "bf16"), ("cnn", "int8"), ("resnet18", "fp32"), ("resnet18", "int8"),
         ("mobilenet", "fp32"), ("mobilenet", "bf16"), ("vit", "fp32"), ("vit", "bfp8_16")]


RUNS = [(a, f, split) for a, f in CASES for split in ("auto", "hooks")]
RUNS += [(a, f, "no-prune") for a, f in (("cnn", "int8"), ("resnet18", "fp32"), ("vit", "fp32"))]


@pytest.mark.parametrize(("arch", "fmt", "split"), RUNS)
def test_fast_paths_match_inject(arch: str, fmt: str, split: str) -> None:
    model = build(arch)
    x, y = images(4)
    if fmt != "fp32":
        model, x = model.double(), x.double()
    prune = split != "no-prune"
    ev = FaultEvaluator(model, fmt=fmt, split="auto" if split == "no-prune" else split, prune=prune)
    ev.profile([(x, y)])
    faults = make_faults(ev, arch, len(x))
    got = ev.evaluate(x, y, faults)
    want = expected(model, x, y, faults, fmt)
    assert_outcomes_match(got, want, rtol=1e-4 if fmt == "fp32" else 1e-9)
    assert isinstance(got, hs.engine.Outcomes) and not bool(got.masked.any())  # a flip always changes its bit
    neuron, weight = LAYERS[arch]
    if split == "hooks":
        assert set(ev.paths.values()) == {"hooks"}
    else:
        assert ev.split_error is None
        assert ev.paths[("neuron", neuron[-1])] == "analytic"
        assert ev.paths[("weight", weight[-1])] == "analytic"
        assert ev.paths[("weight", weight[0])] == "delta"
        assert ev.paths[("neuron", neuron[1])] == "fx"
        assert bool(ev.replayed_pairs) == prune  # pruned replays ran exactly when asked for


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_chunk_size_does_not_change_results(chunk: int | None) -> None:
    model = build("resnet18")
    x, y = images(5)
    ev = FaultEvaluator(model, chunk_size=chunk)
    ev.profile([x])
    faults = make_faults(ev, "resnet18", len(x), seed=3)
    got = ev.evaluate(x, y, faults)
    want = expected(model, x, y, faults, "fp32")
    assert_outcomes_match(got, want, rtol=1e-4)


def test_one_fault_per_sample_without_sample_column() -> None:
    model = build("cnn")
    x, y = images(6)
    ev = FaultEvaluator(model, range_detector=False)
    ev.profile([x[:3], x[3:]])  # profiles cover every batch
    faults = FaultSet("neuron", "conv2", torch.arange(6) * 37, [30, 22, 31, 23, 30, 0])
    got = ev.evaluate(x, y, faults)
    assert ev.last_path == "fx"
    want = expected(model, x, y, faults.with_sample(torch.arange(6)), "fp32", range_detector=False)
    assert_outcomes_match(got, want, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["fp32", "fp16"])
def test_all_pairs_in_last_layer_match_inject(fmt: str) -> None:
    model = build("resnet18")
    x, y = images(5)
    if fmt != "fp32":
        model, x = model.double(), x.double()
    ev = FaultEvaluator(model, fmt=fmt)
    ev.profile([x])
    g = torch.Generator().manual_seed(1)
    faults = sample_weight_faults({"layer": "fc", "weight_shape": (10, 512)}, 9, ev.fmt.bits, g)
    got = ev.evaluate_all_pairs(x, y, faults)
    assert ev.last_path == "analytic"
    logits = hs.inject(model, x, faults, fmt=fmt)
    f_loss = F.cross_entropy(logits.reshape(-1, 10).float(), y.repeat(9), reduction="none").view(9, 5)
    assert got.faulty_loss.shape == (9, 5)
    assert torch.equal(got.faulty_pred, logits.argmax(2))
    assert torch.equal(got.nonfinite, ~torch.isfinite(logits).all(2))
    fin = torch.isfinite(f_loss)
    assert torch.allclose(got.faulty_loss[fin].double(), f_loss[fin].double(), rtol=1e-4, atol=1e-4)
    # the general path (a layer with a network after it) gives the same as evaluate per pair
    conv = sample_weight_faults({"layer": "layer4.1.conv2", "weight_shape": (512, 512, 3, 3)}, 2, ev.fmt.bits, g)
    pairs = ev.evaluate_all_pairs(x, y, conv)
    logits = hs.inject(model, x, conv, fmt=fmt)
    f_loss = F.cross_entropy(logits.reshape(-1, 10).float(), y.repeat(2), reduction="none").view(2, 5)
    assert torch.allclose(pairs.faulty_loss.double(), f_loss.double(), rtol=1e-4, atol=1e-4)


def test_golden_is_cached_per_batch_and_refreshed_for_new_images() -> None:
    model = build("cnn")
    x, y = images(4)
    ev = FaultEvaluator(model)
    ev.profile([x])
    faults = FaultSet("neuron", "gn", [1, 2, 3, 4], [30, 30, 30, 30])
    first = ev.evaluate(x, y, faults)
    calls = []  # conv1 runs before gn: only in a golden pass, never in a replay
    model.conv1.register_forward_hook(lambda *a: calls.append(1))
    again = ev.evaluate(x.clone(), y.clone(), faults)  # equal images: the cache holds
    assert calls == [] and first == again
    x2, y2 = images(4, seed=5)
    other = ev.evaluate(x2, y2, faults)
    assert calls == [1]
    ev.evaluate(x, y, faults)  # the first batch is still cached (several batches fit)
    assert calls == [1]
    want = expected(model, x2, y2, faults.with_sample(torch.arange(4)), "fp32")
    assert_outcomes_match(other, want, rtol=1e-4)
    golden = ev.golden(x2, y2)
    with torch.no_grad():
        logits = model(x2)
    assert torch.equal(golden.golden_pred, logits.argmax(1))
    probs = torch.softmax(logits, 1).sort(1, descending=True).values
    assert torch.allclose(golden.top2_diff, (probs[:, 0] - probs[:, 1]) * 100, atol=1e-4)


def test_evaluator_leaves_model_untouched() -> None:
    model = build("resnet18").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = images(3)
    ev = FaultEvaluator(model, fmt="int8")
    ev.profile([x])
    ev.evaluate(x, y, make_faults(ev, "resnet18", 3))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_layer_info_columns() -> None:
    ev = FaultEvaluator(build("cnn"))
    info = ev.profile([images(2)[0]])
    assert list(info.columns) == ["layer", "type", "output_shape", "weight_shape", "n_neurons", "n_weights",
                                  "macs", "out_max_abs", "weight_max_abs"]
    row = info.set_index("layer").loc["conv2"]
    assert row["output_shape"] == (8, 16, 16) and row["weight_shape"] == (8, 4, 3, 3)
    assert row["macs"] == 8 * 16 * 16 * 4 * 9 and row["n_weights"] == 8 * 4 * 9
    assert list(info["layer"]) == hs.injectable_layers(ev.model)


def test_evaluator_errors_name_the_problem() -> None:
    model = build("cnn")
    x, y = images(2)
    ev = FaultEvaluator(model)
    faults = FaultSet("neuron", "conv1", [0, 1], [30, 30])
    with pytest.raises(ValueError, match="profile"):
        ev.evaluate(x, y, faults)
    ev.profile([x])
    with pytest.raises(ValueError, match="one fault per image"):
        ev.evaluate(x, y, faults[:1])
    with pytest.raises(ValueError, match="not profiled"):
        ev.evaluate(x, y, FaultSet("neuron", "pool", [0, 1], [1, 1]))
    with pytest.raises(ValueError, match="labels"):
        ev.evaluate(x, y[:1], faults)
    with pytest.raises(ValueError, match="split"):
        FaultEvaluator(model, split="magic")
    extra = FaultEvaluator(model, layers=["pool"])
    extra.profile([x])
    out = extra.evaluate(x, y, FaultSet("neuron", "pool", [0, 1], [30, 30]))
    assert extra.last_path == "fx" and len(out.delta_loss) == 2


def test_pruning_drops_masked_faults_and_changes_nothing() -> None:
    model = build("resnet18")
    x, y = images(8)
    results = []
    for prune in (True, False):
        ev = FaultEvaluator(model, fmt="fp32", prune=prune)
        ev.profile([x])
        faults = sample_neuron_faults({"layer": "layer1.0.conv1", "output_shape": (64, 8, 8)}, 8, 32,
                                      torch.Generator().manual_seed(7))
        results.append(ev.evaluate(x, y, faults))
        assert bool(ev.replayed_pairs) == prune
        if prune:
            split = SplitModel(model, hs.injectable_layers(model))
            replay = PrunedReplay(split, split.cut("layer1.0.conv1"))
            # rows equal to the golden values leave at once; rows carrying a large change stay
            with torch.no_grad():
                _, values = split.capture(x, split.value_nodes)
            start = values[replay.node].clone()
            start[:4, :, 2, 2] += 1e3
            out, alive = replay.run(start, torch.arange(8), values)
            assert alive.tolist() == [0, 1, 2, 3] and out.shape == (4, 10)
    for key, value in results[0].tensors().items():
        assert torch.allclose(value.double(), getattr(results[1], key).double(), rtol=1e-5, atol=1e-5), key


def test_golden_cache_keeps_within_its_byte_budget() -> None:
    model = build("cnn")
    (x, y), (x2, y2) = images(4), images(4, seed=5)
    ev = FaultEvaluator(model, cache_bytes=1)  # room for the newest batch only
    ev.profile([x])
    faults = FaultSet("neuron", "gn", [1, 2, 3, 4], [30, 30, 30, 30])
    first = ev.evaluate(x, y, faults)
    ev.evaluate(x2, y2, faults)
    calls = []  # conv1 runs before gn: only in a golden pass
    model.conv1.register_forward_hook(lambda *a: calls.append(1))
    again = ev.evaluate(x, y, faults)
    assert calls == [1]  # the first batch was dropped to keep within the budget
    assert first == again


class Branchy(torch.nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.mean() > -1e9:
            h = torch.relu(h)
        return self.fc(h.mean((2, 3)))


def test_untraceable_model_falls_back_to_hooks() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    x, y = images(4)
    ev = FaultEvaluator(model)
    assert ev.split_error is not None  # auto: tracing failed, hooks it is
    ev.profile([x])
    faults = FaultSet(["neuron", "neuron", "weight", "weight"], ["conv", "conv", "fc", "conv"],
                      [5, 300, 17, 40], [30, 29, 30, 28], [0, 1, 2, 3])
    got = ev.evaluate(x, y, faults)
    assert set(ev.paths.values()) == {"hooks"}
    assert_outcomes_match(got, expected(model, x, y, faults, "fp32"), rtol=1e-4)
    with pytest.raises(ValueError, match="cannot be split with torch.fx"):
        FaultEvaluator(model, split="fx")
