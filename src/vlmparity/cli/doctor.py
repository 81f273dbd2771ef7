"""`vlmparity doctor URL`: probe an endpoint and print a checklist of how it will behave in an evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from vlmparity.backends import kinds_text

if TYPE_CHECKING:
    from vlmparity.doctor import DoctorReport

DEFAULT_READY_TIMEOUT_S = 30.0
MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def register(app: typer.Typer) -> None:
    """Add the `doctor` command to the app."""

    @app.command(
        "doctor",
        help="Probe an OpenAI-compatible endpoint and print a checklist: reachable, backend and version "
        "(OVMS /v3 vs /v1, vLLM /version), ready, served models, images per request, determinism at "
        "temperature 0, seed, streaming and usage, error shape. Each line says what to fix. Exit 3 when the "
        "endpoint cannot be evaluated, else 0 (warnings do not fail).",
    )
    def doctor(
        url: str = typer.Argument(..., help="Endpoint base URL, e.g. http://127.0.0.1:8000/v1 or .../v3."),
        model: str | None = typer.Option(
            None, "--model", help="Model name to check (default: the only served model)."
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="Bearer key (default: OPENAI_API_KEY); never printed."
        ),
        kind: str = typer.Option("auto", "--kind", help=f"Backend: auto, {kinds_text()}."),
        timeout: float | None = typer.Option(
            None,
            "--ready-timeout",
            "--timeout",
            help="Seconds to wait for the server to be ready, refused connections included (a server "
            "still starting). Default: 30 s for a server that answers but is still loading; a refused "
            "connection fails at once.",
            show_default=False,
        ),
        request_timeout: float = typer.Option(
            120.0, "--request-timeout", help="Seconds per probe request (each asks for 8 tokens)."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the report as JSON instead of the checklist."
        ),
    ) -> None:
        import asyncio

        from pydantic import SecretStr, ValidationError

        from vlmparity.backends import AUTO, backend_kinds
        from vlmparity.client.endpoint import BackendKind, EndpointSpec
        from vlmparity.doctor import run_doctor
        from vlmparity.errors import ConfigError

        kinds = [*backend_kinds(), AUTO]
        if kind not in kinds:
            raise ConfigError(f"unknown --kind {kind!r}", hint=f"use one of {', '.join(kinds)}")
        if (timeout is not None and timeout < 0) or request_timeout <= 0:
            raise ConfigError("--ready-timeout must be >= 0 and --request-timeout > 0")
        try:
            spec = EndpointSpec(
                url=url,
                model=model or None,
                api_key=SecretStr(api_key) if api_key else None,
                kind=BackendKind(kind),
            )
        except ValidationError:
            from vlmparity.masking import mask_url

            raise ConfigError(
                f"endpoint URL must look like http://host:port, got {mask_url(url)!r}",
                hint="e.g. http://127.0.0.1:8000/v1",
            ) from None
        # Nothing listening is not worth 30 s of waiting unless asked for (a server being started)
        report = asyncio.run(
            run_doctor(
                spec,
                timeout=DEFAULT_READY_TIMEOUT_S if timeout is None else timeout,
                request_timeout=request_timeout,
                connect_timeout=0.0 if timeout is None else None,
            )
        )
        if as_json:
            import orjson

            typer.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            print_report(report)
        # SystemExit, not typer.Exit: main() runs click with standalone_mode=False, which swallows Exit codes.
        raise SystemExit(report.exit_code)


def print_report(report: DoctorReport) -> None:
    """The checklist: one line per check, `✓`/`!`/`✗`, with what to do after `→` when not ✓."""
    from rich.console import Console
    from rich.text import Text

    from vlmparity.masking import scrub_message

    console = Console(soft_wrap=True, highlight=False)
    for check in report.checks:
        mark, colour = MARKS[check.mark.value]
        line = Text()
        line.append(mark, style=f"bold {colour}")
        line.append(f" {check.title}: ", style="bold")
        line.append(scrub_message(check.detail))
        if check.fix:
            line.append(f" → {scrub_message(check.fix)}", style=colour)
        console.print(line)
    if report.evaluable:
        warnings = sum(1 for c in report.checks if c.mark.value == "warn")
        tail = f"{warnings} warning{'s' if warnings != 1 else ''}" if warnings else "no warnings"
        console.print(
            Text(
                f"→ {scrub_message(report.chat_url or '')} can be evaluated with model {report.model!r} ({tail})"
            )
        )
