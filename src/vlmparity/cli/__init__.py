"""The `vlmparity` command.

Each sub-command lives in its own module under `vlmparity.cli` and exposes `register(app)`. Modules import
their heavy dependencies inside the command bodies so that `vlmparity --help` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import typer.main

from vlmparity import __version__
from vlmparity.cli._help import fix_help_metavars
from vlmparity.errors import ConfigError, VlmparityError

app = typer.Typer(
    name="vlmparity",
    help="Is serving engine B as accurate as engine A? Evaluate OpenAI-compatible VLM endpoints on MME and "
    "MMMU-val with lmms-eval-identical scores, and compare them with paired statistics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order here is the order in `vlmparity --help`.
COMMAND_MODULES = ("demo", "run", "compare", "report", "score", "tasks", "synth", "sim", "doctor", "launch")

# Exit codes shared by every command (README "Exit codes").
EXIT_OK = 0
EXIT_NOT_EQUIVALENT = 1
EXIT_INCONCLUSIVE = 2
EXIT_INFRA = 3
EXIT_USAGE = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vlmparity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    # `--debug` is declared here (parsing, --help); `main` reads it from the arguments before the command
    # runs (`debug_requested`), since it decides how every error of the invocation ends.
    del version, debug


def debug_requested(argv: list[str] | None = None) -> bool:
    """True when --debug (or VLMPARITY_DEBUG) asks for tracebacks; `argv` defaults to the process's."""
    return "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("VLMPARITY_DEBUG")
    )


fix_help_metavars()  # no `<bool>` after flags (Typer's type labels), for every command

for _name in COMMAND_MODULES:
    _module = importlib.import_module(f"vlmparity.cli.{_name}")
    _module.register(app)


def error_line(message: str) -> None:
    """Print one error line on stderr (URL credentials, keys and known secrets masked)."""
    from vlmparity.masking import scrub_message

    message = " ".join(scrub_message(message).splitlines())  # one line, whatever a server said
    sys.stderr.write(f"vlmparity: error: {message}\n")
    sys.stderr.flush()


# Every integer an option takes is stored somewhere (SQLite, JSON) or sized something: 64 bits at most.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_option_values(command: Any) -> None:
    """One rule for every option and argument of every command, checked as click converts each value:
    an integer beyond 64 bits, a number that is not finite (nan, inf) or an empty path is a usage error
    (one line, exit 4). Options with narrower ranges check them where they are used (config.py)."""
    for sub in getattr(command, "commands", {}).values():
        check_option_values(sub)
    for param in getattr(command, "params", ()):
        if not getattr(param, "_vlmparity_checked", False):
            param.process_value = functools.partial(_checked_value, param, param.process_value)
            param._vlmparity_checked = True


def _option_name(param: Any) -> str:
    opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    return opts[0] if opts else str(getattr(param, "human_readable_name", None) or param.name).upper()


def _checked_value(param: Any, process: Callable[[Any, Any], Any], ctx: Any, value: Any) -> Any:
    raw = value
    value = process(ctx, value)
    name = _option_name(param)
    raws = raw if isinstance(raw, list | tuple) else [raw]
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not INT_MIN <= item <= INT_MAX:
            raise ConfigError(
                f"{name} {item} is out of range: integers go from {INT_MIN} to {INT_MAX} (64 bits)"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(
                f"{name} {item} is not a finite number", hint=f"see `vlmparity {ctx.info_name} --help`"
            )
        if isinstance(item, Path) and any(isinstance(r, str) and not r.strip() for r in raws):
            raise ConfigError(f"{name} is an empty path", hint="name a file or folder; . is the current one")
    return value


def require_at_least(option: str, value: float | None, minimum: float, *, strict: bool = False) -> None:
    """A usage error (exit 4) unless `value` (when given) is >= `minimum` (> with `strict`)."""
    if value is None:
        return
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"{option} must be {bound}, got {value:g}")


def environment_error(exc: BaseException) -> str | None:
    """One line for an error of the machine rather than of vlmparity (None for anything else).

    Every file system error (a full disk, a read-only or missing folder, a folder where a file should be)
    and every database error a command did not already explain is such an error: exit 3, one line.
    """
    import sqlite3

    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename
        return f"cannot use {where}: {reason}" if where else f"{type(exc).__name__}: {reason}"
    if isinstance(exc, sqlite3.Error):
        return (
            f"run store error: {exc} (every answer acknowledged so far is kept; fix the cause, then rerun the "
            "same command)"
        )
    if isinstance(exc, MemoryError):
        return "out of memory (close other programs, or evaluate fewer samples at once)"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning user-caused errors into one line and an exit code."""
    debug = debug_requested(argv)
    from vlmparity._malloc import tune_malloc

    tune_malloc()  # large freed buffers go back to the system (peak RSS; see the module)
    try:
        command = typer.main.get_command(app)
        check_option_values(command)
        # Without standalone mode click returns a typer.Exit's code instead of exiting with it.
        code = command(args=argv, standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except VlmparityError as err:
        if debug:
            raise
        error_line(err.one_line())
        sys.exit(err.exit_code)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        from vlmparity.interrupt import exit_code_of, signal_of

        name = signal_of(exc)
        by = "" if name == "SIGINT" else f" by {name}"
        error_line(
            f"interrupted{by}; every answer received so far is saved, rerun the same command to resume"
        )
        sys.exit(exit_code_of(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_line("aborted")
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors (vendored by typer)
            exc.show()
            sys.exit(EXIT_USAGE)
        if debug:
            raise
        environment = environment_error(exc)
        if environment is not None:  # the disk, the file system, the database: exit 3, never 70
            error_line(environment)
            sys.exit(EXIT_INFRA)
        error_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)
