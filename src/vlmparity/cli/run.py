"""`vlmparity run`: evaluate one or several OpenAI-compatible endpoints on MME / MMMU-val.

Every answer is committed to `<output-path>/vlmparity.sqlite` as it arrives; running the same command
again resumes (only missing or transiently failed samples are sent).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vlmparity.backends import kinds_text

if TYPE_CHECKING:
    from vlmparity.config import RunConfig
    from vlmparity.errors import VlmparityError
    from vlmparity.runner import Counters, Gate, RunOutcome


def register(app: typer.Typer) -> None:
    """Add the `run` command to the app."""
    app.command(
        "run",
        help="Evaluate OpenAI-compatible endpoints (vLLM, OVMS, SGLang, ...) on MME and MMMU-val with "
        "lmms-eval-identical scores. Every endpoint is sent byte-identical requests; every answer is "
        "stored as it arrives and rerunning the same command resumes.",
    )(run)


def run(
    endpoint: list[str] = typer.Option(
        [],
        "--endpoint",
        "-e",
        metavar="[NAME=]URL",
        help="Endpoint to evaluate, e.g. vllm=http://127.0.0.1:8000/v1 (repeat for several). "
        "Default: $OPENAI_API_BASE.",
    ),
    model: list[str] = typer.Option(
        [],
        "--model",
        "-m",
        metavar="[NAME=]MODEL",
        help="Model name to send (per endpoint with NAME=; default: the model the server lists).",
    ),
    kind: list[str] = typer.Option(
        [],
        "--kind",
        metavar="[NAME=]KIND",
        help=f"Backend: auto (detect), {kinds_text()}.",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="OPENAI_API_KEY",
        show_envvar=True,
        help="Bearer key (never written anywhere).",
    ),
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated tasks: mme, mmmu_val."),
    data: list[str] = typer.Option(
        [],
        "--data",
        metavar="TASK=SOURCE",
        help="Dataset per task: a local parquet folder/file or a Hugging Face id (default: lmms-eval's).",
    ),
    limit: float | None = typer.Option(
        None, "--limit", help="First N samples (or a fraction) in storage order, as lmms-eval's --limit."
    ),
    sample: int | None = typer.Option(
        None, "--sample", help="A seeded stratified sample of N samples (whole MME image pairs)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of --sample."),
    output_path: Path = typer.Option(
        ..., "--output-path", "-o", help="Output folder: run store, run.json, lmms-eval files per endpoint."
    ),
    concurrency: str = typer.Option(
        "auto", "--concurrency", "-c", help="Requests in flight per endpoint: a number, or auto (adaptive)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds per attempt."),
    max_retries: int = typer.Option(
        5,
        "--max-retries",
        help="Retries of transient failures per sample; also the N of lmms-eval's failure text "
        "'[LMMS_EVAL_REQUEST_FAILED after N retries]' (5 = lmms-eval's default).",
    ),
    image_format: str = typer.Option("png", "--image-format", help="png (lossless, lmms-eval's) or jpeg."),
    png_level: int = typer.Option(
        1,
        "--png-level",
        help="PNG compression level 0-9. Lossless at every level (the server decodes the same pixels): "
        "0 is fastest to encode and decode with the biggest bodies; 6 sends lmms-eval's exact bytes.",
    ),
    multi_image: str = typer.Option(
        "error",
        "--multi-image",
        help="Questions with more images than the server accepts: error (send every question, as "
        "lmms-eval does: the server's refusal is that question's outcome), skip (exclude), merge (tile the "
        "images into one). skip and merge use --max-images, else the limit a probe finds before sending.",
    ),
    max_images: int | None = typer.Option(
        None,
        "--max-images",
        help="Image limit per request for --multi-image skip|merge (wins over the start-up probe).",
    ),
    openai_error_style: str = typer.Option(
        "message",
        "--openai-error-style",
        help="How the lmms-eval policy renders a failed request's HTTP error, as openai-python does: "
        "message (openai-python >= 3.51: 'Error code: 400 - <message>') or body (older releases: the "
        "whole parsed body).",
    ),
    allow_identity_change: bool = typer.Option(
        False,
        "--allow-identity-change",
        help="Resume an endpoint although its server (kind, version, served model, URL) changed; "
        "failures are then sent again.",
    ),
    rerun_errors: bool = typer.Option(False, "--rerun-errors", help="Also resend permanent failures."),
    log_samples: bool = typer.Option(
        False, "--log-samples", help="Write lmms-eval <timestamp>_samples_<task>.jsonl files."
    ),
    stream: bool = typer.Option(False, "--stream", help="Stream responses (measures time to first token)."),
    logprobs: bool | None = typer.Option(
        None,
        "--logprobs/--no-logprobs",
        help="Ask for one log-probability per generated token (token-level closeness in `compare`). "
        "Default: on when every endpoint returns them and --stream is off; a resumed run keeps its setting.",
        show_default=False,
    ),
    ready_timeout: float = typer.Option(
        60.0, "--ready-timeout", help="Seconds to wait for each endpoint to be ready."
    ),
) -> None:
    """Evaluate the endpoints and print lmms-eval's table per endpoint."""
    config = run_config(
        endpoint=endpoint,
        model=model,
        kind=kind,
        api_key=api_key,
        tasks=tasks,
        data=data,
        limit=limit,
        sample=sample,
        seed=seed,
        output_path=output_path,
        concurrency=concurrency,
        timeout=timeout,
        max_retries=max_retries,
        image_format=image_format,
        png_level=png_level,
        multi_image=multi_image,
        max_images=max_images,
        openai_error_style=openai_error_style,
        allow_identity_change=allow_identity_change,
        rerun_errors=rerun_errors,
        log_samples=log_samples,
        stream=stream,
        logprobs=logprobs,
        ready_timeout=ready_timeout,
    )
    conclude(execute(config))


