"""`vlmparity compare`: is each candidate as accurate as the reference? A paired verdict and a CI exit code.

Two ways in:
- finished runs: `vlmparity compare RUN_DIR... [--reference NAME] [--candidate NAME...]`, where each
  RUN_DIR is a `vlmparity run --output-path` folder (it may hold several endpoints); nothing is sent;
- endpoints: `vlmparity compare --endpoint ref=URL --endpoint cand=URL --tasks ... --output-path DIR`
  runs them first with `vlmparity run` itself (same options, same code), then compares.

The run options are not declared here: they are `vlmparity run`'s own parameters, added to this
command's signature (`with_run_options`) and handed to `vlmparity.cli.run.run` unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from vlmparity.compare.analysis import Analysis, Settings
    from vlmparity.compare.closeness import Closeness
    from vlmparity.compare.join import Joined

RUN_PANEL = "Run first (with --endpoint): the options of `vlmparity run`"
VERDICT_PANEL = "Verdict"

COMPARE_HELP = (
    "Compare endpoints' runs with paired statistics and an equivalence verdict: is each candidate as "
    "accurate as the reference? Give finished run folders, or --endpoint twice (plus --tasks and "
    "--output-path) to run them first. Exit code: 0 equivalent, 1 not equivalent, 2 inconclusive, "
    "3 infrastructure failure (errors above --max-error-rate, missing answers, differing requests), "
    "4 usage error."
)


# ----- options shared with `vlmparity report` ---------------------------------------------------------


def verdict_parameters() -> list[inspect.Parameter]:
    """The verdict options of `compare` and `report` (margins, alpha, policy, error gate)."""
    kw = inspect.Parameter.KEYWORD_ONLY

    def opt(name: str, annotation: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
        info = typer.Option(default, *decls, help=help, rich_help_panel=VERDICT_PANEL)
        return inspect.Parameter(name, kw, default=info, annotation=annotation)

    return [
        opt("reference", str | None, None, "--reference", "-r",
            help="The reference run: an endpoint name (FOLDER:NAME when several folders hold it). "
            "Default: the first --endpoint, else the first run found."),
        opt("candidate", list[str], [], "--candidate",
            help="A run to compare with the reference (repeatable). Default: every other run "
            "(with --endpoint: the other endpoints given)."),
        opt("margin", float, 1.0, "--margin",
            help="Equivalence margin for accuracies (mmmu_acc, mme_acc), in percentage points."),
        opt("mme_margin_perception", float, 50.0, "--mme-margin-perception",
            help="Equivalence margin for mme_perception_score, in score points (of 2000)."),
        opt("mme_margin_cognition", float, 20.0, "--mme-margin-cognition",
            help="Equivalence margin for mme_cognition_score, in score points (of 800)."),
        opt("alpha", float, 0.05, "--alpha", help="Significance level (Holm-corrected across the metrics)."),
        opt("max_error_rate", float, 0.02, "--max-error-rate",
            help="Largest share of failed requests per endpoint before the comparison is an "
            "infrastructure failure (exit 3)."),
        opt("plan", list[str], [], "--plan",
            help="Which plan of a reused output folder to compare: --plan ID (every run) or NAME=ID, with "
            "ID as listed under 'plans:'. Default: per endpoint and task the latest complete one."),
        opt("policy", str, "answered", "--policy",
            help="Failures in the verdict: answered (samples either endpoint failed are left out; "
            "failures are gated by --max-error-rate) or strict (a failure is a wrong answer). The other "
            "policy's verdict is shown too. (Former names: excluded, parity.)"),
    ]  # fmt: skip


SEQUENTIAL_PANEL = "Sequential (with --endpoint): stop as soon as the verdict is known"


def sequential_parameters() -> list[inspect.Parameter]:
    """--sequential, --looks, --continue-to-full (compare --endpoint only)."""
    kw = inspect.Parameter.KEYWORD_ONLY

    def opt(name: str, annotation: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
        info = typer.Option(default, *decls, help=help, rich_help_panel=SEQUENTIAL_PANEL)
        return inspect.Parameter(name, kw, default=info, annotation=annotation)

    return [
        opt("sequential", bool, False, "--sequential",
            help="Send the samples in a balanced seeded order, examine the data at planned looks and stop "
            "sending once every metric is decided (a group-sequential design with alpha spending: "
            "O'Brien-Fleming-type for equivalence, Hwang-Shih-DeCani for a difference; see the user guide). Rerunning the same command stops at the same look."),
        opt("looks", int, 10, "--looks", help="Equally spaced looks of --sequential (the last at the full plan)."),
        opt("continue_to_full", bool, False, "--continue-to-full",
            help="After a --sequential stop: send the rest of the plan and give the fixed-size verdict."),
    ]  # fmt: skip


# The options that set one metric's margin (in its unit, score points): option -> metric.
MARGIN_OPTIONS = {
    "mme_margin_perception": "mme_perception_score",
    "mme_margin_cognition": "mme_cognition_score",
}


def settings_from(options: dict[str, Any]) -> Settings:
    """Typed verdict settings from the CLI options (accuracy margin in points → fraction; the per-metric
    margins onto `Settings.margins`, the other metrics keeping their specs' defaults)."""
    from vlmparity.compare.analysis import Settings, default_margins
    from vlmparity.errors import ConfigError

    margins = default_margins()
    for name, metric in MARGIN_OPTIONS.items():
        value = float(options[name])
        if not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        margins[metric] = value
    return Settings(
        margin=float(options["margin"]) / 100.0,
        margins=margins,
        alpha=float(options["alpha"]),
        policy=str(options["policy"]).strip().lower(),
        max_error_rate=float(options["max_error_rate"]),
    )


def data_overrides(values: Sequence[str]) -> dict[str, str]:
    """`--data TASK=SOURCE` for runs whose data moved (or was given by a relative path elsewhere)."""
    from vlmparity.config import parse_task_data
    from vlmparity.tasks.base import task_names

    return parse_task_data(list(values), task_names())


def with_parameters(func: Callable[..., Any], params: Sequence[inspect.Parameter]) -> Callable[..., Any]:
    """`func(**kwargs)` presented to Typer with the given parameters."""

    def command(**kwargs: Any) -> Any:
        return func(**kwargs)

    command.__signature__ = inspect.Signature(list(params))  # type: ignore[attr-defined]
    command.__doc__ = func.__doc__
    return command


def run_parameters() -> list[inspect.Parameter]:
    """`vlmparity run`'s own options, optional here (they apply only with --endpoint)."""
    from vlmparity.cli import run as run_cmd

    out = []
    for p in inspect.signature(run_cmd.run, eval_str=True).parameters.values():
        info = copy.copy(p.default)
        info.rich_help_panel = RUN_PANEL
        annotation = p.annotation
        if (
            info.default is ...
        ):  # required by `run` (--tasks, --output-path): required here only with --endpoint
            info.default = None
            annotation = annotation | None
        out.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation))
    return out


