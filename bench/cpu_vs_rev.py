"""Client CPU per request of this tree against an earlier revision, measured in one run.

A refactoring must not make the client slower. This checks out REV in a temporary git worktree, then runs
each tree's own `bench/throughput.py --skip-capacity` (the zero-latency simulator and the instant server:
the client's own cost) on the same data, alternating baseline / current `--rounds` times so both see the
same neighbours' load, and prints the client CPU per request of each and their ratio.

    python bench/cpu_vs_rev.py --rev 846ed1d [--rounds 2] [--n 200] [--png-level 1]

Each figure is the mean over the rows a throughput run prints ("client CPU X ms/request"): concurrency
16, 32 and auto against the simulator, 16 and auto against the instant server.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU = re.compile(r"client CPU ([0-9.]+) ms/request")


def throughput(tree: Path, data_dir: Path, n: int, png_level: int) -> list[float]:
    """The client CPU per request (ms) of every row of one `bench/throughput.py` run of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    where = subprocess.run(
        [sys.executable, "-c", "import vlmparity; print(vlmparity.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not where.startswith(str(tree)):
        sys.exit(f"{tree}: python imports vlmparity from {where or 'nowhere'}, not from this tree")
    cmd = [
        sys.executable,
        str(tree / "bench" / "throughput.py"),
        "--skip-capacity",
        "--n",
        str(n),
        "--png-levels",
        str(png_level),
        "--data-dir",
        str(data_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{tree}: throughput.py failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    values = [float(v) for v in CPU.findall(proc.stdout)]
    if not values:
        sys.exit(f"{tree}: throughput.py printed no 'client CPU ... ms/request' line")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the baseline revision (a commit, tag or branch)")
    ap.add_argument("--rounds", type=int, default=2, help="baseline/current pairs, interleaved")
    ap.add_argument("--n", type=int, default=200, help="questions per throughput run")
    ap.add_argument("--png-level", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlmparity-cpu-vs-rev-") as tmp:
        base = Path(tmp) / "baseline"
        add = ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base), args.rev]
        if subprocess.run(add, check=False).returncode != 0:
            sys.exit(f"cannot check out {args.rev!r} (git worktree add failed)")
        try:
            data_dir = Path(tmp) / "data"
            rows: dict[str, list[float]] = {"baseline": [], "current": []}
            print(
                f"client CPU per request, ms (mean of each run's rows); baseline {args.rev}, current {ROOT}"
            )
            for k in range(1, max(1, args.rounds) + 1):
                for name, tree in (("baseline", base), ("current", ROOT)):
                    values = throughput(tree, data_dir, args.n, args.png_level)
                    rows[name].extend(values)
                    print(f"   round {k} {name:>8}: {statistics.fmean(values):6.2f}  ({len(values)} rows)")
            b, c = statistics.fmean(rows["baseline"]), statistics.fmean(rows["current"])
            print(
                f"mean: baseline {b:.2f}, current {c:.2f}; current / baseline = {c / b:.3f} ({(c / b - 1):+.1%})"
            )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