def run_config(
    *,
    endpoint: list[str],
    model: list[str],
    kind: list[str],
    api_key: str | None,
    tasks: str,
    data: list[str],
    limit: float | None,
    sample: int | None,
    seed: int,
    output_path: Path,
    concurrency: str,
    timeout: float,
    max_retries: int,
    image_format: str,
    png_level: int,
    multi_image: str,
    max_images: int | None,
    openai_error_style: str,
    allow_identity_change: bool,
    rerun_errors: bool,
    log_samples: bool,
    stream: bool,
    logprobs: bool | None,
    ready_timeout: float,
) -> RunConfig:
    """The run's settings from `run`'s options, validated (one line for each mistake, exit 4)."""
    from vlmparity.config import (
        GenerationConfig,
        RunConfig,
        RunOptions,
        SamplingPlan,
        parse_endpoints,
        parse_task_data,
        validation_message,
    )
    from vlmparity.errors import ConfigError

    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    from vlmparity.tasks.base import get_task

    for name in task_list:
        get_task(name)  # unknown task: one clear line listing the known ones
    endpoints = parse_endpoints(
        endpoint, models=model, kinds=kind, api_key=api_key, default_base=os.environ.get("OPENAI_API_BASE")
    )
    if not endpoints:
        raise ConfigError(
            "no endpoint given", hint="pass --endpoint NAME=http://HOST:PORT/v1 or set OPENAI_API_BASE"
        )
    conc: Any = concurrency.strip().lower()
    if conc != "auto":
        try:
            conc = int(conc)
        except ValueError:
            raise ConfigError(
                f"--concurrency {concurrency!r} is not a number", hint="a number or auto"
            ) from None
    try:
        config = RunConfig(
            endpoints=endpoints,
            tasks=task_list,
            data=parse_task_data(data, task_list),
            generation=GenerationConfig(stream=stream, logprobs=logprobs),
            plan=SamplingPlan(limit=limit, sample=sample, seed=seed),
            options=RunOptions(
                output_path=output_path,
                concurrency=conc,
                timeout=timeout,
                max_retries=max_retries,
                image_format=image_format,  # type: ignore[arg-type]
                png_level=png_level,
                multi_image=multi_image,  # type: ignore[arg-type]
                max_images=max_images,
                rerun_errors=rerun_errors,
                log_samples=log_samples,
                ready_timeout=ready_timeout,
                openai_error_style=openai_error_style.strip().lower(),  # type: ignore[arg-type]
                allow_identity_change=allow_identity_change,
            ),
        )
    except ValueError as exc:
        raise ConfigError(validation_message(exc), hint="see `vlmparity run --help`") from None
    return config


