"""The demo: two simulated engines on loopback, a small synthetic MME + MMMU-val set, a real run, a verdict.

Everything a user does with real servers, end to end and offline: `vlmparity.sim` serves a vLLM-like
reference and an OVMS-like candidate of the same simulated model (same model seed) whose engine
answers a few percent of the questions differently (another engine seed), with modest latency and
capacity so the run shows real concurrency. The run goes through `runner.run` over HTTP exactly as
`vlmparity run` does, and the comparison through the same code as `vlmparity compare`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmparity.errors import ConfigError, DataError

if TYPE_CHECKING:
    from vlmparity.compare.analysis import Analysis, Settings
    from vlmparity.compare.join import Joined
    from vlmparity.runner import ProgressSink, RunOutcome
    from vlmparity.sim import SimConfig, SimServer

DEFAULT_OUT = Path("vlmparity-demo")
MARKER = "demo.json"  # written first: a folder holding it may be cleared by the next demo
# Sizes measured to finish in about a minute on a busy 2-core machine (see the final report).
N_MME = 280
N_MMMU = 150
DIVERGENCE = 0.03  # the candidate answers 3 % of the questions differently from the reference
REFERENCE, CANDIDATE = "vllm", "ovms"
# Modest load: a few tens of ms per request and 8 sequences at once, so requests really queue and
# the adaptive concurrency has something to find.
LOAD = {"capacity": 8, "base_latency": 0.04, "per_image": 0.01, "per_token": 0.003}


@dataclass(frozen=True)
class DemoSettings:
    """Where and how big the demo is."""

    out: Path = DEFAULT_OUT
    n_mme: int = N_MME
    n_mmmu: int = N_MMMU
    seed: int = 0  # data seed
    divergence: float = DIVERGENCE
    keep: bool = False  # keep data and run store (else only the report and the verdict JSON stay)


@dataclass
class DemoResult:
    """What the demo produced and how long each step took (seconds)."""

    out: Path
    report: Path
    verdict_json: Path
    analysis: Analysis
    joined: Joined
    outcome: RunOutcome
    timings: dict[str, float] = field(default_factory=dict)


def prepare_folder(out: Path) -> None:
    """Make `out` an empty demo folder: create it, or clear a previous demo's; never touch other files."""
    import orjson

    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out} exists and is not a folder", hint="pass another --out")
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise ConfigError(
                f"{out} is not empty and was not made by `vlmparity demo`",
                hint="pass --out with a new or empty folder",
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_bytes(orjson.dumps({"tool": "vlmparity demo", "created": time.time()}))
    except OSError as err:
        raise DataError(
            f"cannot write the demo into {out}: {err.strerror or err}", hint="pass --out"
        ) from err


def sim_configs(data: list[Path], divergence: float) -> tuple[SimConfig, SimConfig]:
    """The vLLM-like reference and the OVMS-like candidate: one simulated model, two engines."""
    from vlmparity.sim import SimConfig

    # image_limit None: a vLLM started with a multi-image limit, so MMMU's multi-image questions are
    # answered by both (the single-image default of llava would make them `unsupported`).
    ref = SimConfig.model_validate(
        {
            "personality": "vllm",
            "data": data,
            "image_limit": None,
            "answers": {"model_seed": 0, "engine_seed": 0, "divergence": 0.0},
            "load": LOAD,
        }
    )
    cand = SimConfig.model_validate(
        {
            "personality": "ovms",
            "data": data,
            "answers": {"model_seed": 0, "engine_seed": 1, "divergence": divergence},
            "load": LOAD,
        }
    )
    return ref, cand


@contextmanager
def running(configs: tuple[SimConfig, ...]) -> Iterator[list[SimServer]]:
    """Start the simulators side by side (each indexes the data on its own thread) and stop them after."""
    from concurrent.futures import ThreadPoolExecutor

    from vlmparity.sim import SimServer

    servers = [SimServer(c) for c in configs]
    with ExitStack() as stack:
        with ThreadPoolExecutor(len(servers)) as pool:
            futures = [pool.submit(s.start) for s in servers]
        for server, fut in zip(servers, futures, strict=True):
            if fut.exception() is None:
                stack.callback(server.stop)
        for fut in futures:
            fut.result()  # re-raise a start failure (the started ones are stopped by the stack)
        yield servers


def run_demo(
    settings: DemoSettings,
    *,
    progress: ProgressSink | None = None,
    step: Callable[[str], None] | None = None,
    verdict: Settings | None = None,
) -> DemoResult:
    """Generate data, serve two simulated engines, run both through the runner, compare, write the report."""
    from vlmparity import runner
    from vlmparity.compare.analysis import analyse
    from vlmparity.compare.join import load_joins, seed_cache
    from vlmparity.compare.to_report import json_document, report_data
    from vlmparity.config import RunConfig, RunOptions, parse_endpoints
    from vlmparity.data.synth import write_mme, write_mmmu
    from vlmparity.report.html import write_report

    say = step or (lambda _text: None)
    if settings.n_mme < 2 or settings.n_mmmu < 1:
        raise ConfigError(
            "the demo needs at least 2 MME and 1 MMMU question", hint="raise --n-mme / --n-mmmu"
        )
    out = settings.out
    timings: dict[str, float] = {}
    prepare_folder(out)
    data_dir, runs_dir = out / "data", out / "runs"

    t = time.perf_counter()
    say(f"generating {settings.n_mme} synthetic MME and {settings.n_mmmu} MMMU-val questions in {data_dir}")
    mme = write_mme(data_dir / "mme", n=settings.n_mme, seed=settings.seed)
    mmmu = write_mmmu(data_dir / "mmmu", n=settings.n_mmmu, seed=settings.seed)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    say(
        f"starting a vLLM-like reference and an OVMS-like candidate on loopback "
        f"(same simulated model; the candidate's engine answers {100 * settings.divergence:g}% differently)"
    )
    configs = sim_configs([mme, mmmu], settings.divergence)
    with running(configs) as (ref_sim, cand_sim):
        timings["servers"] = time.perf_counter() - t
        config = RunConfig(
            endpoints=parse_endpoints(
                [f"{REFERENCE}={ref_sim.base_url}", f"{CANDIDATE}={cand_sim.base_url}"]
            ),
            tasks=("mme", "mmmu_val"),
            data={"mme": str(mme), "mmmu_val": str(mmmu)},
            options=RunOptions(output_path=runs_dir),
        )
        t = time.perf_counter()
        plans = runner.prepare(config)
        say(f"running both endpoints through the runner (as `vlmparity run -o {runs_dir}`)")
        outcome = runner.run(config, argv=["vlmparity", "demo"], progress=progress, plans=plans)
        timings["run"] = time.perf_counter() - t
    if outcome.errors:
        from vlmparity.errors import EndpointError

        raise EndpointError(f"the demo run did not finish: {outcome.errors}")

    t = time.perf_counter()
    cache: dict[Any, Any] = {}
    seed_cache(cache, config.public(), plans)
    (joined,) = load_joins([runs_dir], reference=REFERENCE, candidates=[CANDIDATE], cache=cache)
    analysis = analyse(joined, verdict)
    report = write_report(report_data([analysis], [joined], title="vlmparity demo"), out / "report.html")
    verdict_json = out / "verdict.json"
    import orjson

    verdict_json.write_bytes(orjson.dumps(json_document([analysis]), option=orjson.OPT_INDENT_2) + b"\n")
    timings["compare"] = time.perf_counter() - t
    if not settings.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(runs_dir, ignore_errors=True)
    return DemoResult(out, report, verdict_json, analysis, joined, outcome, timings)
