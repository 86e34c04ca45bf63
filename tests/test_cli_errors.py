"""Every bad input gives one line ``error: ...`` on stderr and exit code 2; bugs keep their traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headstrong.cli._errors import HeadstrongGroup, handle_errors
from headstrong.cli.main import app

runner = CliRunner()


def error_lines(result) -> list[str]:  # noqa: ANN001 - click's Result
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_error(result, pattern: str = "") -> str:  # noqa: ANN001
    """Exit code 2, exactly one ``error:`` line (matching ``pattern``), no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert pattern.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _toy_app(body) -> typer.Typer:  # noqa: ANN001
    toy = typer.Typer(cls=HeadstrongGroup, add_completion=False, pretty_exceptions_enable=False)

    def run(out: str = typer.Option("runs/x", "--out")) -> None:
        body(out)

    toy.command("run")(handle_errors(run, "inject"))
    toy.command("other")(handle_errors(lambda: body(None), "formats"))
    return toy


def test_value_error_is_one_line_with_code_2() -> None:
    def body(out: str) -> None:
        raise ValueError("bad thing 'x'\nsecond line; expected a or b")

    line = assert_one_error(runner.invoke(_toy_app(body), ["run"]))
    assert line == "error: bad thing 'x'; second line; expected a or b"


def test_a_bug_keeps_its_traceback() -> None:
    def body(out: str) -> None:
        raise RuntimeError("internal")

    result = runner.invoke(_toy_app(body), ["run"])
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize(
    ("error", "pattern"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "runs/x/chunk.parquet"), "disk full while writing runs/x/chunk"),
        (FileNotFoundError(errno.ENOENT, "No such file", "nope.pt"), "no such file or folder: nope.pt"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "folder"), "folder is a folder; give a file"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "permission denied: /root/x"),
        (TypeError("epochs must be an integer; got 1.5"), "epochs must be an integer"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                      "file write failed"), "writing a file failed (is the disk full?)"),
    ],
)
def test_os_and_type_errors_are_one_line(error: Exception, pattern: str) -> None:
    def body(out: str) -> None:
        raise error

    assert_one_error(runner.invoke(_toy_app(body), ["run"]), pattern)


def test_disk_full_says_what_was_written_is_kept() -> None:
    def body(out: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"{out}/x")

    assert_one_error(runner.invoke(_toy_app(body), ["run", "--out", "runs/y"]), "what was written so far is kept")


def test_ctrl_c_says_where_to_resume_and_exits_130() -> None:
    def body(out: str) -> None:
        raise KeyboardInterrupt

    result = runner.invoke(_toy_app(body), ["run", "--out", "runs/mine"])
    assert result.exit_code == 130
    assert "rerun the same command to resume" in result.stderr and "runs/mine" in result.stderr
    other = runner.invoke(_toy_app(body), ["other"])
    assert other.exit_code == 130 and "resume" not in other.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["inject", "m", "--out", "x", "--no-such-option"],
        ["no-such-command"],
        ["train", "--out", "x", "--epochs", "many"],
    ],
)
def test_usage_errors_are_one_line_too(args: list[str]) -> None:
    line = assert_one_error(runner.invoke(app, args))
    assert "--help" in line


def test_no_arguments_still_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output and not error_lines(result)


def test_every_command_is_wrapped() -> None:
    for command in app.registered_commands:
        assert getattr(command.callback, "__wrapped__", None) is not None, command.name


def test_unknown_format_through_the_real_app() -> None:
    assert_one_error(runner.invoke(app, ["formats", "bf61"]), "unknown format 'bf61'")


def test_report_on_a_missing_folder(tmp_path: Path) -> None:
    assert_one_error(runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]))


