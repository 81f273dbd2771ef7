"""How does `vlmparity run` scale to the full sets? Memory, CPU, start-up and rescoring on full MME + MMMU.

Full-size synthetic MME (2374 questions, 1187 images) and MMMU-val (900 questions, up to 7 images each)
at real image sizes, against a zero-latency simulator in its own process, so that every cost measured is
the client's. The client runs as a child process (`python -m vlmparity run ... --log-samples`) and is
measured with wait4's rusage (its own CPU and peak RSS) while its RSS is sampled from /proc to show
which phase the peak falls in. Then the finished run is rescored from its store without any server
(`vlmparity.compare.join.load_run`, the path `vlmparity compare` / `report` take: rebuild the samples
from the data without image bytes, score every endpoint's stored answers under both policies), and the
same `run` command is run again (it finds every answer stored, sends nothing, rescores and rewrites the outputs).

Printed next to their goals: peak RSS <= 1 GiB, rescoring <= 2 s.

    python bench/scale.py [--data DIR] [--work DIR] [--profile] [--what-if CACHE_MB]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_lmms_eval import (
    DATA_FOLDERS,
    ChildStats,
    Setting,
    SimProcess,
    ensure_data,
    machine_line,
    read_chat_log,
    sim_config,
    vlmparity_command,
)

# `vlmparity ...` with ImageEncoder's data-URL cache capped at argv[1] MB instead of its default (a what-if
# for tuning the cap, not the shipped tool).
WHAT_IF_CLIENT = """\
import sys
import vlmparity.data.images as im

im.ImageEncoder.__init__.__kwdefaults__["max_cache_bytes"] = int(sys.argv.pop(1)) << 20
from vlmparity.cli import main
main(sys.argv[1:])
"""
RSS_GOAL_MB = 1024.0
RESCORE_GOAL_S = 2.0
TASKS = ("mme", "mmmu_val")


@dataclass
class Sampled:
    """A child's measurements plus its RSS over time: (seconds since start, MB)."""

    stats: ChildStats
    rss: list[tuple[float, float]] = field(default_factory=list)


