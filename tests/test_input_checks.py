"""Inputs that used to be coerced silently (issue 16.7) and hyper-parameters that trained nonsense
(16.4): each is refused with one clear line, in the Python API as on the command line."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import headstrong as hs
from headstrong._checks import check_bool, check_int, check_number, parse_json
from headstrong._device import resolve_device
from headstrong.textguided import descriptions, encoders
from headstrong.train import TrainConfig

# ---------------------------------------------------------------- faults: 1.9 is not 1, True is not 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"kind": "neuron", "layer": "fc", "index": 1.9, "bit": 3}, r"index must be a whole number.*got 1\.9"),
        ({"kind": "neuron", "layer": "fc", "index": 1, "bit": True}, r"bit must be a whole number.*got True"),
        ({"kind": "weight", "layer": "fc", "index": "7", "bit": 3}, r"index must be a whole number.*got '7'"),
        ({"kind": "neuron", "layer": "fc", "index": 1, "bit": 3, "sample": 0.5}, r"sample must be a whole number"),
    ],
)
def test_fault_records_refuse_what_int_would_truncate(record: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        hs.FaultSet.from_records([record])


def test_fault_columns_refuse_booleans() -> None:
    with pytest.raises(TypeError, match="True and False are not bit positions"):
        hs.FaultSet("neuron", "fc", [1, 2], True)
    with pytest.raises(TypeError, match="would count as 1/0"):
        hs.FaultSet("neuron", "fc", [1, True], [3, 4])
    with pytest.raises(TypeError, match="must hold integers"):
        hs.FaultSet("neuron", "fc", [1.9], [3])
    exact = hs.FaultSet.from_records([{"kind": "neuron", "layer": "fc", "index": 2.0, "bit": 3}])
    assert exact.index.tolist() == [2]  # a whole number written as 2.0 is the same fault


# ---------------------------------------------------------------- descriptions


def test_a_classes_list_is_not_one_class_named_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'classes' is a list"):
        descriptions.parse({"classes": ["cat", "dog"]}, "x.json")
    path = tmp_path / "d.json"
    path.write_text('{"classes": ["cat", "dog"]}')
    with pytest.raises(ValueError, match=r"d\.json: 'classes' is a list"):
        descriptions.load(path)
    assert list(descriptions.parse({"classes": {"cat": ["small"]}}, "x").classes) == ["cat"]


def test_deeply_nested_json_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"deep\.json: JSON nested too deeply"):
        descriptions.load(path)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_json("{", "f.json", "an object")


# ---------------------------------------------------------------- the embeddings cache


@pytest.fixture()
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fast deterministic encoder; the list counts its calls."""
    calls: list[int] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return torch.stack([torch.tensor([len(t), 1.0, t.count("a") + 0.5]) for t in texts])

    monkeypatch.setattr(encoders, "_get_encoder", lambda name, device: encode)
    return calls


DESC = {"cat": ["a small animal", "whiskers"], "truck": ["a large vehicle"]}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: {"embeddings": e[:0], "classes": ["cat", "truck"]}, "shape (0, 3)"),
        (lambda e: {"embeddings": e * float("nan"), "classes": ["cat", "truck"]}, "not finite unit vectors"),
        (lambda e: {"rows": e, "classes": ["cat", "truck"]}, "no embeddings tensor"),
        (None, "unreadable"),
    ],
)
def test_a_damaged_cache_is_named_and_rebuilt(tmp_path: Path, fake_encoder: list[int], damage, problem: str) -> None:
    good = encoders.encode_classes(DESC, "minilm", cache_dir=tmp_path)
    path = encoders.cache_path(DESC, "minilm", tmp_path)
    if damage is None:
        path.write_bytes(b"half a file")
    else:
        torch.save(damage(good), path)
    with pytest.warns(UserWarning, match=f"embeddings cache {re.escape(str(path))} is damaged .*{re.escape(problem)}.*rebuilding"):
        again = encoders.encode_classes(DESC, "minilm", cache_dir=tmp_path)
    torch.testing.assert_close(again, good)
    assert len(fake_encoder) == 2  # encoded again, not loaded
    torch.testing.assert_close(torch.load(path, weights_only=True)["embeddings"], good)  # the file is whole again


def test_encoder_names_are_checked_without_loading() -> None:
    assert encoders.check_encoder("clip:ViT-B-32/openai") == "clip:ViT-B-32/openai"
    with pytest.raises(ValueError, match="unknown encoder 'bert'"):
        encoders.check_encoder("bert")
    with pytest.raises(ValueError, match="needs weights"):
        encoders.check_encoder("clip:ViT-B-32")


# ---------------------------------------------------------------- training hyper-parameters (16.4)


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("lr", math.nan, ValueError, "lr must be a finite number"),
        ("lr", math.inf, ValueError, "lr must be a finite number"),
        ("lr", -0.1, ValueError, "lr must be above 0"),
        ("lr", "fast", TypeError, "lr must be a number"),
        ("weight_decay", -1.0, ValueError, "weight_decay must be at least 0"),
        ("weight_decay", math.nan, ValueError, "weight_decay must be a finite number"),
        ("momentum", -3.0, ValueError, r"momentum must be in \[0, 1\)"),
        ("momentum", 1.0, ValueError, r"momentum must be in \[0, 1\)"),
        ("label_smoothing", math.nan, ValueError, "label_smoothing must be a finite number"),
        ("warmup_epochs", -1.0, ValueError, "warmup_epochs must be in"),
        ("epochs", 1.5, TypeError, "epochs must be a whole number"),
        ("batch_size", True, TypeError, "batch_size must be a whole number"),
        ("limit_train", -100, ValueError, "limit_train must be at least 1"),
        ("threads", 0, ValueError, "threads must be at least 1"),
        ("max_logit_scale", -1.0, ValueError, "max_logit_scale must be above 0"),
        ("augment", "no", TypeError, "augment must be true or false"),
        ("encoder", "bert", ValueError, "unknown encoder 'bert'"),
        ("device", "tpu", ValueError, "unknown device 'tpu'"),
    ],
)
def test_train_config_refuses_bad_hyper_parameters(field: str, value: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(**{field: value})


def test_train_config_keeps_good_values_and_normalises_their_types() -> None:
    config = TrainConfig(epochs=3.0, lr=1, weight_decay=0, limit_train=None, device="cpu")
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.lr == 1.0 and isinstance(config.lr, float)


# ---------------------------------------------------------------- devices and the shared checks


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cuda:3", available=False) == torch.device("cuda:3")
    for bad, message in (("tpu", "unknown device 'tpu'"), ("meta", "not supported")):
        with pytest.raises(ValueError, match=message):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            resolve_device("cuda")


def test_shared_checks_name_the_setting_and_the_range() -> None:
    assert check_int("n", 5, 1) == 5 and check_int("n", None, 1, none_ok=True) is None
    assert check_number("p", 0, 0, 1) == 0.0 and check_bool("flag", False) is False
    with pytest.raises(TypeError, match=r"n must be a whole number \(at least 1\); got '5' \(str\)"):
        check_int("n", "5", 1)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\); got 1"):
        check_number("p", 1, 0, 1, low_open=True, high_open=True)
    with pytest.raises(TypeError, match="flag must be true or false; got 1"):
        check_bool("flag", 1)
