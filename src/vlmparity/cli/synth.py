"""`vlmparity synth` (not implemented yet)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the command to the app (placeholder until its issue lands)."""
