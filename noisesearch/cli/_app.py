"""The command line's app and what every command shares: one-line errors (``OneLineErrors``, ``friendly``,
``environment_error``), the progress bar and ``KEY=VALUE`` options (``parse_params``)."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.26 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError

from noisesearch.errors import BudgetExceeded, UserError


class OneLineErrors(TyperGroup):
    """The command group, with click's own usage errors as one line ``error: ...`` too.

    Click answers an unknown option or a value that does not parse (``--seed abc``, ``--budget 1e12``)
    with a usage block and ``Error: ...``; here it is one line on stderr and exit code 2, as for
    every other bad input.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # `noisesearch` alone: the help text
            if not standalone_mode:
                raise
            e.show()
            sys.exit(e.exit_code)
        except ClickException as e:
            if not standalone_mode:
                raise
            lines = [line.strip() for line in e.format_message().splitlines() if line.strip()]
            ctx = getattr(e, "ctx", None)
            hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
            print(f"error: {'; '.join(lines)}{hint}", file=sys.stderr)
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            print("Aborted!", file=sys.stderr)
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inference-time scaling for diffusion and flow models: search for better noises.",
)
train_app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, help="Retrain built-in models.")
app.add_typer(train_app, name="train")
console = Console(stderr=True)


# The system refused a file: one line naming it, as for a user mistake (a full disk, a read-only folder, a
# file where a folder is needed). Any other OSError is a bug or a broken machine and keeps its traceback.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
CANNOT_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})


def environment_error(e: BaseException) -> str | None:
    """The one line for an ``OSError`` (also one carried by a wrapper, e.g. Ray's) the user can act on, or None."""
    from noisesearch._io import os_error_of

    error = os_error_of(e)
    if error is None or error.errno not in CANNOT_WRITE | CANNOT_ACCESS:
        return None
    verb = "write" if error.errno in CANNOT_WRITE else "access"
    where = f" {error.filename}" if error.filename is not None else ""
    also = f" (and {error.filename2})" if getattr(error, "filename2", None) is not None else ""
    hint = "; free some space or give another folder" if error.errno in CANNOT_WRITE - {errno.EROFS} else ""
    return f"cannot {verb}{where}{also}: {error.strerror or os.strerror(error.errno)}{hint}"


def friendly(fn):
    """Turn ``UserError``, ``BudgetExceeded`` and a refused file (``environment_error``) into one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, BudgetExceeded) as e:
            cause = getattr(e, "cause", None)  # raised in a Ray actor: the original, not Ray's traceback text
            text = str(cause if isinstance(cause, (UserError, BudgetExceeded)) else e)
            print("error: " + "; ".join(line.strip() for line in text.splitlines() if line.strip()), file=sys.stderr)
            raise typer.Exit(2) from None
        except Exception as e:
            line = environment_error(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def progress_bar():
    """A progress bar on stderr (shown on a terminal only: a log file gets the summary lines)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )  # a log file gets the summary lines only


NON_FINITE = {"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def parse_params(pairs: list[str], flag: str) -> dict:
    """``KEY=VALUE`` strings -> dict; values read as JSON where they parse (numbers, true, null)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {pair!r} is not KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if isinstance(parsed, float) and not math.isfinite(parsed) or value.strip().lower() in NON_FINITE:
            raise UserError(f"{flag} {pair!r}: a parameter must be a finite number, got {value!r}")
        params[key.replace("-", "_")] = parsed
    return params