def run_defaults() -> dict[str, Any]:
    """The default of each run option as this command declares it."""
    return {p.name: p.default.default for p in run_parameters()}


# ----- the command ------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add the `compare` command to the app."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "run_dirs",
            kw,
            default=typer.Argument(
                None,
                metavar="[RUN_DIR]...",
                help="`vlmparity run --output-path` folders.",
                show_default=False,
            ),
            annotation=list[Path] | None,
        ),
        *verdict_parameters(),
        inspect.Parameter(
            "report",
            kw,
            default=typer.Option(
                None,
                "--report",
                help="Where to write the HTML report (default: <first run folder>/report.html).",
            ),
            annotation=Path | None,
        ),
        inspect.Parameter(
            "no_report",
            kw,
            default=typer.Option(False, "--no-report", help="Write no HTML report."),
            annotation=bool,
        ),
        inspect.Parameter(
            "json_out",
            kw,
            default=typer.Option(
                None,
                "--json",
                help="Write the verdict as JSON to this file ('-': stdout, and the tables go to stderr).",
            ),
            annotation=str | None,
        ),
        inspect.Parameter(
            "top",
            kw,
            default=typer.Option(10, "--top", help="Disagreements to list on the terminal."),
            annotation=int,
        ),
        *sequential_parameters(),
        *run_parameters(),
    ]
    app.command("compare", help=COMPARE_HELP)(with_parameters(compare, params))


def compare(**options: Any) -> None:
    """Run (with --endpoint) and compare; exit with the verdict's code."""
    from vlmparity import interrupt, lock
    from vlmparity.errors import ConfigError

    settings = settings_from(options)
    top = int(options["top"])
    if top < 0:
        raise ConfigError(f"--top must be >= 0, got {top}")
    names = set(run_defaults())
    run_options = {k: x for k, x in options.items() if k in names}
    dirs = list(options.get("run_dirs") or [])
    reference: str | None = options.get("reference")
    candidates = list(options.get("candidate") or [])
    endpoints = run_options.get("endpoint") or []
    with contextlib.ExitStack() as stack:
        stack.enter_context(interrupt.handling())
        if endpoints:
            # the folder stays locked from the run to the report written into it
            stack.enter_context(
                lock.hold(_check_endpoint_mode(run_options, len(endpoints)), "vlmparity compare")
            )
        code = _compare(options, settings, top, run_options, dirs, reference, candidates, endpoints)
    raise SystemExit(code)


