"""The training recipe: both heads, every init, exact rebuild from checkpoints, resume after a
SIGKILL, the CLI, and clear errors for bad embeddings, descriptions, names and checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from headstrong.data import dataset_info, load_dataset
from headstrong.textguided import descriptions
from headstrong.textguided.encoders import encode_classes, encode_names
from headstrong.textguided.models import random_unit_rows
from headstrong.train import TrainConfig, evaluate, load_checkpoint, read_checkpoint, train
from headstrong.train import recipe

TINY = dict(dataset="fashion-mnist", backbone="cnn-small", epochs=1, batch_size=64,
            limit_train=256, limit_test=200, device="cpu", seed=0)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSTRONG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("head", ["baseline", "text"])
def test_train_then_load_checkpoint_rebuilds_the_exact_model(head: str, tmp_path: Path) -> None:
    config = TrainConfig(head=head, **TINY)
    result = train(config, tmp_path / "run", progress=False)
    assert 0 <= result.top1 <= 100 and len(result.history) == 1
    model, saved_config = load_checkpoint(result.checkpoint)
    assert saved_config == config.to_dict()
    assert type(model).__name__ == ("BaselineClassifier" if head == "baseline" else "TextGuidedClassifier")
    test = load_dataset("fashion-mnist", "test", limit=200, seed=0)
    assert evaluate(model, test) == pytest.approx(result.top1)
    saved = read_checkpoint(result.checkpoint)
    assert saved["finished"] and saved["classes"] == list(dataset_info("fashion-mnist").classes)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["top1"] == result.top1
    if head == "text":
        info = dataset_info("fashion-mnist")
        expected = encode_classes(descriptions.load("fashion-mnist", classes=info.classes), "minilm")
        torch.testing.assert_close(saved["class_embeddings"], expected)


def _expected_rows(init: str) -> torch.Tensor:
    classes = dataset_info("fashion-mnist").classes
    if init == "text":
        return encode_classes(descriptions.load("fashion-mnist", classes=classes), "minilm")
    if init == "name":
        return encode_names(classes, "minilm")
    return random_unit_rows(10, 384, seed=0)


@pytest.mark.parametrize("init", ["text", "name", "random"])
def test_each_init_reaches_the_head_and_a_frozen_head_keeps_it(init: str, tmp_path: Path) -> None:
    config = TrainConfig(head="text", init=init, freeze_head=True, **{**TINY, "limit_train": 128})
    result = train(config, tmp_path, progress=False)
    model, _ = load_checkpoint(result.checkpoint)
    torch.testing.assert_close(model.head.weight, _expected_rows(init))
    assert model.spec["init"] == init


def test_random_linear_init_trains_with_nn_linear_rows(tmp_path: Path) -> None:
    config = TrainConfig(head="text", init="random-linear", embed_dim=32, freeze_head=True,
                         **{**TINY, "limit_train": 128})
    model, _ = load_checkpoint(train(config, tmp_path, progress=False).checkpoint)
    assert model.head.weight.shape == (10, 32)
    # nn.Linear's own init: entries within 1/sqrt(fan_in), rows of norm about 0.58, not unit rows
    assert model.head.weight.abs().max() <= 32 ** -0.5
    assert model.head.weight.norm(dim=1).max() < 0.9


def test_a_finished_run_is_returned_without_training_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig(head="baseline", **TINY)
    first = train(config, tmp_path, progress=False)

    def no_data(*args, **kwargs):
        raise AssertionError("a finished run must not load data again")

    monkeypatch.setattr(recipe, "load_dataset", no_data)
    again = train(config, tmp_path, progress=False)
    assert again.top1 == first.top1 and again.history == first.history


_SCRIPT = """
import json, sys, time
import torch
torch.set_num_threads(1)
from headstrong.train import TrainConfig, recipe
config = TrainConfig(**json.loads(sys.argv[2]))
if sys.argv[3] == "pause":  # stall after each checkpoint, so the test can kill us between epochs
    real = recipe.save_checkpoint
    def slow(*args, **kwargs):
        path = real(*args, **kwargs)
        print("saved", flush=True)
        time.sleep(120)
        return path
    recipe.save_checkpoint = slow
