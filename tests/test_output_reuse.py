"""A reused output folder (issue 12 item 2): each `run` invocation keeps its own plan, `compare` and
`report` say which plan of each endpoint and task they use, never mix plans, and never go to the
Hugging Face Hub for data a run read from a local path. CLI subprocesses against the simulator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from hub_support import HubListener
from vlmparity.sim import SimConfig, SimServer

INSTANT = {"capacity": 16, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}
N_MME, N_MMMU = 24, 12  # MME: 12 image pairs
SAMPLE = 16  # first invocation: a stratified sample of 16 per task (whole MME pairs: 16 of 24)
LIMIT = 6  # second invocation: MME's first 6 questions


@pytest.fixture
def hub() -> Iterator[HubListener]:
    listener = HubListener()
    yield listener
    listener.close()


def vlmparity(*args: str, cwd: Path, hub: HubListener) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(cwd / ".hf-home")}
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmparity.synth import write_mme, write_mmmu

    root = tmp_path_factory.mktemp("reuse")
    write_mme(root / "data" / "mme", n=N_MME, seed=4)
    write_mmmu(root / "data" / "mmmu", n=N_MMMU, seed=4)
    return root


def paired(stdout: str) -> dict[str, int]:
    """'mme: 6 paired samples' lines of compare's terminal output."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+): (\d+) paired samples", stdout, re.M)}


