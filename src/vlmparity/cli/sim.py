"""`vlmparity sim`: run the embedded vLLM/OVMS simulator until Ctrl-C."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class PersonalityName(StrEnum):
    vllm = "vllm"
    ovms = "ovms"


def register(app: typer.Typer) -> None:
    """Add the `sim` command to the app."""

    @app.command(
        "sim",
        help="Serve an OpenAI-compatible simulator of vLLM or OVMS that answers questions of the synthetic "
        "MME/MMMU sets with configured accuracy, latency and faults. Prints its base URL, runs until Ctrl-C.",
    )
    def sim(
        personality: PersonalityName | None = typer.Option(
            None, "--personality", "-p", help="Engine to imitate (default vllm, or the config file's)."
        ),
        port: int | None = typer.Option(None, "--port", help="Port (0 = any free port; default 8000)."),
        host: str | None = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)."),
        data: list[Path] | None = typer.Option(
            None, "--data", help="Dataset folder from `vlmparity synth` (repeat for MME and MMMU)."
        ),
        config: Path | None = typer.Option(None, "--config", help="JSON/YAML file with any SimConfig field."),
        model: str | None = typer.Option(None, "--model", help="Served model name."),
        startup_delay: float | None = typer.Option(
            None, "--startup-delay", help="Seconds before the server reports ready."
        ),
        log_file: Path | None = typer.Option(None, "--log-file", help="Append one JSON line per request."),
        limit_mm_per_prompt: int | None = typer.Option(
            None,
            "--limit-mm-per-prompt",
            min=0,
            help="vllm personality: images accepted per request, as vLLM's flag (default 1; 0: no limit). "
            "MMMU-val questions have up to 7.",
        ),
        zero_latency: bool = typer.Option(False, "--zero-latency", help="Answer instantly (time_scale 0)."),
    ) -> None:
        import signal
        import sys
        import time

        from vlmparity.cli.run import interrupt_as_error
        from vlmparity.sim import SimConfig, SimServer, config_from_dict, load_config

        base = load_config(config) if config is not None else SimConfig()
        settings = base.model_dump()
        overrides = {
            "personality": personality.value if personality else None,
            "port": port if port is not None else (None if config is not None else 8000),
            "host": host,
            "data": [str(d) for d in data] if data else None,
            "model": model,
            "startup_delay": startup_delay,
            "log_file": str(log_file) if log_file else None,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        if limit_mm_per_prompt is not None:
            settings["image_limit"] = limit_mm_per_prompt or None
        if zero_latency:
            settings["load"]["time_scale"] = 0.0
        cfg = config_from_dict(settings, source="sim options")

        # Ctrl-C is how a serving simulator stops (exit 0, below); during start-up it is an interruption.
        with interrupt_as_error("interrupted while the simulator was starting"):
            server = SimServer(cfg).start()

        def _terminate(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _terminate)
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited ignored
        try:
            known = len(server.index.samples)
            if not known:
                sys.stderr.write(
                    "vlmparity sim: warning: no --data, so it knows no question and gives generic answers "
                    "(accuracy near chance); pass --data DIR from `vlmparity synth` for the questions you run\n"
                )
            sys.stderr.write(
                f"vlmparity sim: {cfg.personality} personality serving {cfg.model!r} at {server.base_url} "
                f"({known} known questions; Ctrl-C to stop)\n"
            )
            sys.stderr.flush()
            typer.echo(server.base_url)  # last: whoever reads the URL has the lines above already
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            server.stop()
            sys.stderr.write(f"vlmparity sim: stopped after {len(server.log)} requests\n")