def execute(config: RunConfig, *, gate: Gate | None = None) -> RunOutcome:
    """Prepare the plans, run with a progress display and report's writers (run.json, lmms-eval files).

    `gate`: a sequential comparison's look gate (`compare --endpoint ... --sequential`).
    """
    from vlmparity import interrupt, lock, pipeline, runner

    output_path = config.options.output_path
    # Ctrl-C and SIGTERM end the run within seconds, keeping every answer (vlmparity.interrupt); the
    # output folder is locked before anything is read or sent, so a second invocation stops at once.
    with (
        interrupt.handling(),
        interrupt_as_error(
            f"interrupted; every answer received so far is saved in {output_path}",
            hint="rerun the same command to resume",
        ),
        lock.hold(output_path, "vlmparity run"),
    ):
        plans = runner.prepare(config)
        for plan in plans:
            lines = plan.plan.describe()
            _err(f"{plan.task.name}: {lines[0]}" + (f" ({lines[1]})" if plan.plan.note else ""))
        progress = RichProgress() if sys.stderr.isatty() else PlainProgress()
        with progress:
            return pipeline.run_endpoints(
                config, argv=["vlmparity", *sys.argv[1:]], progress=progress, plans=plans, gate=gate
            )


def conclude(outcome: RunOutcome) -> None:
    """Print what the run did (lmms-eval's tables, both policies, speed); raise if an endpoint did not finish."""
    _print_outcome(outcome)
    if outcome.errors:
        from vlmparity.errors import DataError

        broken = {ep.name for ep in outcome.endpoints if isinstance(ep.error, DataError)}
        raise unfinished_error(outcome.errors, data=broken)


