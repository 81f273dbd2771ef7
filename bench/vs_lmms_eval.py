"""vlmparity run vs lmms-eval 0.7.3, side by side on the same simulated server and the same local data.

One script run does everything:

1. installs lmms-eval 0.7.3 into its own virtual environment (`bench/.venv-lmms-eval`, reused when it
   works) with the steps of research/lmms-eval-bench.md: CPU torch 2.13.0 first, lmms-eval under a
   torch==2.13.0 constraint, torchvision removed (its PyPI build needs CUDA torch), filelock < 4;
2. points lmms-eval at the synthetic MME (2374 questions) and MMMU-val (900) parquet folders through the
   task configs in `bench/lmms_eval_tasks/` (`mme_local`, `mmmu_val_local`: the installed `mme` and
   `mmmu_val` with `dataset_path: parquet`, nothing else changed), offline (HF_*_OFFLINE=1);
3. for each simulator setting, runs the seed's command
   `python -m lmms_eval --model openai_compatible --tasks mme_local,mmmu_val_local --limit 250 ...`
   and then `vlmparity run --tasks mme,mmmu_val --limit 250 ...`, each against a FRESH simulator process
   with the identical configuration (the simulator caches image fingerprints in memory, so a shared one
   would serve the second tool faster; a fresh one gives both the same cold server);
4. prints wall time, time to first request, client CPU and peak RSS of each tool and the ratio; both
   tools' scores side by side (they must be equal: the simulator's answer is a deterministic function of
   the recognised sample, so identical prompts give identical answers and identical scores); per-sample
   answers where they differ; and what each tool sent for the same sample (decoded image pixels, text
   parts, generation parameters) from the request bodies the simulator captured.

Settings: `seed` is the seed's server (one request at a time, ~4.4 s each on real vLLM) with time scaled by
`--time-scale` (default 0.01: 4.4 s becomes 44 ms); `fast` is capacity 64 at 50 ms, where the client's
own CPU is the limit. In both the simulator accepts any number of images per request. `refuse` is `fast`
with a simulator that refuses a deterministic quarter of the multi-image requests (chosen by a hash of the
prompt text) with vLLM's 400 "At most 1 image(s) may be provided in one prompt.": lmms-eval scores its
`[LMMS_EVAL_REQUEST_FAILED after 5 retries] Error code: 400 - ...` text, vlmparity's `lmms-eval` policy
must give the same scores and per-sample parsed predictions (MMMU open-question candidate lists compared
as sets: lmms-eval's order follows PYTHONHASHSEED). vlmparity is told how the lmms-eval venv's
openai-python renders an HTTP error (`--openai-error-style`, detected).

    python bench/vs_lmms_eval.py [--limit 250] [--settings seed,fast,refuse] [--time-scale 0.01] [--work DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DEFAULT_VENV = BENCH / ".venv-lmms-eval"
TASKS_DIR = BENCH / "lmms_eval_tasks"
HF_HOME = BENCH / ".cache" / "hf"
LMMS_EVAL_VERSION = "0.7.3"
TORCH_VERSION = "2.13.0"
MODEL = "llava-hf/llava-1.5-7b-hf"
SEED_SECONDS = 4.4  # the seed's vLLM on CPU: one MME request at a time (research/lmms-eval-bench.md: 4.37 s)
# vlmparity task -> the local lmms-eval task of bench/lmms_eval_tasks/
LOCAL_TASKS = {"mme": "mme_local", "mmmu_val": "mmmu_val_local"}
DATA_FOLDERS = {"mme": "mme", "mmmu_val": "mmmu"}  # under the data root, as `vlmparity synth --out` writes
FULL_ROWS = {"mme": 2374, "mmmu_val": 900}
REFUSE_SHARE = 0.25  # the `refuse` setting's share of refused multi-image requests
GEN_KEYS = ("max_tokens", "temperature", "top_p", "seed", "stream", "stream_options", "n")


# ----- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A simulated server: `capacity` requests served at once, each taking `latency * time_scale` seconds."""

    name: str
    capacity: int
    latency: float
    time_scale: float = 1.0
    multi_image_reject: float = 0.0  # share of multi-image requests refused with vLLM's image-limit 400

    @property
    def service_s(self) -> float:
        return self.latency * self.time_scale

    def ideal_s(self, n_requests: int) -> float:
        """The shortest time the server can answer n requests in (always busy)."""
        return n_requests * self.service_s / self.capacity

    def describe(self) -> str:
        scale = (
            f" x time_scale {self.time_scale:g} = {self.service_s * 1000:.0f} ms (scaled down "
            f"{1 / self.time_scale:g}x)"
            if self.time_scale != 1
            else ""
        )
        refuse = (
            f"; {self.multi_image_reject:.0%} of multi-image requests refused (400 At most 1 image(s))"
            if self.multi_image_reject
            else ""
        )
        return f"capacity {self.capacity}, {self.latency:g} s per request{scale}{refuse}"