result = recipe.train(config, sys.argv[1], progress=False)
print(json.dumps({"top1": result.top1}))
"""


def _write_idx(path: Path, array) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def _run(script: Path, out: Path, config: TrainConfig, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(out), json.dumps(config.to_dict()), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path: Path) -> None:
    script = tmp_path / "run_train.py"
    script.write_text(_SCRIPT)
    # a small copy of Fashion-MNIST, so each process reads 300 images instead of 70,000
    root = tmp_path / "data"
    root.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("fashion-mnist", split, limit=300, seed=0)
        images = ds.dataset.images[ds.indices, 0].numpy()
        labels = ds.dataset.targets[ds.indices].numpy().astype("uint8")
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    config = TrainConfig(head="text", init="random", embed_dim=16, augment=True, data_root=str(root),
                         **{**TINY, "epochs": 2, "limit_train": 192})
    killed = _run(script, tmp_path / "killed", config, "pause")
    straight = _run(script, tmp_path / "straight", config, "plain")
    try:
        ckpt = tmp_path / "killed" / "model.pt"
        deadline = time.monotonic() + 240
        while not ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), killed.stderr.read() if killed.poll() is not None else "no checkpoint in time"
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        assert killed.returncode == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
    partial = read_checkpoint(ckpt)
    assert partial["epoch"] == 1 and not partial["finished"]

    resumed = _run(script, tmp_path / "killed", config, "plain")
    out_resumed, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    out_straight, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err

    a, b = read_checkpoint(ckpt), read_checkpoint(tmp_path / "straight" / "model.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["finished"]
    assert [h["epoch"] for h in a["history"]] == [1, 2]
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
    assert json.loads(out_resumed.strip().splitlines()[-1]) == json.loads(out_straight.strip().splitlines()[-1])


# ---------------------------------------------------------------- bad input


def test_class_embeddings_of_the_wrong_count_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "emb.pt"
    torch.save({"embeddings": torch.randn(5, 16), "classes": list("abcde")}, path)
    config = TrainConfig(head="text", embeddings=str(path), **TINY)
    with pytest.raises(ValueError, match="have 5 rows, but fashion-mnist has 10 classes"):
        train(config, tmp_path / "run", progress=False)


def test_embeddings_for_other_classes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "emb.pt"
    torch.save({"embeddings": torch.randn(10, 16), "classes": [str(i) for i in range(10)]}, path)
    with pytest.raises(ValueError, match="are for classes"):
        train(TrainConfig(head="text", embeddings=str(path), **TINY), tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("Bag"), "missing classes: 'Bag'"),
        (lambda d: d.__setitem__("Coat", []), "'Coat' has an empty list"),
    ],
)
def test_description_files_with_missing_classes_or_empty_lists_are_refused(mutate, message, tmp_path: Path) -> None:
    desc = descriptions.load("fashion-mnist")
    mutate(desc)
    path = tmp_path / "desc.json"
    path.write_text(json.dumps(desc))
    config = TrainConfig(head="text", descriptions=str(path), **TINY)
    with pytest.raises(ValueError, match=message):
        train(config, tmp_path / "run", progress=False)


def test_unknown_backbone_and_encoder_list_what_is_available(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet-8'.*close matches.*Built-in: cnn-small"):
        train(TrainConfig(head="baseline", **{**TINY, "backbone": "resnet-8"}), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="unknown encoder 'glove'; expected one of minilm"):
        train(TrainConfig(head="text", init="name", encoder="glove", **TINY), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="unknown head 'linear'; expected one of baseline, text"):
        TrainConfig(head="linear")


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    from headstrong.textguided import build_baseline

    result = train(TrainConfig(head="baseline", **TINY), tmp_path / "run", progress=False)
    other = build_baseline("resnet8-w16", 10, 1)
    with pytest.raises(ValueError, match="holds a baseline model on cnn-small.*baseline model on resnet8-w16"):
        load_checkpoint(result.checkpoint, model=other)
    nameless = build_baseline(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8)), 10, 1, num_features=8)
    with pytest.raises(ValueError, match="holds a baseline model on cnn-small.*given is a BaselineClassifier"):
        load_checkpoint(result.checkpoint, model=nameless)
    with pytest.raises(ValueError, match="does not fit the Linear: 2 missing .*unexpected"):
        load_checkpoint(result.checkpoint, model=torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="another training run.*backbone: 'cnn-small' there, 'resnet8-w16' now"):
        train(TrainConfig(head="baseline", **{**TINY, "backbone": "resnet8-w16"}), tmp_path / "run", progress=False)
    junk = tmp_path / "junk.pt"
    torch.save({"weights": 1}, junk)
    with pytest.raises(ValueError, match="not a headstrong checkpoint"):
        load_checkpoint(junk)


# ---------------------------------------------------------------- CLI


def test_cli_embed_and_train(tmp_path: Path) -> None:
    from headstrong.cli.main import app

    runner = CliRunner()
    emb = tmp_path / "emb.pt"
    done = runner.invoke(app, ["embed", "--descriptions", "fashion-mnist", "--dataset", "fashion-mnist",
                               "--encoder", "minilm", "--out", str(emb)])
    assert done.exit_code == 0, done.output
    saved = torch.load(emb, weights_only=True)
    assert saved["embeddings"].shape == (10, 384) and saved["classes"][0] == "T-shirt/top"
    args = ["train", "--dataset", "fashion-mnist", "--backbone", "cnn-small", "--head", "text",
            "--embeddings", str(emb), "--epochs", "1", "--limit-train", "128", "--limit-test", "100",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "top-1" in done.output and (tmp_path / "run" / "model.pt").is_file()
    bad = runner.invoke(app, ["train", "--backbone", "resnet81", "--head", "baseline", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown backbone 'resnet81'" in bad.output


def test_progress_in_a_log_is_plain_lines_per_epoch_and_says_what_a_resume_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr captured here is not a terminal, as in a batch job: lines, not a silent bar."""
    config = TrainConfig(head="baseline", **{**TINY, "epochs": 2})
    real = recipe.evaluate
    monkeypatch.setattr(recipe, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # stops after both epochs' checkpoints, before the test pass
        train(config, tmp_path / "run", progress=True)
    first = capsys.readouterr().err
    assert "epoch 1/2: 4 batches" in first and "epoch 2/2: loss" in first and "checkpoint saved" in first
    # an unfinished checkpoint of 2 epochs: the rerun says so, trains nothing and evaluates
    monkeypatch.setattr(recipe, "evaluate", real)
    train(config, tmp_path / "run", progress=True)
    assert "train: resuming: 2 of 2 epochs were found done" in capsys.readouterr().err