@contextmanager
def interrupt_as_error(message: str, *, hint: str | None = None) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) inside the block becomes one error line and exit 130 (143).

    Typer turns a KeyboardInterrupt escaping a command into a bare exit 130 (nothing printed), so the
    commands that work for a while say themselves what happened to the work done so far.
    """
    try:
        yield
    except KeyboardInterrupt as exc:
        from vlmparity.errors import VlmparityError
        from vlmparity.interrupt import exit_code_of, signal_of

        name = signal_of(exc)
        if name != "SIGINT":  # Ctrl-C needs no name; a SIGTERM from elsewhere does
            message = message.replace("interrupted", f"interrupted by {name}", 1)
        raise VlmparityError(message, hint=hint, exit_code=exit_code_of(exc)) from None


def unfinished_error(errors: Mapping[str, str], *, data: Collection[str] = ()) -> VlmparityError:
    """One error for the endpoints that did not finish: each named once, with its own one-line error.

    `data` names the endpoints stopped by broken data (an image that cannot be decoded): a rerun stops at
    the same row, and once the data is fixed the store refuses it as other data, so no resume hint then.
    """
    from vlmparity.errors import DataError, EndpointError

    # Endpoint errors usually start with the endpoint's name already (the dispatcher's do); endpoints
    # stopped by the same broken row share one entry.
    grouped: dict[str, list[str]] = {}
    for name, text in errors.items():
        grouped.setdefault(text, []).append(name)
    details = [
        text if len(names) == 1 and text.startswith(f"{names[0]}:") else f"{', '.join(names)}: {text}"
        for text, names in grouped.items()
    ]
    message = f"not every endpoint finished: {'; '.join(details)}"
    if any(name in data for name in errors):
        hint = (
            "after fixing the data, run again with a new --output-path: "
            "this store is tied to the data it was made from"
        )
        if all(name in data for name in errors):
            return DataError(message, hint=hint)
        return EndpointError(message, hint=hint)
    # The endpoints' own hints usually say how to resume; say it once.
    resume = None if all("resume" in d for d in details) else "rerun the same command to resume"
    return EndpointError(message, hint=resume)


def _err(text: str) -> None:
    from vlmparity.masking import scrub_message

    sys.stderr.write(scrub_message(text) + "\n")
    sys.stderr.flush()


def _print_outcome(outcome: RunOutcome) -> None:
    from vlmparity.masking import mask_url
    from vlmparity.report import run_summary, tables

    for ep in outcome.endpoints:
        scores = outcome.scores.get(ep.name, [])
        if not scores:
            continue
        r = ep.resolved
        version = f" {r.server_version}" if r.server_version else ""
        typer.echo(f"\n{ep.name}: {r.kind.value}{version} at {mask_url(r.chat_url)}")
        # lmms-eval's header line before its table
        gen = ",".join(f"{k}={v}" for k, v in outcome.config.generation.public().items() if v is not None)
        limit = outcome.config.plan.limit
        typer.echo(
            f"openai (model_version={r.model}), gen_kwargs: ({gen}), limit: {limit}, offset: 0, "
            "num_fewshot: None, batch_size: 1"
        )
        typer.echo(tables.results_table([s.lmms_eval.result for s in scores]))
        typer.echo("\n" + run_summary.policies_table(scores))
        for s in scores:
            typer.echo(run_summary.outcomes_line(s))
    typer.echo("")
    for session in outcome.sessions:
        typer.echo(run_summary.summary_line(session))
    files = [f for paths in outcome.files.values() for f in paths]
    plan = f" (plan #{outcome.plan_id})" if outcome.plan_id is not None else ""
    typer.echo(
        f"\nwrote {outcome.run_json}{plan} and {len(files)} lmms-eval file(s) under "
        f"{outcome.config.options.output_path}"
    )
    if outcome.plan_id is not None and outcome.plan_id > 1:
        typer.echo(
            "the folder keeps every invocation's plan (see run.json 'plans'); compare and report use, per "
            "endpoint and task, the latest complete one unless --plan chooses"
        )


def errors_text(errors: int, connection_failures: int) -> str:
    """'2 error(s)', plus the attempts that could not reach the server when there were any."""
    text = f"{errors} error(s)"
    if connection_failures:
        text += f", {connection_failures} connection failure(s)"
    return text


class PlainProgress:
    """Progress for logs and pipes: a line when an endpoint starts and ends, and notable messages."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}
        self._last: dict[str, tuple[int, int, int]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def begin(self, endpoint: str, total: int) -> None:
        self._totals[endpoint] = total
        _err(f"{endpoint}: sending {total} request(s)")

    def update(self, endpoint: str, counters: Counters) -> None:
        self._last[endpoint] = (counters.done, counters.errors, counters.connection_failures)

    def end(self, endpoint: str) -> None:
        done, errors, refused = self._last.get(endpoint, (0, 0, 0))
        _err(f"{endpoint}: {done}/{self._totals.get(endpoint, 0)} done, {errors_text(errors, refused)}")

    def message(self, text: str) -> None:
        _err(text)


class RichProgress:
    """One rich progress bar per endpoint: rate, ETA, requests in flight and errors."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("in flight {task.fields[in_flight]}/{task.fields[limit]}"),
            TextColumn("[red]{task.fields[errors]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._ids: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def begin(self, endpoint: str, total: int) -> None:
        if endpoint in self._ids:
            self._progress.reset(self._ids[endpoint], total=total)
            return
        self._ids[endpoint] = self._progress.add_task(
            endpoint, total=total, rate="", in_flight=0, limit=0, errors=errors_text(0, 0)
        )

    def update(self, endpoint: str, counters: Counters) -> None:
        task_id = self._ids.get(endpoint)
        if task_id is None:
            return
        task = self._progress.tasks[task_id]
        speed = task.speed
        self._progress.update(
            task_id,
            completed=counters.done,
            rate=f"{speed:.1f} req/s" if speed else "",
            in_flight=counters.in_flight,
            limit=counters.concurrency,
            errors=errors_text(counters.errors, counters.connection_failures),
        )

    def end(self, endpoint: str) -> None:
        return None

    def message(self, text: str) -> None:
        from vlmparity.masking import scrub_message

        self._progress.console.print(scrub_message(text), markup=False, highlight=False)
