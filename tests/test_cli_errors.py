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
