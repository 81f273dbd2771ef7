"""The console script's entry point: nothing but the standard library before the CLI is imported.

A Ctrl-C while Python imports the CLI (typer, rich...) happens before `vlmparity.cli.main` can catch it;
here it is one line and exit code 130 like any other interruption, not a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from vlmparity.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("vlmparity: interrupted while starting; nothing was done\n")
        sys.exit(130)
    cli_main()
