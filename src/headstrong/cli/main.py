"""Entry point of the ``headstrong`` command.

Each sub-command lives in its own module under ``headstrong.cli`` and registers itself on
``app`` through ``register(app)``; heavy imports happen inside the commands, so ``--help``
stays fast. Every command is then wrapped by the one error handler (``cli/_errors.py``): commands
raise ValueError for bad input and never catch it themselves.
"""

from __future__ import annotations

import importlib
from typing import Optional

import typer

from headstrong import __version__
from headstrong.cli._errors import HeadstrongGroup, handle_errors

app = typer.Typer(
    name="headstrong",
    help="Make image classifiers resilient to hardware bit flips, and prove it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HeadstrongGroup,
)

# Sub-command modules, in the order they appear in --help.
_COMMAND_MODULES: tuple[str, ...] = (
    "formats",
    "describe",
    "layers",
    "inject",
    "compare",
    "report",
    "embed",
    "train",
    "study",
    "harden",
    "ra",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headstrong {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Make image classifiers resilient to hardware bit flips, and prove it."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"headstrong.cli.{_name}").register(app)

# One error policy for every command: bad input -> one `error:` line and exit code 2.
for _command in app.registered_commands:
    if _command.callback is not None:
        _command.callback = handle_errors(_command.callback, _command.name or _command.callback.__name__)