def make_settings(names: Sequence[str], time_scale: float) -> list[Setting]:
    """The named settings: `seed` (capacity 1, 4.4 s scaled), `fast` (capacity 64, 50 ms) and `refuse`
    (`fast`, refusing a quarter of the multi-image requests)."""
    known = {
        "seed": Setting("seed", 1, SEED_SECONDS, time_scale),
        "fast": Setting("fast", 64, 0.05, 1.0),
        "refuse": Setting("refuse", 64, 0.05, 1.0, multi_image_reject=REFUSE_SHARE),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return [known[n] for n in names]


def sim_config(setting: Setting, data_dirs: Sequence[Path], log_file: Path) -> dict[str, Any]:
    """The simulator's configuration for one setting (vLLM personality, any number of images)."""
    return {
        "personality": "vllm",
        "port": 0,
        "model": MODEL,
        "image_limit": None,
        "multi_image_reject": setting.multi_image_reject,
        "data": [str(d) for d in data_dirs],
        "load": {
            "capacity": setting.capacity,
            "base_latency": setting.latency,
            "per_image": 0.0,
            "per_token": 0.0,
            "time_scale": setting.time_scale,
        },
        "log_file": str(log_file),
    }


# ----- commands ----------------------------------------------------------------------------------------


def lmms_eval_command(
    python: Path, base_url: str, limit: int, out: Path, tasks: Sequence[str] = ("mme", "mmmu_val")
) -> list[str]:
    """The seed's lmms-eval command on the local copies of the tasks (run it from the data root)."""
    return [
        str(python), "-m", "lmms_eval",
        "--model", "openai_compatible",
        "--model_args", f"model_version={MODEL},base_url={base_url},api_key=x",
        "--tasks", ",".join(LOCAL_TASKS[t] for t in tasks),
        "--include_path", str(TASKS_DIR),
        "--limit", str(limit),
        "--batch_size", "1",
        "--log_samples",
        "--output_path", str(out),
        "--process_docs_parallel", "1",
        "--seed", "0,1234,1234,1234",
    ]  # fmt: skip


def vlmparity_command(
    python: Path,
    base_url: str,
    data_root: Path,
    limit: int | None,
    out: Path,
    tasks: Sequence[str] = ("mme", "mmmu_val"),
    openai_error_style: str | None = None,
) -> list[str]:
    """The equivalent `vlmparity run` command (`openai_error_style`: how lmms-eval's openai-python renders
    an HTTP error, for the failure text of the lmms-eval policy)."""
    cmd = [str(python), "-m", "vlmparity", "run", "--endpoint", f"sim={base_url}", "--model", MODEL,
           "--tasks", ",".join(tasks)]  # fmt: skip
    for t in tasks:
        cmd += ["--data", f"{t}={data_root / DATA_FOLDERS[t]}"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if openai_error_style is not None:
        cmd += ["--openai-error-style", openai_error_style]
    return [*cmd, "--output-path", str(out), "--log-samples"]


# Prints str() of the exception openai-python raises for a 400 whose JSON body has an error message.
OPENAI_STYLE_CHECK = """
import importlib, openai
for mod in ("httpx", "httpx2"):
    try:
        hx = importlib.import_module(mod)
        req = hx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
        resp = hx.Response(400, json={"error": {"message": "M"}}, request=req)
        client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
        print(str(client._make_status_error_from_response(resp)))
        break
    except Exception:
        continue
else:
    print("version " + openai.__version__)
"""


def openai_style_from(output: str) -> str:
    """vlmparity's --openai-error-style from OPENAI_STYLE_CHECK's output: "message" when openai-python
    renders only the message (>= 3.51), "body" when it renders the whole parsed body (older releases)."""
    text = output.strip()
    if text.startswith("version "):
        parts = []
        for piece in text.split()[1].split(".")[:2]:
            parts.append(int(piece) if piece.isdigit() else 0)
        return "message" if tuple(parts) >= (3, 51) else "body"
    return "message" if text == "Error code: 400 - M" else "body"


def openai_error_style(venv: Path) -> str:
    """How the openai-python of lmms-eval's venv renders an HTTP error (run there, no network)."""
    proc = subprocess.run(
        [str(venv_python(venv)), "-c", OPENAI_STYLE_CHECK], capture_output=True, text=True, env=lmms_env()
    )
    return openai_style_from(proc.stdout)


def lmms_env(hf_home: Path = HF_HOME) -> dict[str, str]:
    """lmms-eval's environment: offline, its own HF cache, no key or base URL leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VIRTUAL_ENV"))}
    env.update(
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(hf_home),
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


# ----- lmms-eval's virtual environment --------------------------------------------------------------------

CHECK = (
    "import importlib.metadata as m, importlib.util as u, filelock._api\n"
    f"assert m.version('lmms-eval') == '{LMMS_EVAL_VERSION}', m.version('lmms-eval')\n"
    f"assert m.version('torch').startswith('{TORCH_VERSION}'), m.version('torch')\n"
    "assert u.find_spec('torchvision') is None, 'torchvision is installed'\n"
    "from lmms_eval.models.chat.openai import OpenAICompatible\n"
    "print(m.version('lmms-eval'), m.version('torch'), m.version('filelock'))\n"
)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def check_venv(venv: Path) -> str | None:
    """The versions line when the venv has a working lmms-eval 0.7.3, else None."""
    py = venv_python(venv)
    if not py.exists():
        return None
    proc = subprocess.run([str(py), "-c", CHECK], capture_output=True, text=True, env=lmms_env())
    return proc.stdout.strip() if proc.returncode == 0 else None


def install_steps(venv: Path, constraint: Path) -> list[list[str]]:
    """The install commands, in order (research/lmms-eval-bench.md)."""
    pip = [str(venv_python(venv)), "-m", "pip", "install", "-q"]
    return [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [*pip, f"torch=={TORCH_VERSION}"],  # the CPU wheel of the machine's wheel folder
        [*pip, "-c", str(constraint), f"lmms-eval=={LMMS_EVAL_VERSION}"],  # else a CUDA torch replaces it
        [str(venv_python(venv)), "-m", "pip", "uninstall", "-y", "-q", "torchvision"],  # CUDA-only build
        [*pip, "filelock<4"],  # lmms-eval 0.7.3 imports filelock._api, gone in filelock 4
    ]


def ensure_venv(venv: Path) -> str:
    """Reuse the venv when it works, else (re)install it; returns the versions line."""
    found = check_venv(venv)
    if found:
        print(f"lmms-eval venv: {venv} (reused: lmms-eval, torch, filelock = {found})")
        return found
    print(f"lmms-eval venv: installing lmms-eval {LMMS_EVAL_VERSION} into {venv} (~2 min, ~2.4 GB)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "constraints.txt"
        constraint.write_text(f"torch=={TORCH_VERSION}\n")
        for step in install_steps(venv, constraint):
            print("   $ " + " ".join(step))
            subprocess.run(step, check=True)
    found = check_venv(venv)
    if not found:
        raise SystemExit(f"lmms-eval {LMMS_EVAL_VERSION} does not import in {venv} after installing it")
    print(f"   installed in {time.perf_counter() - t0:.0f} s: {found}")
    return found


# ----- data --------------------------------------------------------------------------------------------------


def data_ok(root: Path) -> bool:
    """True when root holds full-size synthetic MME and MMMU folders (as `vlmparity synth` writes them)."""
    for task, folder in DATA_FOLDERS.items():
        card = root / folder / "synth.json"
        if not card.is_file():
            return False
        info = json.loads(card.read_text())
        if info.get("rows") != FULL_ROWS[task] or not any((root / folder / "data").glob("*.parquet")):
            return False
    return True


def ensure_data(root: Path | None) -> Path:
    """The data root: the given one, the test fixture's cache, or a fresh full-size synthetic set."""
    candidates = (
        [root]
        if root is not None
        else [REPO / ".cache" / "synth-full-seed0", BENCH / ".cache" / "synth-full-seed0"]
    )
    for cand in candidates:
        if data_ok(cand):
            return cand
    target = candidates[-1] if root is None else root
    print(f"data: writing full-size synthetic MME (2374) and MMMU (900), seed 0, to {target} (a few minutes)")
    from vlmparity.synth import write_mme, write_mmmu

    write_mme(target / "mme", seed=0)
    write_mmmu(target / "mmmu", seed=0)
    return target


# ----- child processes ---------------------------------------------------------------------------------------


@dataclass
class ChildStats:
    """A finished child process: wall time, CPU seconds (its own and its children's), peak RSS."""

    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    started: float  # unix time just before it was spawned


def proc_rss_kb(pid: int, field: str = "VmRSS") -> int | None:
    """A process's resident set (VmRSS) or its high-water mark (VmHWM) from /proc, in kB (None once gone).

    VmHWM belongs to the process's memory map, which exec replaces: unlike wait4's ru_maxrss it does
    not start from the pages of the process that forked it.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (from /proc/*/stat's parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_rss_mb(root: int) -> float:
    """The summed resident set of a process and its descendants, in MB."""
    return sum(proc_rss_kb(p) or 0 for p in process_tree(root)) / 1024


class TreeSampler:
    """Samples a process tree every `every` seconds; `peak_mb` is the larger of the highest summed RSS
    of the tree and the highest single process's VmHWM (a peak shorter than the sampling period).

    Why not wait4's ru_maxrss: a child's high-water mark starts from the pages it shares with the
    process that forked it, so a child of a big bench process reports the bench's own resident set
    (all four runs read 883 MB). Sampling /proc measures the tool's own process tree.
    """

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            tree = process_tree(self.pid)
            summed = sum(proc_rss_kb(p) or 0 for p in tree) / 1024
            hwm = max((proc_rss_kb(p, "VmHWM") or 0 for p in tree), default=0) / 1024
            self.peak_mb = max(self.peak_mb, summed, hwm)
            self._done.wait(self.every)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_mb


def run_child(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> ChildStats:
    """Run a command to completion, output to `log`: wall time, CPU from wait4's rusage (the child and
    the children it waited for), peak RSS of its process tree sampled from /proc (`TreeSampler`)."""
    with log.open("wb") as out:
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        peak = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildStats(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=peak,
        started=started,
    )


def time_v_maxrss_mb(
    cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> tuple[float, float]:
    """(sampled tree peak, /usr/bin/time -v's "Maximum resident set size") of one run of `cmd`, in MB.

    /usr/bin/time is a small process: its child's high-water mark is the tool's own. It reports the
    largest single process of the tree, the sampler the sum; for a one-process tool they agree.
    """
    stats = run_child(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, log=log)
    text = log.read_text(errors="replace")
    line = next(x for x in text.splitlines() if "Maximum resident set size" in x)
    return stats.maxrss_mb, int(line.rsplit(":", 1)[1]) / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """A fresh simulator in its own process (this script with --serve-sim), optionally capturing bodies."""

    def __init__(self, config: Mapping[str, Any], workdir: Path, capture: Path | None = None) -> None:
        self.log_file = Path(config["log_file"])
        cfg = dict(config, port=free_port())
        self.path = workdir / f"sim-{cfg['port']}.json"
        self.path.write_text(json.dumps(cfg))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-sim", str(self.path)]
        if capture is not None:
            cmd += ["--capture", str(capture)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the base URL, once the datasets are indexed
        if not line.startswith("http"):
            self.stop()
            raise SystemExit(f"the simulator did not start (config {self.path})")
        self.base_url = line
        wait_ready(self.base_url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chat_entries(self) -> list[dict[str, Any]]:
        """The simulator's log lines of chat requests (read after `stop`)."""
        return read_chat_log(self.log_file)


def wait_ready(base_url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the simulator at {base_url} is not ready after {timeout:.0f} s")
        time.sleep(0.2)


def read_chat_log(path: Path) -> list[dict[str, Any]]:
    """Chat-completion entries of a simulator JSONL log, in arrival order."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(
        (r for r in rows if str(r.get("path", "")).endswith("/chat/completions")), key=lambda r: r["time"]
    )


def capture_name(sample_id: str) -> str:
    """The file a captured body of a recognised sample is written to."""
    return hashlib.sha256(sample_id.encode()).hexdigest()[:24] + ".json"


def serve_sim(config_path: Path, capture: Path | None) -> None:
    """Run the simulator until SIGTERM; with `capture`, write each recognised sample's first body there."""
    import asyncio

    from vlmparity.sim import SimServer, load_config
    from vlmparity.sim.server import ENTRY

    sim = SimServer(load_config(config_path))
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        handler = sim.server._chat  # the route is bound at start(): wrap it on the instance before that

        async def capturing(request: Any) -> Any:
            raw = await request.read()  # aiohttp keeps the body: the handler reads the same bytes
            response = await handler(request)
            sample_id = request[ENTRY].sample_id
            if sample_id:
                target = capture / capture_name(sample_id)
                if not target.exists():  # the first arrival (a retry sends the same body)
                    await asyncio.to_thread(target.write_bytes, raw)
            return response

        sim.server._chat = capturing  # type: ignore[method-assign]
    sim.start()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(sim.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        sim.stop()


# ----- scores ------------------------------------------------------------------------------------------------


def newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if not found:
        raise SystemExit(f"no {pattern} under {folder}")
    return found[-1]


def read_scores(results_json: Path) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from an lmms-eval-format results.json; local task names mapped back."""
    data = json.loads(results_json.read_text())
    back = {v: k for k, v in LOCAL_TASKS.items()}
    out: dict[str, dict[str, float]] = {}
    for task, metrics in data["results"].items():
        name = back.get(task, task)
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if filt == "none" and isinstance(value, int | float) and "stderr" not in metric:
                out.setdefault(name, {})[metric] = float(value)
    return out


def score_rows(
    lmms: Mapping[str, Mapping[str, float]], ours: Mapping[str, Mapping[str, float]]
) -> list[tuple[str, str, float | None, float | None, bool]]:
    """(task, metric, lmms-eval, vlmparity, equal) for every metric either tool reported."""
    rows = []
    for task in sorted(set(lmms) | set(ours)):
        for metric in sorted(set(lmms.get(task, {})) | set(ours.get(task, {}))):
            a, b = lmms.get(task, {}).get(metric), ours.get(task, {}).get(metric)
            rows.append((task, metric, a, b, a is not None and a == b))
    return rows


def read_sample_lines(path: Path) -> dict[int, dict[str, Any]]:
    """doc_id -> the lmms-eval sample line (both tools write this format)."""
    return {(d := json.loads(line))["doc_id"]: d for line in path.read_text().splitlines() if line.strip()}


def sample_score(line: Mapping[str, Any]) -> Any:
    """The per-sample score a line carries: MME's 0/1 score, MMMU's parsed prediction (an open question's
    candidate list as a set: lmms-eval builds it with `list(set(...))`, its order follows PYTHONHASHSEED)."""
    for key in ("mme_perception_score", "mme_cognition_score"):
        if key in line:
            return line[key]["score"]
    if "mmmu_acc" in line:
        parsed = line["mmmu_acc"].get("parsed_pred")
        if isinstance(parsed, list):
            return [frozenset(map(repr, p)) if isinstance(p, list) else p for p in parsed]
        return parsed
    return None


def answer_text(line: Mapping[str, Any]) -> Any:
    """The filtered answer of a sample line, unwrapped from one-element lists (writers differ there)."""
    value = line.get("filtered_resps")
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def sample_diffs(lmms: Mapping[int, Mapping[str, Any]], ours: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """Where two tools' sample logs disagree: missing docs, different answers, different scores."""
    out = []
    for doc_id in sorted(set(lmms) | set(ours)):
        a, b = lmms.get(doc_id), ours.get(doc_id)
        if a is None or b is None:
            out.append(f"doc {doc_id}: only in {'vlmparity' if a is None else 'lmms-eval'}")
            continue
        if answer_text(a) != answer_text(b):
            out.append(f"doc {doc_id}: answer {answer_text(a)!r} vs {answer_text(b)!r}")
        elif sample_score(a) != sample_score(b):
            out.append(f"doc {doc_id}: same answer, score {sample_score(a)!r} vs {sample_score(b)!r}")
    return out


IGNORED_FIELDS = ("doc_hash", "vlmparity")  # lmms-eval hashes its in-memory doc; vlmparity adds its own block


def field_diffs(lmms: Mapping[int, Mapping[str, Any]], ours: Mapping[int, Mapping[str, Any]]) -> Counter[str]:
    """Sample-log fields (other than `IGNORED_FIELDS`) whose key set, order or value differ, with counts."""
    out: Counter[str] = Counter()
    for doc_id in sorted(set(lmms) & set(ours)):
        a = {k: v for k, v in lmms[doc_id].items() if k not in IGNORED_FIELDS}
        b = {k: v for k, v in ours[doc_id].items() if k not in IGNORED_FIELDS}
        if list(a) != list(b):
            out[f"keys {list(a)} vs {list(b)}"] += 1
        for key in a.keys() & b.keys():
            if a[key] != b[key]:
                out[f"{key} differs"] += 1
    return out


# ----- request bodies ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageView:
    """A decoded image part: what the server sees (format, mode, size, pixel digest) and the wire size."""

    mime: str
    format: str
    mode: str
    size: tuple[int, int]
    pixels: str  # sha256 of the decoded pixel bytes
    wire_bytes: int  # length of the encoded file


@dataclass(frozen=True)
class BodyView:
    """A chat request body reduced to what matters: roles, ordered parts and generation parameters."""

    roles: tuple[str, ...]
    parts: tuple[tuple[str, Any], ...]  # ("text", str) | ("image", ImageView), in order
    params: Mapping[str, Any]  # every top-level key except messages and model
    model: Any = None


def decode_image_url(url: str, memo: dict[str, ImageView] | None = None) -> ImageView:
    """Decode a data URL and digest its pixels (memoised by the URL's hash: pairs share an image)."""
    key = hashlib.sha256(url.encode()).hexdigest()
    if memo is not None and key in memo:
        return memo[key]
    from PIL import Image

    head, _, payload = url.partition(",")
    mime = head.removeprefix("data:").split(";")[0]
    raw = base64.b64decode(payload)
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        view = ImageView(
            mime, img.format or "?", img.mode, img.size, hashlib.sha256(img.tobytes()).hexdigest(), len(raw)
        )
    if memo is not None:
        memo[key] = view
    return view


def body_view(body: Mapping[str, Any], memo: dict[str, ImageView] | None = None) -> BodyView:
    """Reduce a request body (parsed JSON) to a `BodyView`."""
    roles: list[str] = []
    parts: list[tuple[str, Any]] = []
    for message in body.get("messages", []):
        roles.append(str(message.get("role")))
        content = message.get("content")
        if isinstance(content, str):
            parts.append(("text", content))
            continue
        for part in content or []:
            if part.get("type") == "text":
                parts.append(("text", part.get("text")))
            elif part.get("type") == "image_url":
                url = (
                    part["image_url"]["url"]
                    if isinstance(part.get("image_url"), dict)
                    else part.get("image_url")
                )
                parts.append(("image", decode_image_url(str(url), memo)))
            else:
                parts.append((str(part.get("type")), part))
    params = {k: v for k, v in body.items() if k not in ("messages", "model")}
    return BodyView(tuple(roles), tuple(parts), params, body.get("model"))


def _typed(value: Any) -> str:
    return "absent" if value is _ABSENT else f"{value!r} ({type(value).__name__})"


_ABSENT = object()


def body_diffs(a: BodyView, b: BodyView) -> list[str]:
    """Differences between two bodies, as short category strings (same category = same difference)."""
    out = []
    if a.roles != b.roles:
        out.append(f"roles {a.roles} vs {b.roles}")
    if [k for k, _ in a.parts] != [k for k, _ in b.parts]:
        out.append(f"part layout {[k for k, _ in a.parts]} vs {[k for k, _ in b.parts]}")
    else:
        for (kind, x), (_, y) in zip(a.parts, b.parts, strict=True):
            if kind == "text" and x != y:
                out.append("text part differs")
            elif kind == "image":
                if (x.mode, x.size, x.pixels) != (y.mode, y.size, y.pixels):
                    out.append(f"image pixels differ ({x.mode} {x.size} vs {y.mode} {y.size})")
                if x.mime != y.mime:
                    out.append(f"image mime {x.mime} vs {y.mime}")
    for key in sorted(set(a.params) | set(b.params)):
        x, y = a.params.get(key, _ABSENT), b.params.get(key, _ABSENT)
        if x is _ABSENT or y is _ABSENT or type(x) is not type(y) or x != y:
            out.append(f"{key}: {_typed(x)} vs {_typed(y)}")
    return out


@dataclass
class BodyReport:
    """The comparison of the bodies both tools sent for the same samples."""

    compared: int = 0
    only_one: int = 0
    images: int = 0
    pixels_equal: int = 0
    bytes_equal: int = 0
    texts: int = 0
    texts_equal: int = 0
    wire_a: int = 0
    wire_b: int = 0
    diffs: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


def compare_captures(dir_a: Path, dir_b: Path, sample_ids: Mapping[str, str]) -> BodyReport:
    """Compare the captured bodies of the same samples (file name -> sample id) in two capture folders."""
    import orjson

    report = BodyReport()
    memo: dict[str, ImageView] = {}
    names = sorted({p.name for p in dir_a.glob("*.json")} | {p.name for p in dir_b.glob("*.json")})
    for name in names:
        fa, fb = dir_a / name, dir_b / name
        if not (fa.exists() and fb.exists()):
            report.only_one += 1
            continue
        a = body_view(orjson.loads(fa.read_bytes()), memo)
        b = body_view(orjson.loads(fb.read_bytes()), memo)
        report.compared += 1
        for (kind, x), (kind_b, y) in zip(a.parts, b.parts, strict=False):
            if kind == kind_b == "image":
                report.images += 1
                report.pixels_equal += (x.mode, x.size, x.pixels) == (y.mode, y.size, y.pixels)
                report.bytes_equal += x.wire_bytes == y.wire_bytes and x == y
                report.wire_a += x.wire_bytes
                report.wire_b += y.wire_bytes
            elif kind == kind_b == "text":
                report.texts += 1
                report.texts_equal += x == y
        for diff in body_diffs(a, b):
            report.diffs[diff] += 1
            report.examples.setdefault(diff, sample_ids.get(name, name))
    return report


# ----- one setting ---------------------------------------------------------------------------------------------


@dataclass
class ToolRun:
    """One tool's run against its own fresh simulator."""

    tool: str
    stats: ChildStats
    entries: list[dict[str, Any]]
    out: Path
    log: Path

    @property
    def sample_entries(self) -> list[dict[str, Any]]:
        """Requests for a recognised sample (vlmparity's endpoint probe is left out)."""
        return [e for e in self.entries if e.get("sample_id")]

    @property
    def requests(self) -> int:
        return len(self.sample_entries)

    @property
    def first_request_s(self) -> float | None:
        first = self.sample_entries[:1]
        return first[0]["time"] - self.stats.started if first else None

    @property
    def sending_s(self) -> float | None:
        """First request arrival to process exit (the sending phase plus scoring and writing)."""
        first = self.first_request_s
        return None if first is None else self.stats.wall_s - first

    def hashes(self) -> dict[str, str]:
        """sample id -> body hash (canonical body without `model`) of its first arrival."""
        out: dict[str, str] = {}
        for e in self.entries:
            if e.get("sample_id") and e["sample_id"] not in out:
                out[e["sample_id"]] = e["body_hash"]
        return out


def run_tool(
    tool: str,
    cmd: Sequence[str],
    setting: Setting,
    data_root: Path,
    work: Path,
    env: Mapping[str, str],
    capture: Path | None,
) -> ToolRun:
    """Start a fresh simulator, run one tool against it, stop the simulator."""
    tag = f"{setting.name}-{tool}"
    log_file = work / f"sim-{tag}.jsonl"
    data_dirs = [data_root / DATA_FOLDERS[t] for t in ("mme", "mmmu_val")]
    out = work / f"out-{tag}"
    with SimProcess(sim_config(setting, data_dirs, log_file), work, capture=capture) as sim:
        full = [c.replace("{URL}", sim.base_url) for c in cmd]
        full = [c.replace("{OUT}", str(out)) for c in full]
        stats = run_child(full, cwd=data_root, env=env, log=work / f"{tag}.log")
    if stats.returncode != 0:
        raise SystemExit(f"{tool} failed (exit {stats.returncode}); see {work / f'{tag}.log'}")
    return ToolRun(tool, stats, read_chat_log(log_file), out, work / f"{tag}.log")


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


def print_timing(setting: Setting, runs: Sequence[ToolRun]) -> None:
    n = max(r.requests for r in runs)
    ideal = setting.ideal_s(n)
    print(
        f"   {'':<10} {'wall':>9} {'1st request':>12} {'after it':>9} {'requests':>9} {'req/s':>7} "
        f"{'CPU':>8} {'CPU/req':>9} {'peak RSS':>9} {'server busy':>12}"
    )
    for r in runs:
        after = r.sending_s
        rate = r.requests / after if after else 0.0
        busy = ideal / after if after else 0.0
        print(
            f"   {r.tool:<10} {r.stats.wall_s:>7.1f} s {fmt_s(r.first_request_s):>12} {fmt_s(after):>9} "
            f"{r.requests:>9} {rate:>7.1f} {r.stats.cpu_s:>6.1f} s {r.stats.cpu_s / max(1, r.requests) * 1000:>6.0f} ms "
            f"{r.stats.maxrss_mb:>6.0f} MB {busy:>11.0%}"
        )
    a, b = runs
    print(
        f"   wall time ratio lmms-eval / vlmparity: {a.stats.wall_s / b.stats.wall_s:.1f}x; "
        f"after the first request: {(a.sending_s or 0) / (b.sending_s or 1):.1f}x"
    )
    print(f"   the server alone needs {ideal:.1f} s for {n} requests ({setting.describe()})")
    if setting.time_scale not in (0, 1):
        real = setting.ideal_s(n) / setting.time_scale
        print(
            f"   unscaled ({setting.latency:g} s per request) it would need {real / 60:.1f} min, whichever the client"
        )


def print_scores(lmms: ToolRun, ours: ToolRun) -> bool:
    """Scores side by side and per-sample differences; True when every metric and every sample's answer
    and parsed prediction are equal."""
    a = read_scores(newest(lmms.out, "*_results.json"))
    b = read_scores(newest(ours.out, "*_results.json"))
    rows = score_rows(a, b)
    print(f"   {'task':<9} {'metric':<21} {'lmms-eval':>12} {'vlmparity':>12}  equal")
    for task, metric, x, y, same in rows:
        print(f"   {task:<9} {metric:<21} {x!r:>12} {y!r:>12}  {'yes' if same else 'NO'}")
    all_equal = all(r[4] for r in rows) and bool(rows)
    for task, local in LOCAL_TASKS.items():
        la = read_sample_lines(newest(lmms.out, f"*_samples_{local}.jsonl"))
        lb = read_sample_lines(newest(ours.out, f"*_samples_{task}.jsonl"))
        diffs = sample_diffs(la, lb)
        all_equal = all_equal and not diffs
        same = len(set(la) & set(lb)) - sum(1 for d in diffs if "only in" not in d)
        print(
            f"   {task}: {len(la)} vs {len(lb)} samples logged; answers and per-sample scores equal for {same}"
        )
        for line in diffs[:10]:
            print(f"      {line}")
        if len(diffs) > 10:
            print(f"      ... {len(diffs) - 10} more")
        for what, count in field_diffs(la, lb).most_common():
            example = next(
                (f" (doc {d}: {la[d].get(what.split()[0])!r} vs {lb[d].get(what.split()[0])!r})"
                 for d in sorted(set(la) & set(lb)) if la[d].get(what.split()[0]) != lb[d].get(what.split()[0])),
                "",
            )  # fmt: skip
            print(f"      sample-log field {what} in {count} lines{example[:200]}")
    return all_equal


def print_bodies(report: BodyReport) -> None:
    print(
        f"   {report.compared} samples captured from both tools ({report.only_one} from one only): "
        f"text parts equal {report.texts_equal}/{report.texts}; images with equal decoded pixels "
        f"{report.pixels_equal}/{report.images}, with equal encoded bytes {report.bytes_equal}/{report.images} "
        f"(PNG bytes on the wire: lmms-eval {report.wire_a / 1e6:.0f} MB, vlmparity {report.wire_b / 1e6:.0f} MB)"
    )
    if not report.diffs:
        print("   bodies: no difference in layout, text, pixels or parameters")
    for diff, count in report.diffs.most_common():
        print(f"   differs in {count:>4} bodies: {diff} (e.g. {report.examples[diff]})")


def print_hashes(settings_runs: Mapping[str, Sequence[ToolRun]]) -> None:
    """Whether each tool sent the same bodies (hash of the canonical body) at every setting."""
    names = list(settings_runs)
    if len(names) < 2:
        return
    for i, tool in enumerate(("lmms-eval", "vlmparity")):
        first = settings_runs[names[0]][i].hashes()
        for other in names[1:]:
            h = settings_runs[other][i].hashes()
            same = sum(1 for k, v in h.items() if first.get(k) == v)
            print(f"   {tool}: {same}/{len(h)} bodies at '{other}' identical to those at '{names[0]}'")


# ----- main ----------------------------------------------------------------------------------------------------


def machine_line() -> str:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, load average {load}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--limit", type=int, default=250, help="questions per task (lmms-eval's --limit)")
    ap.add_argument("--settings", default="seed,fast,refuse", help="comma-separated: seed, fast, refuse")
    ap.add_argument("--time-scale", type=float, default=0.01, help="seed setting: 4.4 s x this per request")
    ap.add_argument("--data", type=Path, default=None, help="data root with mme/ and mmmu/ (default: synth)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="lmms-eval's virtual environment")
    ap.add_argument("--work", type=Path, default=None, help="keep outputs, logs and bodies here")
    ap.add_argument("--no-bodies", action="store_true", help="skip capturing and comparing request bodies")
    ap.add_argument("--serve-sim", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--capture", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--rss-check",
        action="store_true",
        help="only check the peak-RSS column: one vlmparity run (fast setting) measured by the /proc "
        "sampler and by /usr/bin/time -v (lmms-eval not needed)",
    )
    args = ap.parse_args(argv)
    if args.serve_sim is not None:
        serve_sim(args.serve_sim, args.capture)
        return 0
    if args.rss_check:
        return rss_check(args)

    settings = make_settings([s.strip() for s in args.settings.split(",") if s.strip()], args.time_scale)
    print(f"machine: {machine_line()}")
    ensure_venv(args.venv)
    data_root = ensure_data(args.data)
    print(
        f"data: {data_root} (synthetic MME 2374 + MMMU-val 900, real image sizes); --limit {args.limit} per task"
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="vs-lmms-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    lmms_cmd = lmms_eval_command(venv_python(args.venv), "{URL}", args.limit, Path("{OUT}"))
    style = openai_error_style(args.venv)
    print(
        f"lmms-eval's openai-python renders an HTTP error's {style} (vlmparity --openai-error-style {style})"
    )
    ours_cmd = vlmparity_command(
        Path(sys.executable), "{URL}", data_root, args.limit, Path("{OUT}"), openai_error_style=style
    )
    print("lmms-eval: (cd " + str(data_root) + " && " + " ".join(lmms_cmd) + ")")
    print("vlmparity: " + " ".join(ours_cmd))
    warm_lmms_cache(args.venv, data_root)
    ok = True
    all_runs: dict[str, list[ToolRun]] = {}
    try:
        for k, setting in enumerate(settings):
            print(f"\n== setting '{setting.name}': {setting.describe()}; a fresh simulator per tool")
            capture = not args.no_bodies and k == 0  # the bodies do not depend on the server's speed
            runs = [
                run_tool(
                    "lmms-eval",
                    lmms_cmd,
                    setting,
                    data_root,
                    work,
                    lmms_env(),
                    work / f"bodies-{setting.name}-lmms" if capture else None,
                ),
                run_tool(
                    "vlmparity",
                    ours_cmd,
                    setting,
                    data_root,
                    work,
                    dict(os.environ),
                    work / f"bodies-{setting.name}-vlmparity" if capture else None,
                ),
            ]
            all_runs[setting.name] = runs
            print_timing(setting, runs)
            print("   scores:")
            ok = print_scores(*runs) and ok
            if capture:
                print("   request bodies for the same samples (lmms-eval vs vlmparity):")
                ids = {
                    capture_name(e["sample_id"]): e["sample_id"]
                    for r in runs
                    for e in r.entries
                    if e.get("sample_id")
                }
                print_bodies(
                    compare_captures(
                        work / f"bodies-{setting.name}-lmms", work / f"bodies-{setting.name}-vlmparity", ids
                    )
                )
                for d in ("lmms", "vlmparity"):
                    shutil.rmtree(work / f"bodies-{setting.name}-{d}", ignore_errors=True)
        print("\n== the same bodies at every setting?")
        print_hashes(all_runs)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\noutputs and logs kept in {work}")
    print(
        "\nscores " + ("EQUAL for both tools at every setting" if ok else "DIFFER: a parity bug (see above)")
    )
    return 0 if ok else 1


def rss_check(args: argparse.Namespace) -> int:
    """One vlmparity run against the fast setting, its peak RSS measured two ways."""
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("/usr/bin/time is missing (apt-get install time)")
    data_root = ensure_data(args.data)
    (setting,) = make_settings(["fast"], args.time_scale)
    work = args.work or Path(tempfile.mkdtemp(prefix="rss-check-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dirs = [data_root / DATA_FOLDERS[t] for t in ("mme", "mmmu_val")]
    try:
        with SimProcess(sim_config(setting, data_dirs, work / "sim.jsonl"), work) as sim:
            cmd = vlmparity_command(Path(sys.executable), sim.base_url, data_root, args.limit, work / "out")
            sampled, time_v = time_v_maxrss_mb(cmd, cwd=data_root, env=dict(os.environ), log=work / "run.log")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"vlmparity run --limit {args.limit}: peak RSS sampled from /proc {sampled:.0f} MB (the tree under "
          f"/usr/bin/time, itself ~2 MB); /usr/bin/time -v: {time_v:.0f} MB")  # fmt: skip
    return 0


def warm_lmms_cache(venv: Path, data_root: Path) -> None:
    """Convert the parquet files to lmms-eval's `datasets` cache once, outside the timed runs (a user
    pays this once per dataset; vlmparity reads the parquet files directly every time)."""
    code = (
        "import datasets\n"
        "datasets.load_dataset('parquet', data_files={'test': 'mme/data/test-00000-of-00001.parquet'})\n"
        "datasets.load_dataset('parquet', data_files={'validation': 'mmmu/data/validation-00000-of-00001.parquet'})\n"
    )
    t0 = time.perf_counter()
    subprocess.run(
        [str(venv_python(venv)), "-c", code],
        cwd=data_root,
        env=lmms_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(
        f"lmms-eval's datasets cache ({HF_HOME}) ready in {time.perf_counter() - t0:.0f} s (not timed below)"
    )


if __name__ == "__main__":
    sys.exit(main())