def _compare(
    options: dict[str, Any],
    settings: Settings,
    top: int,
    run_options: dict[str, Any],
    dirs: list[Path],
    reference: str | None,
    candidates: list[str],
    endpoints: list[str],
) -> int:
    from vlmparity import lock
    from vlmparity.cli import run as run_cmd
    from vlmparity.compare.join import load_joins, parse_plan_picks
    from vlmparity.errors import ConfigError

    picks = parse_plan_picks(options.get("plan") or [])
    sequential, to_full = bool(options.get("sequential")), bool(options.get("continue_to_full"))
    if (sequential or to_full) and not endpoints:
        flag = "--sequential" if sequential else "--continue-to-full"
        raise ConfigError(f"{flag} works only when compare sends the samples", hint="add --endpoint twice")
    if endpoints:
        return _run_and_compare(options, settings, top, run_options, reference, candidates, endpoints, picks)
    _check_runs_mode(run_options, dirs)
    for folder in dirs:
        lock.check_not_written(folder)
    data = data_overrides(run_options.get("data") or [])
    with run_cmd.interrupt_as_error(
        "interrupted while comparing (the runs are unchanged)", hint="rerun the command"
    ):
        joins = load_joins(dirs, reference=reference, candidates=candidates, data=data, plans=picks)
        adjust = None
        if len(dirs) == 1:  # a folder a sequential comparison stopped early
            from vlmparity.compare.looks import replay

            replayed = replay(Path(dirs[0]), joins, settings)
            if replayed is not None:
                joins, adjust = replayed
        return finish(
            joins, settings, options, default_report=Path(dirs[0]) / "report.html", top=top, adjust=adjust
        )


def _run_and_compare(
    options: dict[str, Any],
    settings: Settings,
    top: int,
    run_options: dict[str, Any],
    reference: str | None,
    candidates: list[str],
    endpoints: list[str],
    picks: dict[str, int],
) -> int:
    """--endpoint: run them (as `vlmparity run` does, printing what it prints), then compare that run."""
    from vlmparity import pipeline
    from vlmparity.cli import run as run_cmd
    from vlmparity.config import parse_endpoints

    output = _check_endpoint_mode(run_options, len(endpoints))
    given = [e.name for e in parse_endpoints(endpoints)]
    reference = reference or given[0]
    candidates = candidates or [n for n in given if n != reference]
    sequential, to_full = bool(options.get("sequential")), bool(options.get("continue_to_full"))
    gate = None
    if sequential and not to_full:
        gate = _sequential_gate(options, settings, reference, candidates, run_options)
    elif to_full:
        from vlmparity.compare.looks import supersede

        supersede(output)
    config = run_cmd.run_config(**run_options)
    outcome = run_cmd.execute(config, gate=gate)  # Ctrl-C while running: `run`'s own line (answers kept)
    run_cmd.conclude(outcome)
    typer.echo("")
    with run_cmd.interrupt_as_error(
        f"interrupted while comparing; the runs are saved in {output}",
        hint="rerun the same command: nothing is sent again",
    ):
        compared = pipeline.compare_run(
            outcome, reference=reference, candidates=candidates, settings=settings, gate=gate, picks=picks
        )
        return finish(
            compared.joins, settings, options, default_report=output / "report.html", top=top,
            analysed=(compared.analyses, compared.closeness),
        )  # fmt: skip


def _sequential_gate(
    options: dict[str, Any],
    settings: Settings,
    reference: str,
    candidates: list[str],
    run_options: dict[str, Any],
) -> Any:
    from vlmparity.compare.looks import LookGate
    from vlmparity.errors import ConfigError

    looks = int(options.get("looks") or 0)
    if not 1 <= looks <= 100:
        raise ConfigError(f"--looks must be between 1 and 100, got {looks}")
    return LookGate(settings, reference, candidates, looks=looks, seed=int(run_options.get("seed") or 0))