def test_second_plan_into_the_same_folder(workdir: Path, hub: HubListener, tmp_path: Path) -> None:
    root = workdir
    data = root / "data"
    sims = [
        SimConfig(personality="vllm", data=[data / "mme", data / "mmmu"], load=INSTANT, image_limit=None),
        SimConfig(personality="ovms", data=[data / "mme", data / "mmmu"], load=INSTANT),
    ]
    with SimServer(sims[0]) as a, SimServer(sims[1]) as b:
        eps = ["-e", f"a={a.url}", "-e", f"b={b.url}"]
        # relative data paths, from the folder the data is in
        first = vlmparity(
            "run", *eps, "--tasks", "mme,mmmu_val", "--data", "mme=data/mme", "--data", "mmmu_val=data/mmmu",
            "--sample", str(SAMPLE), "-o", "out", cwd=root, hub=hub,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        second = vlmparity(
            "run", *eps, "--tasks", "mme", "--data", "mme=data/mme", "--limit", str(LIMIT), "-o", "out",
            cwd=root, hub=hub,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
    assert "run.json (plan #1) and" in first.stdout and "latest complete one" not in first.stdout
    assert "run.json (plan #2) and" in second.stdout and "latest complete one unless --plan" in second.stdout
    out = root / "out"
    doc = orjson.loads((out / "run.json").read_bytes())
    # run.json: the latest invocation, and every invocation's own plan with its absolute data paths
    assert doc["plan_id"] == 2
    plans = {p["plan_id"]: p for p in doc["plans"]}
    assert sorted(plans) == [1, 2]
    assert sorted(plans[1]["tasks"]) == ["mme", "mmmu_val"] and sorted(plans[2]["tasks"]) == ["mme"]
    assert plans[1]["tasks"]["mme"]["plan"]["sample"] == SAMPLE
    assert plans[2]["tasks"]["mme"]["plan"]["limit"] == LIMIT
    assert plans[1]["tasks"]["mmmu_val"]["source"] == str((data / "mmmu").resolve())
    assert all(p["status"] == "complete" and sorted(p["completed"]) == ["a", "b"] for p in plans.values())
    # each invocation's own lmms-eval files, side by side
    for name in ("a", "b"):
        assert len(list((out / name).glob("*_results.json"))) == 2

    # compare from elsewhere: the latest complete plan per task, said on the terminal; no Hub contact
    cmp = vlmparity("compare", str(out), "--no-report", cwd=tmp_path, hub=hub)
    assert cmp.returncode in (0, 1, 2), cmp.stderr
    assert paired(cmp.stdout) == {"mme": LIMIT, "mmmu_val": SAMPLE if SAMPLE < N_MMMU else N_MMMU}
    assert re.search(
        r"^plans: a: mme plan #2 \(limit 6, [^)]*\), mmmu_val plan #1 \(sample 16 seed 0", cmp.stdout, re.M
    )
    assert hub.connections == 0

    # an older plan on request (both endpoints), and a report of the newer one (mme only)
    older = vlmparity("compare", str(out), "--no-report", "--plan", "1", cwd=tmp_path, hub=hub)
    assert older.returncode in (0, 1, 2), older.stderr
    assert paired(older.stdout) == {"mme": SAMPLE, "mmmu_val": N_MMMU}
    rep = vlmparity(
        "report", str(out), "--plan", "2", "--out", str(tmp_path / "r.html"), cwd=tmp_path, hub=hub
    )
    assert rep.returncode == 0, rep.stderr
    assert "plans: a: mme plan #2 (limit 6" in rep.stdout and "mmmu_val" not in rep.stdout.split("VERDICT")[0]
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"{out} (plan #2)" in html  # the setup table names the plan
    # a plan that is not there: a usage error listing the plans
    none = vlmparity("compare", str(out), "--plan", "b=9", cwd=tmp_path, hub=hub)
    assert none.returncode == 4
    assert re.fullmatch(
        rf"vlmparity: error: run b in {re.escape(str(out))} has no plan #9 \(its plans: "
        r"#1 mme,mmmu_val \(sample 16 seed 0, [\d: -]+, complete\); #2 mme \(limit 6, [\d: -]+, complete\)\)",
        none.stderr.strip(),
    ), none.stderr

    # the data moved: one line saying which --data to pass, and still no Hub contact
    moved = root / "moved"
    shutil.move(str(data), str(moved))
    try:
        gone = vlmparity("compare", str(out), "--no-report", cwd=tmp_path, hub=hub)
        assert gone.returncode == 3
        lines = gone.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"vlmparity: error: run a read its mme data from {data / 'mme'}"
        )
        assert "pass --data mme=PATH" in lines[0]
        assert hub.connections == 0
        again = vlmparity(
            "compare", str(out), "--no-report", "--data", f"mme={moved / 'mme'}", "--data",
            f"mmmu_val={moved / 'mmmu'}", cwd=tmp_path, hub=hub,
        )  # fmt: skip
        assert again.returncode in (0, 1, 2), again.stderr
        assert paired(again.stdout) == {"mme": LIMIT, "mmmu_val": N_MMMU}
    finally:
        shutil.move(str(moved), str(data))


def test_compare_with_endpoints_compares_the_plan_it_just_ran(workdir: Path, hub: HubListener) -> None:
    """`compare --endpoint ... --tasks mme` into a folder that also holds an MMMU plan compares MME only."""
    root = workdir
    data = root / "data"
    out = root / "out-endpoints"
    sims = [
        SimConfig(personality="vllm", data=[data / "mme", data / "mmmu"], load=INSTANT, image_limit=None),
        SimConfig(personality="ovms", data=[data / "mme", data / "mmmu"], load=INSTANT),
    ]
    with SimServer(sims[0]) as a, SimServer(sims[1]) as b:
        eps = ["-e", f"a={a.url}", "-e", f"b={b.url}"]
        first = vlmparity(
            "run", *eps, "--tasks", "mmmu_val", "--data", f"mmmu_val={data / 'mmmu'}", "-o", str(out),
            cwd=root, hub=hub,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        cmp = vlmparity(
            "compare", *eps, "--tasks", "mme", "--data", f"mme={data / 'mme'}", "--limit", "4", "-o", str(out),
            "--no-report", cwd=root, hub=hub,
        )  # fmt: skip
    assert cmp.returncode in (0, 1, 2), cmp.stderr
    assert paired(cmp.stdout) == {"mme": 4}
    assert "plans: a: mme plan #2 (limit 4" in cmp.stdout
    # without --endpoint the folder's latest complete plans of both tasks are compared
    both = vlmparity("compare", str(out), "--no-report", cwd=root, hub=hub)
    assert paired(both.stdout) == {"mmmu_val": N_MMMU, "mme": 4}


def test_an_interrupted_invocation_is_not_the_default(tmp_path: Path) -> None:
    """Plan selection: the latest plan this endpoint completed, per task; an unfinished one only on request
    or when no other plan has the task."""
    from vlmparity.compare.join import RunRef, choose_plans
    from vlmparity.store import Store

    limit3 = {"source": "/d/mme", "plan": {"limit": 3, "sample": None, "seed": 0}}
    with Store.open(tmp_path) as store:
        run = store.upsert_run("a", url="http://x", kind="vllm", model="m")
        run_b = store.upsert_run("b", url="http://y", kind="ovms", model="m")
        spec = {"source": "/d/mme", "plan": {"limit": None, "sample": 10, "seed": 0}}
        p1 = store.begin_plan(["a"], {"mme": spec, "mmmu_val": spec})
        store.end_plan(p1.plan_id, "complete", ["a"])
        p2 = store.begin_plan(["a"], {"mme": limit3})
        store.end_plan(p2.plan_id, "interrupted")
        # the same command rerun after the interruption resumes its record
        again = store.begin_plan(["a"], {"mme": limit3})
        assert (again.plan_id, again.status) == (2, "running")
        store.end_plan(2, "interrupted")
        p3 = store.begin_plan(["a", "b"], {"mmmu_val": spec})
        assert p3.plan_id == 3
        store.end_plan(p3.plan_id, "incomplete", ["b"])  # b finished, a did not
        plans = tuple(store.plans())
    ref = RunRef(tmp_path, run, "a", plans)
    assert {c.task: c.plan_id for c in choose_plans(ref)} == {"mme": 1, "mmmu_val": 1}
    assert {c.task: c.plan_id for c in choose_plans(ref, 2)} == {"mme": 2}
    ref_b = RunRef(tmp_path, run_b, "b", tuple(p for p in plans if "b" in p.endpoints))
    assert {c.task: c.plan_id for c in choose_plans(ref_b)} == {"mmmu_val": 3}  # complete for b
    ref_a3 = RunRef(tmp_path, run, "a", (plans[2],))  # only the unfinished one has the task: taken
    assert [(c.task, c.plan_id, c.status) for c in choose_plans(ref_a3)] == [("mmmu_val", 3, "incomplete")]
    with Store.open(tmp_path) as store:
        store.end_plan(2, "complete", ["a"])
        plans = tuple(store.plans())
        # once complete, the same plan again is a new invocation
        assert store.begin_plan(["a"], {"mme": limit3}).plan_id == 4
    assert {c.task: c.plan_id for c in choose_plans(RunRef(tmp_path, run, "a", plans))} == {
        "mme": 2,
        "mmmu_val": 1,
    }


def test_a_store_from_before_plans_gets_the_table(tmp_path: Path) -> None:
    """An existing store (no plans table) opens; compare then uses its last configuration."""
    import sqlite3

    from vlmparity.store import Store

    with Store.open(tmp_path) as store:
        store.upsert_run("a", config={"tasks": ["mme"], "plan": {"limit": 2}})
    conn = sqlite3.connect(tmp_path / "vlmparity.sqlite")
    conn.execute("DROP TABLE plans")
    conn.commit()
    conn.close()
    with Store.open(tmp_path, create=False) as store:
        assert store.plans() == []
        p = store.begin_plan(["a"], {"mme": {"source": "x", "plan": {}}})
        assert p.plan_id == 1
