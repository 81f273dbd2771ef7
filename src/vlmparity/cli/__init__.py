"""The `vlmparity` command.

Each sub-command lives in its own module under `vlmparity.cli` and exposes `register(app)`. Modules import
their heavy dependencies inside the command bodies so that `vlmparity --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from vlmparity import __version__
from vlmparity.cli._help import fix_help_metavars
from vlmparity.errors import VlmparityError

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

_state = {"debug": False}

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
    _state["debug"] = debug or bool(os.environ.get("VLMPARITY_DEBUG"))


def debug_enabled() -> bool:
    """True when --debug (or VLMPARITY_DEBUG) asked for tracebacks."""
    return _state["debug"]


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
        return f"run store error: {exc} (is the folder a vlmparity run, written by this version?)"
    if isinstance(exc, MemoryError):
        return "out of memory (close other programs, or evaluate fewer samples at once)"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning user-caused errors into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("VLMPARITY_DEBUG")
    )
    from vlmparity._malloc import tune_malloc

    tune_malloc()  # large freed buffers go back to the system (peak RSS; see the module)
    try:
        # Without standalone mode click returns a typer.Exit's code instead of exiting with it.
        code = app(args=argv, standalone_mode=False)
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
