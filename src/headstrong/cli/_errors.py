"""One error policy for every ``headstrong`` sub-command.

Bad input (ValueError, TypeError, a missing or misplaced file, a full disk, a library error that
means the same) prints one line ``error: <what is wrong>; <what is allowed>`` to stderr and exits
with code 2; a known outside failure (a language-model server that gave up) prints one line and
exits with 1; Ctrl-C says where to resume and exits with 130; anything else is a bug and keeps its
traceback. ``cli/main.py`` wraps every registered command with :func:`handle_errors` and builds
the app on :class:`HeadstrongGroup`, which prints click's own usage errors the same way, so the
command modules hold no ``try/except`` of their own: they raise ValueError with a clear message.
Set ``HEADSTRONG_TRACEBACK=1`` to see the traceback behind an ``error:`` line.
"""

from __future__ import annotations

import errno
import functools
import linecache
import os
import sys
from typing import Any, Callable, Optional, Sequence, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click; its exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_errors  # type: ignore[no-redef]

BAD_INPUT_EXIT = 2
RUN_FAILED_EXIT = 1  # a known failure that is not the input's fault (a server that gave up)
INTERRUPTED_EXIT = 130

# Commands that resume when rerun with the same arguments (what a Ctrl-C message may promise).
RESUMABLE: frozenset[str] = frozenset({"inject", "train", "describe", "demo", "study"})

F = TypeVar("F", bound=Callable[..., Any])


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined by '; ', blank ones dropped."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def fail(message: str) -> None:
    """Print ``error: message`` (one line) to stderr and exit with the bad-input code."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(BAD_INPUT_EXIT)


def _os_message(error: OSError) -> Optional[str]:
    """A one-line message for an OSError that is the user's or the machine's, not a bug."""
    if error.filename is None:
        return None  # no path to name: a library's own failure, keep its traceback
    name = error.filename
    if isinstance(error, FileNotFoundError):
        return f"no such file or folder: {name}; check the path"
    if isinstance(error, IsADirectoryError):
        return f"{name} is a folder; give a file"
    if isinstance(error, NotADirectoryError):
        return f"{name}: part of this path is a file, not a folder; give a path inside a folder"
    if isinstance(error, FileExistsError):
        return f"{name} already exists and is not a folder; give another path"
    if isinstance(error, PermissionError):
        return f"permission denied: {name}; give a path you can read and write"
    return None


def _run_failure(error: BaseException) -> Optional[str]:
    """A known failure outside the user's input (a language-model server that gave up): one line."""
    if "headstrong.textguided.llm" in sys.modules:
        from headstrong.textguided.llm import GenerationError

        if isinstance(error, GenerationError):
            return one_line(str(error))
    return None


def _raised_on_purpose(error: BaseException) -> bool:
    """Whether the innermost frame of ``error`` is a ``raise`` statement (a check that refused
    something), not the interpreter failing on a wrong type (``None[0]``: a bug)."""
    tb = error.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return line.startswith("raise ")


def _write_failure(error: BaseException) -> Optional[str]:
    """ENOSPC (also where a library kept only the text, as pyarrow does), or torch.save's own
    'file write failed', as one line that says the work done so far is kept."""
    text = str(error)
    keep = "free some space and rerun the same command: what was written so far is kept and the run resumes from it"
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text:
        return f"disk full while writing {getattr(error, 'filename', None) or 'a file'}; {keep}"
    if isinstance(error, RuntimeError) and "file write failed" in text:
        return f"writing a file failed (is the disk full?); {keep}"
    return None


def bad_input_message(error: BaseException) -> Optional[str]:
    """The one-line message for an exception that means bad input, or None for anything else.

    A TypeError counts only when a check raised it on purpose; ``'NoneType' object is not
    subscriptable`` is a bug and keeps its traceback.
    """
    written = _write_failure(error)
    if written is not None:
        return written
    if isinstance(error, ValueError) or (isinstance(error, TypeError) and _raised_on_purpose(error)):
        return one_line(str(error)) or type(error).__name__
    if isinstance(error, OSError):
        return _os_message(error)
    return None


def interrupted_message(command: str, params: dict[str, Any]) -> str:
    """What to tell the user after Ctrl-C: how to resume, where the command can."""
    if command not in RESUMABLE:
        return "interrupted; rerun the command to start again"
    where = params.get("out") or params.get("config_file")
    place = f" (kept in {where})" if where is not None else ""
    return f"interrupted; rerun the same command to resume from the work already done{place}"


def handle_errors(callback: F, command: Optional[str] = None) -> F:
    """Wrap a command's callback with the one error policy (see the module docstring)."""
    name = command or callback.__name__

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except (typer.Exit, click_errors.ClickException, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.echo("", err=True)
            typer.echo(interrupted_message(name, kwargs), err=True)
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except Exception as error:  # noqa: BLE001 - sorted into bad input (one line) or a bug (re-raised)
            if os.environ.get("HEADSTRONG_TRACEBACK"):
                raise  # a developer chasing where a message came from
            message = bad_input_message(error)
            if message is not None:
                fail(message)
            failure = _run_failure(error)
            if failure is None:
                raise
            typer.echo(f"error: {failure}", err=True)
            raise typer.Exit(RUN_FAILED_EXIT) from None

    return run  # type: ignore[return-value]


class HeadstrongGroup(TyperGroup):
    """The app's group: click's usage errors become the same one ``error:`` line, exit code 2."""

    def main(  # type: ignore[override]
        self,
        args: Optional[Sequence[str]] = None,
        prog_name: Optional[str] = None,
        complete_var: Optional[str] = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:
            error.show()
            sys.exit(0)
        except click_errors.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "headstrong"
            typer.echo(f"error: {one_line(error.format_message()).rstrip('.')}; see '{where} --help'", err=True)
            sys.exit(BAD_INPUT_EXIT)
        except click_errors.ClickException as error:
            typer.echo(f"error: {one_line(error.format_message())}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT)
        sys.exit(code if isinstance(code, int) else 0)
