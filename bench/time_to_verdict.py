"""Wall time to a verdict: `compare --sequential` vs the fixed-size `compare` vs lmms-eval's two full runs.

Two simulated engines (each its own simulator process, vLLM personality) serve full-size synthetic MME
(2374) + MMMU-val (900) with the seed's per-request latency scaled down (4.4 s x --time-scale, default
0.01: 44 ms) and the seed's capacity (--capacity, default 1: one request at a time, as the seed's CPU
vLLM), in two scenarios:
- `identical`: the same simulated model and engine on both sides (identical answers): equivalent;
- `5-pt drop`: the candidate is 5 points less accurate (its right answers a subset of the reference's):
  not equivalent.
For each, `vlmparity compare --endpoint ref --endpoint cand` runs once fixed-size (every sample) and once
with --sequential (10 looks), each against fresh simulators, measured as child processes (wall time).
lmms-eval is not run here: its time is modelled from research/lmms-eval-bench.md's measurements
(one request at a time; ~13 s of imports before the first request; ~280 ms of client CPU per request,
mostly PNG encoding), two runs one after the other (one per engine) and the verdict by hand:
2 x (13 s + N x (0.28 s + latency)). The same formula gives the unscaled figures (4.4 s per request).

    python bench/time_to_verdict.py [--time-scale 0.01] [--capacity 1] [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_lmms_eval import (
    DATA_FOLDERS,
    SEED_SECONDS,
    Setting,
    SimProcess,
    ensure_data,
    machine_line,
    run_child,
    sim_config,
)

LMMS_START_S = 13.0  # before the first request (imports), research/lmms-eval-bench.md
LMMS_CLIENT_S = 0.28  # client CPU per request, one request at a time (PNG encoding), same source
N_FULL = 2374 + 900
SCENARIOS = {
    "identical": ({"model_seed": 1, "accuracy": 0.8}, {"model_seed": 1, "accuracy": 0.8}),
    "5-pt drop": ({"model_seed": 1, "accuracy": 0.8}, {"model_seed": 1, "accuracy": 0.75}),
}


def lmms_model_s(latency_s: float, n: int = N_FULL) -> float:
    """lmms-eval's two sequential full runs (one per engine), modelled."""
    return 2 * (LMMS_START_S + n * (LMMS_CLIENT_S + latency_s))


def run_compare(
    scenario: str, sequential: bool, setting: Setting, data_root: Path, work: Path
) -> dict[str, Any]:
    tag = f"{scenario.replace(' ', '')}-{'seq' if sequential else 'fixed'}"
    data_dirs = [data_root / DATA_FOLDERS[t] for t in ("mme", "mmmu_val")]
    ref_answers, cand_answers = SCENARIOS[scenario]
    out, vfile = work / f"out-{tag}", work / f"verdict-{tag}.json"
    cfg_ref = dict(sim_config(setting, data_dirs, work / f"sim-{tag}-ref.jsonl"), answers=ref_answers)
    cfg_cand = dict(sim_config(setting, data_dirs, work / f"sim-{tag}-cand.jsonl"), answers=cand_answers)
    with SimProcess(cfg_ref, work) as ref, SimProcess(cfg_cand, work) as cand:
        cmd = [sys.executable, "-m", "vlmparity", "compare", "-e", f"ref={ref.base_url}", "-e",
               f"cand={cand.base_url}", "--tasks", "mme,mmmu_val", "--output-path", str(out),
               "--no-report", "--json", str(vfile)]  # fmt: skip
        for t in ("mme", "mmmu_val"):
            cmd += ["--data", f"{t}={data_root / DATA_FOLDERS[t]}"]
        if sequential:
            cmd += ["--sequential"]
        stats = run_child(cmd, cwd=work, env=dict(__import__("os").environ), log=work / f"{tag}.log")
        sent = len([e for e in ref.chat_entries() if e.get("sample_id")])
    if stats.returncode not in (0, 1, 2):
        raise SystemExit(f"compare failed (exit {stats.returncode}); see {work / f'{tag}.log'}")
    doc = json.loads(vfile.read_text())
    cand_doc = doc["candidates"][0]
    seq = cand_doc.get("sequential") or {}
    return {
        "scenario": scenario,
        "mode": "sequential" if sequential else "fixed size",
        "wall_s": stats.wall_s,
        "verdict": cand_doc["verdict"],
        "sent": sent,
        "look": seq.get("stopped_at_look"),
        "samples_used": seq.get("samples_used", N_FULL),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--scenarios", default="identical,5-pt drop")
    args = parser.parse_args()

    setting = Setting("seed", args.capacity, SEED_SECONDS, args.time_scale)
    data_root = ensure_data(args.data)
    print(machine_line())
    print(f"data: {data_root} (synthetic MME 2374 + MMMU-val 900); server: {setting.describe()}")
    work = args.work or Path(tempfile.mkdtemp(prefix="time-to-verdict-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.perf_counter()
    try:
        for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            for sequential in (False, True):
                row = run_compare(scenario, sequential, setting, data_root, work)
                rows.append(row)
                print(
                    f"  {row['scenario']:<10} {row['mode']:<11} {row['wall_s']:7.1f} s  {row['verdict']:<15} "
                    f"sent {row['sent']} per engine"
                    + (f", stopped at look {row['look']}" if row["look"] else ""),
                    flush=True,
                )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    service = setting.service_s
    lmms = lmms_model_s(service)
    print()
    print(
        "| scenario | verdict | sequential | fixed size | lmms-eval, 2 runs (modelled) | sequential / fixed | "
        "unscaled: sequential | fixed size | lmms-eval |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        fixed = next(r for r in rows if r["scenario"] == scenario and r["mode"] == "fixed size")
        seq = next(r for r in rows if r["scenario"] == scenario and r["mode"] == "sequential")
        # unscaled: server-bound at capacity c, both engines in parallel; the samples each run sent
        real = SEED_SECONDS / setting.capacity
        print(
            f"| {scenario} | {seq['verdict']} (fixed: {fixed['verdict']}) | {seq['wall_s']:.0f} s "
            f"({seq['sent']} samples) | {fixed['wall_s']:.0f} s ({fixed['sent']}) | {lmms:.0f} s | "
            f"{seq['wall_s'] / fixed['wall_s']:.2f} | {seq['sent'] * real / 3600:.1f} h | "
            f"{fixed['sent'] * real / 3600:.1f} h | {lmms_model_s(SEED_SECONDS) / 3600:.1f} h |"
        )
    print(f"\nelapsed {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