def proc_rss_mb(pid: int) -> float | None:
    """Current resident set size of a process from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def run_sampled(cmd: Sequence[str], *, env: Mapping[str, str], log: Path, every: float = 0.1) -> Sampled:
    """Run a command measured by wait4 (CPU, peak RSS) while sampling its RSS every `every` seconds."""
    import subprocess

    samples: list[tuple[float, float]] = []
    with log.open("wb") as out:
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss = proc_rss_mb(proc.pid)
                if rss is not None:
                    samples.append((time.perf_counter() - t0, rss))
                done.wait(every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stats = ChildStats(
        proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, started
    )
    return Sampled(stats, samples)


def rss_at(samples: Sequence[tuple[float, float]], t: float) -> float | None:
    """The last RSS sample taken at or before t seconds."""
    before = [mb for s, mb in samples if s <= t]
    return before[-1] if before else None


def phase_peaks(
    samples: Sequence[tuple[float, float]], marks: Sequence[tuple[str, float]]
) -> list[tuple[str, float]]:
    """Peak RSS within each phase; `marks` are (phase name, start second), in order."""
    out = []
    for i, (name, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else float("inf")
        inside = [mb for s, mb in samples if start <= s < end]
        if inside:
            out.append((name, max(inside)))
    return out


def goal_line(what: str, value: float, unit: str, goal: float) -> str:
    verdict = "met" if value <= goal else "MISSED"
    return f"   {what:<44} {value:>9.2f} {unit:<4} goal <= {goal:g} {unit}: {verdict}"


# ----- rescoring (runs in a child process: --rescore OUT) ----------------------------------------------------


def rescore(out: Path) -> dict[str, Any]:
    """Time the rescoring of every run in an output folder from its store (no server)."""
    t0 = time.perf_counter()
    from vlmparity.compare.join import discover, load_run
    from vlmparity.runner import prepare_task, score_endpoint
    from vlmparity.store import Store

    t_import = time.perf_counter() - t0
    refs = discover([out])
    config = refs[0].run.config
    plan = config.get("plan") or {}
    t1 = time.perf_counter()
    # what compare/report load: the samples without their image bytes (scoring never reads them)
    plans = [
        prepare_task(t, str(config["data"][t]), limit=plan.get("limit"), sample=plan.get("sample"), seed=plan.get("seed") or 0, images=False)
        for t in config["tasks"]
    ]  # fmt: skip
    t_data = time.perf_counter() - t1
    t5 = time.perf_counter()
    import vlmparity.stats  # noqa: F401  (the intervals' module; scipy.stats only if it imports it)

    t_stats = time.perf_counter() - t5
    t2 = time.perf_counter()
    with Store.open(out, create=False) as store:
        scores = score_endpoint(store, refs[0].run.run_id, refs[0].endpoint, plans)
    t_score = time.perf_counter() - t2
    t3 = time.perf_counter()
    loaded = load_run(refs[0])  # the whole compare/report path from cold: data, fingerprint check, scoring
    t_load_run = time.perf_counter() - t3
    t4 = time.perf_counter()
    text_rows = read_text_columns(config)  # what rescoring needs of the data: no image bytes
    t_text = time.perf_counter() - t4
    metrics = {s.task: dict(s.lmms_eval.result.metrics) for s in scores}
    assert {t: dict(s.lmms_eval.result.metrics) for t, s in loaded.scores.items()} == metrics
    return {
        "import_s": t_import,
        "data_s": t_data,
        "score_s": t_score,
        "stats_import_s": t_stats,
        "load_run_s": t_load_run,
        "text_columns_s": t_text,
        "text_rows": text_rows,
        "samples": sum(len(s.samples) for s in scores),
        "scipy_imported": "scipy.stats" in sys.modules,
        "metrics": metrics,
    }


def read_text_columns(config: Mapping[str, Any]) -> int:
    """Read every task's parquet files without the image columns (pyarrow projection); returns the rows.

    This is the part of the data that scoring uses; timing it shows what rescoring would cost if the
    samples were rebuilt without image bytes.
    """
    import pyarrow.parquet as pq

    rows = 0
    for task in config["tasks"]:
        source = Path(str(config["data"][task]))
        files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
        for f in files:
            schema = pq.read_schema(f)
            keep = [n for n in schema.names if not (n == "image" or n.startswith("image_"))]
            rows += pq.read_table(f, columns=keep).num_rows
    return rows


# ----- main --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=None, help="data root with mme/ and mmmu/ (default: synth)")
    ap.add_argument("--work", type=Path, default=None, help="keep the run's output folder and logs here")
    ap.add_argument(
        "--profile", action="store_true", help="also run the client under cProfile (prints the top)"
    )
    ap.add_argument(
        "--what-if",
        type=int,
        default=None,
        metavar="CACHE_MB",
        help="diagnostic: run the client with ImageEncoder's data-URL cache capped at CACHE_MB instead of its "
        "default",
    )
    ap.add_argument(
        "--two-speeds",
        action="store_true",
        help="also run two endpoints at once, one zero-latency and one slow (capacity 4, 0.25 s): the fast "
        "one runs far ahead and the requests built for both wait for the slow one",
    )
    ap.add_argument("--rescore", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rescore is not None:
        print(json.dumps(rescore(args.rescore)))
        return 0

    import shutil
    import subprocess

    print(f"machine: {machine_line()}")
    data_root = ensure_data(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="vlmparity-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    zero = Setting("zero", capacity=4096, latency=0.0, time_scale=0.0)
    base_cmd = cmd = vlmparity_command(Path(sys.executable), "{URL}", data_root, None, out)
    if args.what_if is not None:
        cmd = [cmd[0], "-c", WHAT_IF_CLIENT, str(args.what_if), *cmd[3:]]
        print(f"WHAT-IF: the client runs with the image encoder's cache capped at {args.what_if} MB")
    print(f"data: {data_root} (full synthetic MME 2374 + MMMU-val 900, real image sizes)")
    print("client: " + " ".join(cmd))
    try:
        log_file = work / "sim.jsonl"
        log_file.unlink(missing_ok=True)
        with SimProcess(
            sim_config(zero, [data_root / DATA_FOLDERS[t] for t in TASKS], log_file), work
        ) as sim:
            full = [c.replace("{URL}", sim.base_url) for c in cmd]
            print(f"simulator: zero latency, unlimited capacity, own process ({sim.base_url})")
            first = run_sampled(full, env=os.environ, log=work / "run.log")
            n_first = len(read_chat_log(log_file))
            again = run_sampled(full, env=os.environ, log=work / "rerun.log")
            sent_again = len(read_chat_log(log_file)) - n_first
        if first.stats.returncode != 0 or again.stats.returncode != 0:
            raise SystemExit(f"vlmparity run failed; see {work / 'run.log'} and {work / 'rerun.log'}")
        entries = [e for e in read_chat_log(log_file)[:n_first] if e.get("sample_id")]
        n = len(entries)
        t_first = entries[0]["time"] - first.stats.started
        t_last = entries[-1]["time"] - first.stats.started
        resc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--rescore", str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(resc.stdout.strip().splitlines()[-1])

        s = first.stats
        print(
            f"\nfull run: {n} requests in {s.wall_s:.1f} s wall ({n / (t_last - t_first):.1f} req/s while sending)"
        )
        print(goal_line("peak RSS of the client", s.maxrss_mb, "MB", RSS_GOAL_MB))
        marks = [("loading data, probing", 0.0), ("sending", t_first), ("scoring, writing outputs", t_last)]
        for name, peak in phase_peaks(first.rss, marks):
            print(f"      peak while {name:<28} {peak:>7.0f} MB")
        print(
            f"   {'client CPU per request':<44} {s.cpu_s / n * 1000:>9.1f} ms   ({s.cpu_s:.1f} s CPU over {n} requests, all phases)"
        )
        print(
            f"   {'time to first request':<44} {t_first:>9.2f} s    (process start -> the simulator sees it)"
        )
        print(f"   {'sending (first to last request)':<44} {t_last - t_first:>9.2f} s")
        print(f"   {'scoring and outputs after the last request':<44} {s.wall_s - t_last:>9.2f} s")
        print("\nrescoring the finished run from its store (no server; a fresh process):")
        print(
            f"   imports {r['import_s']:.2f} s, loading the data without images {r['data_s']:.2f} s "
            "(samples are rebuilt from it)"
        )
        print(
            f"      (pyarrow alone reading the non-image columns of the same files: {r['text_columns_s']:.2f} s, "
            f"{r['text_rows']} rows)"
        )
        scoring = r["stats_import_s"] + r["score_s"]
        print(goal_line("scoring every stored answer (both policies)", scoring, "s", RESCORE_GOAL_S))
        print(
            f"      (of which importing the statistics {r['stats_import_s']:.2f} s, scoring and intervals "
            f"{r['score_s']:.2f} s; scipy.stats imported: {'yes' if r['scipy_imported'] else 'no'})"
        )
        print(
            goal_line("data + scoring (what compare/report pay)", r["data_s"] + scoring, "s", RESCORE_GOAL_S)
        )
        print(
            goal_line(
                "compare.join.load_run, cold (the same, end to end)", r["load_run_s"], "s", RESCORE_GOAL_S
            )
        )
        a = again.stats
        print(goal_line("rerunning the same `vlmparity run` (wall)", a.wall_s, "s", RESCORE_GOAL_S))
        print(
            f"      the rerun sent {sent_again} request(s) (only the endpoint probe is expected), peak RSS {a.maxrss_mb:.0f} MB, CPU {a.cpu_s:.1f} s"
        )
        print(f"   scores: {json.dumps(r['metrics'])}")
        if args.two_speeds:
            two_speeds(base_cmd=base_cmd, data_root=data_root, work=work)
        if args.profile:
            profile_client(full_cmd=base_cmd, data_root=data_root, work=work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\noutput folder and logs kept in {work}")
    return 0


def two_speeds(*, base_cmd: Sequence[str], data_root: Path, work: Path) -> None:
    """Peak RSS when one endpoint runs far ahead of another (the request book holds what the slow one
    has not taken yet, up to its cap)."""
    import shutil

    out = work / "out-two-speeds"
    shutil.rmtree(out, ignore_errors=True)
    dirs = [data_root / DATA_FOLDERS[t] for t in TASKS]
    fast = Setting("fast", capacity=4096, latency=0.0, time_scale=0.0)
    slow = Setting("slow", capacity=4, latency=0.25)
    with (
        SimProcess(sim_config(fast, dirs, work / "sim-fast.jsonl"), work) as a,
        SimProcess(sim_config(slow, dirs, work / "sim-slow.jsonl"), work) as b,
    ):
        cmd = [c.replace(str(work / "out"), str(out)) for c in base_cmd]
        i = cmd.index("--endpoint")
        cmd[i : i + 2] = ["--endpoint", f"fast={a.base_url}", "--endpoint", f"slow={b.base_url}"]
        print("\ntwo endpoints at once: fast (zero latency) and slow (capacity 4, 0.25 s = 16 req/s)")
        print("client: " + " ".join(cmd))
        run = run_sampled(cmd, env=os.environ, log=work / "two-speeds.log")
        fast_log = [e for e in read_chat_log(work / "sim-fast.jsonl") if e.get("sample_id")]
        slow_log = [e for e in read_chat_log(work / "sim-slow.jsonl") if e.get("sample_id")]
    if run.stats.returncode != 0:
        raise SystemExit(f"vlmparity run failed; see {work / 'two-speeds.log'}")
    st = run.stats
    fast_done = fast_log[-1]["time"] - st.started
    print(
        f"   {len(fast_log)} + {len(slow_log)} requests in {st.wall_s:.1f} s wall; the fast endpoint finished "
        f"after {fast_done:.1f} s, CPU {st.cpu_s:.1f} s"
    )
    print(goal_line("peak RSS of the client, two speeds", st.maxrss_mb, "MB", RSS_GOAL_MB))
    marks = [("until the fast endpoint finished", 0.0), ("the slow one alone, outputs", fast_done)]
    for name, peak in phase_peaks(run.rss, marks):
        print(f"      peak while {name:<34} {peak:>7.0f} MB")


def profile_client(*, full_cmd: Sequence[str], data_root: Path, work: Path) -> None:
    """Run the full client once more under cProfile against a fresh zero-latency simulator."""
    import pstats
    import shutil
    import subprocess

    out = work / "out-profile"
    shutil.rmtree(out, ignore_errors=True)
    zero = Setting("zero", capacity=4096, latency=0.0, time_scale=0.0)
    prof = work / "client.prof"
    log_file = work / "sim-profile.jsonl"
    with SimProcess(sim_config(zero, [data_root / DATA_FOLDERS[t] for t in TASKS], log_file), work) as sim:
        cmd = [c.replace("{URL}", sim.base_url).replace(str(work / "out"), str(out)) for c in full_cmd]
        cmd = [cmd[0], "-m", "cProfile", "-o", str(prof), "-m", *cmd[2:]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"\ncProfile of the main thread ({prof}), top 15 by cumulative time:")
    pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    sys.exit(main())
