"""The command line's skeleton: --help and --version work and print what they should."""

from typer.testing import CliRunner

import headstrong
from headstrong.cli.main import app

runner = CliRunner()


def test_version_prints_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"headstrong {headstrong.__version__}"


def test_help_describes_the_tool() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "bit flips" in result.stdout


def test_unknown_public_name_is_an_attribute_error() -> None:
    try:
        headstrong.not_a_thing  # noqa: B018
    except AttributeError as error:
        assert "not_a_thing" in str(error)
    else:
        raise AssertionError("expected AttributeError")