# ------------------------------------------------------------------ the sweep of issue 16's inputs
# Every input the issue lists as a raw traceback: one `error:` line, exit code 2, nothing written.

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small checkpoint, damaged variants of it and the bad files the sweep hands over."""
    import json

    import torch

    import headstrong as hs
    from headstrong.train import save_checkpoint

    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    model = hs.build_baseline("cnn-small", num_classes=10, in_chans=1, small_input=True)
    ckpt = save_checkpoint(root / "model.pt", model, config={"dataset": "fashion-mnist"})
    out = {"CKPT": ckpt}
    for name, change in (("NOCLASSES", lambda s: s.pop("num_classes")),
                         ("HUGE", lambda s: s.__setitem__("num_classes", 10**10))):
        payload = torch.load(ckpt, weights_only=True)
        change(payload["model_spec"])
        torch.save(payload, root / f"{name}.pt")
        out[name] = root / f"{name}.pt"
    (root / "a_file").write_text("x")
    (root / "a_folder").mkdir()
    (root / "empty_images").mkdir()
    (root / "garbage.pt").write_bytes(b"not a torch file")
    torch.save({"classes": ["a"]}, root / "keyless.pt")
    texts = {
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "classes.json": json.dumps({"classes": ["cat", "dog"]}),
        "spec_ber.toml": 'fault_model = "ber"\nber = "1e-7"\n',
        "spec_float.toml": "n_faults = 1.5\n",
        "acc_shares.toml": 'rows = 4\ncols = 4\ndataflow = "os"\nshares = 5\n',
        "acc_syntax.toml": "rows = \n",
    }
    for name, text in texts.items():
        (root / name).write_text(text)
        out[name] = root / name
    for name, text in (("list", "[]"), ("empty", "{}"), ("nounits", '{"spec": {"kind": "neuron"}}')):
        (root / f"man_{name}").mkdir()
        (root / f"man_{name}" / "manifest.json").write_text(text)
    (root / "man_folder" / "manifest.json").mkdir(parents=True)
    out["ROOT"] = root
    return out


INJECT = ["--max-images", "8", "--n-faults", "2", "--no-progress", "--layers", "head"]
TRAIN = ["--epochs", "1", "--limit-train", "16", "--limit-test", "16", "--no-progress", "--backbone", "cnn-small"]
NO_GPU = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")

SWEEP = [
    pytest.param(["train", "--out", "ROOT/t", "--device", "cuda", *TRAIN], "no CUDA GPU", marks=NO_GPU, id="train-cuda"),
    pytest.param(["train", "--out", "ROOT/t", "--device", "tpu", *TRAIN], "unknown device 'tpu'", id="train-tpu"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--device", "cuda", *INJECT], "no CUDA GPU", marks=NO_GPU,
                 id="inject-cuda"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--device", "gpu0", *INJECT], "unknown device", id="inject-gpu0"),
    pytest.param(["embed", "--descriptions", "fashion-mnist", "--out", "ROOT/e.pt", "--device", "cuda"], "no CUDA GPU",
                 marks=NO_GPU, id="embed-cuda"),
    pytest.param(["demo", "--out", "ROOT/d", "--device", "cuda:7", "--no-progress"], "cuda:7", id="demo-cuda7"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--dataset", "cifar10", *INJECT],
                 "looked for data_batch_1", id="cifar10-offline"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--dataset", "mnist", *INJECT], "MNIST/raw", id="mnist-offline"),
    pytest.param(["embed", "--descriptions", "fashion-mnist", "--out", "ROOT/e.pt", "--no-cache",
                  "--encoder", "clip:ViT-B-32/openai"], "cannot fetch the CLIP weights ViT-B-32/openai", id="clip-offline"),
    pytest.param(["train", "--out", "ROOT/t", "--embeddings", "ROOT/nope.pt", *TRAIN], "no such file", id="emb-missing"),
    pytest.param(["train", "--out", "ROOT/t", "--embeddings", "ROOT/garbage.pt", *TRAIN], "not a readable torch file",
                 id="emb-garbage"),
    pytest.param(["train", "--out", "ROOT/t", "--embeddings", "ROOT/keyless.pt", *TRAIN], "no 'embeddings' entry",
                 id="emb-keyless"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--spec", "spec_ber.toml", *INJECT], "must be a number",
                 id="spec-ber-string"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--spec", "spec_float.toml", "--max-images", "8",
                  "--layers", "head"], "n_faults must be a positive integer", id="spec-float-count"),
    pytest.param(["train", "--out", "ROOT/t", "--threads", "-1", *TRAIN], "--threads", id="train-threads"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--threads", "-1", *INJECT], "--threads", id="inject-threads"),
    pytest.param(["ra", "CKPT", "--threads", "-1"], "--threads", id="ra-threads"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/a_file", *INJECT], "is a file", id="inject-out-file"),
    pytest.param(["train", "--out", "ROOT/a_file", *TRAIN], "is a file", id="train-out-file"),
    pytest.param(["ra", "CKPT", "--out", "ROOT/a_file"], "is a file", id="ra-out-file"),
    pytest.param(["embed", "--descriptions", "fashion-mnist", "--out", "ROOT/a_folder"], "is a folder",
                 id="embed-out-folder"),
    pytest.param(["describe", "--classes", "mnist", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                  "--out", "ROOT/a_folder"], "is a folder", id="describe-out-folder"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--dataset", "imagefolder:ROOT/empty_images", *INJECT],
                 "no class sub-folders", id="imagefolder-empty"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--dataset", "imagefolder:", *INJECT], "needs a path",
                 id="imagefolder-blank"),
    pytest.param(["ra", "CKPT", "-a", "acc_shares.toml", "--out", "ROOT/ra"], "shares = 5: must be a table",
                 id="acc-shares-5"),
    pytest.param(["ra", "CKPT", "-a", "acc_syntax.toml", "--out", "ROOT/ra"], "acc_syntax.toml' is not valid TOML",
                 id="acc-toml-syntax"),
    pytest.param(["inject", "NOCLASSES", "--out", "ROOT/i", *INJECT], "lacks num_classes", id="ckpt-no-classes"),
    pytest.param(["inject", "HUGE", "--out", "ROOT/i", *INJECT], "num_classes must be in [2, 1000000]",
                 id="ckpt-1e10-classes"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--max-images", "8", "--n-faults", "1000000000",
                  "--no-progress", "--layers", "head"], "more than any selected layer can draw", id="n-faults-1e9"),
    pytest.param(["report", "ROOT/man_list", "--out", "ROOT/r"], "not a campaign manifest", id="report-list"),
    pytest.param(["report", "ROOT/man_empty", "--out", "ROOT/r"], "not a campaign manifest", id="report-empty"),
    pytest.param(["report", "ROOT/man_nounits", "--out", "ROOT/r"], "not a campaign manifest", id="report-no-units"),
    pytest.param(["report", "ROOT/man_folder", "--out", "ROOT/r"], "is a folder", id="report-manifest-folder"),
    pytest.param(["embed", "--descriptions", "deep.json", "--out", "ROOT/e.pt"], "nested too deeply",
                 id="descriptions-100k-deep"),
    pytest.param(["embed", "--descriptions", "classes.json", "--out", "ROOT/e.pt"], "'classes' is a list",
                 id="descriptions-classes-list"),
    pytest.param(["inject", "CKPT", "--out", "ROOT/i", "--backend", "ray", "--workers", "0", *INJECT], "--workers",
                 id="ray-workers-0"),
    pytest.param(["ra", "CKPT", "-e", "exact", "--max-images", "4", "--out", "ROOT/ra"], "2,298,016 fault sites",
                 id="ra-exact-too-large"),
    pytest.param(["train", "--out", "ROOT/t", "--lr", "nan", *TRAIN], "lr must be a finite number", id="train-lr-nan"),
    pytest.param(["train", "--out", "ROOT/t", "--weight-decay", "-1", *TRAIN], "weight_decay must be at least 0",
                 id="train-wd-negative"),
    pytest.param(["train", "--out", "ROOT/t", "--momentum", "1.5", *TRAIN], "momentum must be in [0, 1)",
                 id="train-momentum"),
]


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network: torchvision's downloads and open_clip's weight fetch fail as they do offline."""
    import urllib.error

    import open_clip
    import torchvision.datasets as tvd

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_weights(*args: object, **kwargs: object) -> None:
        if kwargs.get("pretrained"):
            raise RuntimeError("Failed to download weights for tag 'openai': Failed to download file")
        raise AssertionError("only pretrained weights are fetched")

    for cls in (tvd.CIFAR10, tvd.MNIST):
        monkeypatch.setattr(cls, "download", no_network)
    monkeypatch.setattr(open_clip, "create_model", no_weights)
    monkeypatch.setenv("HEADSTRONG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HEADSTRONG_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(("args", "message"), SWEEP)
def test_each_listed_bad_input_is_one_line_and_code_2(
    args: list[str], message: str, files: dict[str, Path], offline: None
) -> None:
    root = files["ROOT"]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    concrete = [str(files[a]) if a in files else a.replace("ROOT", str(root)) for a in args]
    assert_one_error(runner.invoke(app, concrete), message)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written, no folder locked


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("train", "lr = \"fast\"", "lr must be a number"),
        ("train", "epochs = 1.5", "epochs must be a whole number"),
        ("train", "limit_train = -100", "limit_train must be at least 1"),
        ("train", "momentum = -3", "momentum must be in [0, 1)"),
        ("study", "encoder = \"bert\"", "unknown encoder 'bert'"),
        ("study", "device = \"tpu\"", "unknown device 'tpu'"),
        ("campaign", "n_faults = \"many\"", "n_faults must be a positive integer"),
    ],
)
def test_a_bad_study_value_is_refused_before_study_json(tmp_path: Path, section: str, line: str, message: str) -> None:
    out = tmp_path / "study"
    path = tmp_path / "study.toml"
    head = f'[study]\nbackbones = ["cnn-small"]\nout = "{out}"\n'
    path.write_text(head + (f"{line}\n" if section == "study" else f"[{section}]\n{line}\n"))
    assert_one_error(runner.invoke(app, ["study", str(path)]), message)
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_study_asking_for_a_gpu_this_machine_lacks(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(f'[study]\nbackbones = ["cnn-small"]\nout = "{tmp_path / "s"}"\ndevice = "cuda"\n')
    assert_one_error(runner.invoke(app, ["study", str(path)]), "no CUDA GPU")
    assert not (tmp_path / "s").exists()


def test_disk_full_mid_campaign_is_one_line_and_the_rerun_resumes(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno as errno_codes

    import pyarrow.parquet as pq

    import headstrong as hs

    real_write = pq.write_table
    calls: list[int] = []

    def write_until_full(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno_codes.ENOSPC, "No space left on device")
        real_write(*args, **kwargs)

    out = tmp_path / "run"
    args = ["inject", str(files["CKPT"]), "--out", str(out), "--max-images", "8", "--n-faults", "12", "--no-progress", "--all-images",
            "--layers", "head", "--batch-size", "4", "--chunk-size", "4"]
    monkeypatch.setattr(pq, "write_table", write_until_full)
    assert_one_error(runner.invoke(app, args), "disk full")
    kept = sorted(p.name for p in out.rglob("*.parquet"))
    assert len(kept) == 1  # the chunk written before the disk filled is kept
    monkeypatch.setattr(pq, "write_table", real_write)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(hs.load_results(out).records) == 12


def test_fault_budget_counts_every_image_a_permanent_fault_meets(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight fault meets every evaluation image by default: the memory check counts the
    (fault, image) records, not the faults (with 1 MiB free, 512 neuron faults fit, the same
    number of weight faults on 8 images each does not)."""
    import os

    import torch

    import headstrong as hs
    from headstrong.cli.inject import check_fault_budget
    from headstrong.train import load_checkpoint

    real = os.sysconf
    page = real("SC_PAGE_SIZE")
    monkeypatch.setattr(os, "sysconf", lambda name: (1 << 20) // page if name == "SC_AVPHYS_PAGES" else real(name))
    args = ["inject", str(files["CKPT"]), "--max-images", "8", "--n-faults", "512", "--no-progress",
            "--layers", "head", "--kind", "weight", "--out", str(tmp_path / "w")]
    assert_one_error(runner.invoke(app, args), "meeting 8 images each = 4,096 records")
    model, _ = load_checkpoint(files["CKPT"])
    data = [(torch.zeros(1, 28, 28), 0)] * 8
    check_fault_budget(model, data, hs.CampaignSpec(kind="neuron", layers=["head"], n_faults=512, max_images=8))


def test_the_traceback_behind_an_error_line_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def body(out: str) -> None:
        raise ValueError("bad")

    monkeypatch.setenv("HEADSTRONG_TRACEBACK", "1")
    assert isinstance(runner.invoke(_toy_app(body), ["run"]).exception, ValueError)