def _check_endpoint_mode(run_options: dict[str, Any], n_endpoints: int) -> Path:
    from vlmparity.errors import ConfigError

    if n_endpoints < 2:
        raise ConfigError(
            "compare --endpoint needs at least two endpoints", hint="--endpoint ref=URL --endpoint cand=URL"
        )
    if not run_options.get("tasks"):
        raise ConfigError("compare --endpoint needs --tasks", hint="e.g. --tasks mme,mmmu_val")
    output = run_options.get("output_path")
    if output is None:
        raise ConfigError(
            "compare --endpoint needs --output-path",
            hint="the folder where the runs are stored (rerunning resumes them)",
        )
    return Path(output)


def _check_runs_mode(run_options: dict[str, Any], dirs: Sequence[Path]) -> None:
    from vlmparity.errors import ConfigError

    defaults = run_defaults()
    # --data may point at moved data; the API key may come from the environment.
    given = [
        "--" + k.replace("_", "-")
        for k, x in run_options.items()
        if k not in ("data", "api_key") and _given(x, defaults[k])
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: used only when compare runs endpoints (--endpoint NAME=URL)",
            hint="finished runs are compared as they were run",
        )
    if not dirs:
        raise ConfigError(
            "nothing to compare",
            hint="pass `vlmparity run` output folders, or --endpoint twice with --tasks and --output-path",
        )


def _given(value: Any, default: Any) -> bool:
    if isinstance(value, list | tuple):
        return len(value) > 0
    return bool(value != default)


def finish(
    joins: Sequence[Joined],
    settings: Settings,
    options: dict[str, Any],
    *,
    default_report: Path,
    top: int,
    adjust: Callable[[Analysis, Joined], Analysis] | None = None,
    analysed: tuple[list[Analysis], list[Closeness]] | None = None,
) -> int:
    """Analyse (unless `analysed` gives the analyses and closeness), print, write the JSON and the HTML
    report; return the exit code.

    `adjust`: a sequential comparison's verdict in place of the fixed-size one (`LookGate.adjust`).
    """
    from vlmparity.compare.analysis import overall_exit_code
    from vlmparity.pipeline import analyse_joins
    from vlmparity.report.closeness import terminal_text
    from vlmparity.report.terminal import plan_lines, render_terminal

    # Token-level closeness: beside the verdict, never part of it (no influence on the exit code).
    analyses, close = analysed if analysed is not None else analyse_joins(joins, settings, adjust)
    # With --json - stdout carries the JSON alone; the human text goes to stderr.
    to_stderr = options.get("json_out") == "-"
    for line in plan_lines(joins):
        typer.echo(line, err=to_stderr)
    for a, c in zip(analyses, close, strict=True):
        typer.echo(render_terminal(a, top), err=to_stderr)
        typer.echo(terminal_text(c, top), err=to_stderr)
    code = overall_exit_code(analyses)
    if len(analyses) > 1:
        typer.echo(
            f"overall exit code {code} (the worst of the candidates; infrastructure failures first)",
            err=to_stderr,
        )
    if not options.get("no_report"):
        path = write_html(analyses, joins, options.get("report") or default_report, close)
        typer.echo(f"report: {path}", err=to_stderr)
    if options.get("json_out"):
        write_json(analyses, str(options["json_out"]), close)
    return code


def write_json(analyses: Sequence[Analysis], target: str, close: Sequence[Closeness] = ()) -> None:
    """The machine-readable verdict to a file, or stdout for '-' (closeness beside each candidate's verdict)."""
    import orjson

    from vlmparity.errors import ConfigError
    from vlmparity.report.comparison import json_document

    doc = json_document(analyses)
    for record, c in zip(doc["candidates"], close, strict=False):
        record["closeness"] = c.as_dict()
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    if target == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise ConfigError(
            f"cannot write --json {path}: {err.strerror or err}", hint="choose a writable path"
        ) from err


def write_html(
    analyses: Sequence[Analysis], joins: Sequence[Joined], target: Path, close: Sequence[Closeness] = ()
) -> Path:
    """Build the report's data and write the self-contained HTML page."""
    from vlmparity.errors import ConfigError
    from vlmparity.report.closeness import report_view, row_fingerprints
    from vlmparity.report.comparison import report_data
    from vlmparity.report.html import write_report

    data = report_data(analyses, joins)
    if close:
        data.closeness = report_view(close)
        marks = row_fingerprints(close)
        for row in data.disagreements:
            row.fingerprints = marks.get((row.task, row.sample_id), {})
    try:
        return write_report(data, target)
    except OSError as err:
        raise ConfigError(
            f"cannot write the report {target}: {err.strerror or err}", hint="choose a writable --report path"
        ) from err
