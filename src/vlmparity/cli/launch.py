"""`vlmparity launch vllm|ovms|stop`: start a real engine with explicit settings, wait until ready, stop it.

stdout carries only the base URL (or, with --dry-run, the exact command), so scripts can capture it;
progress and the PID go to stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

launch_app = typer.Typer(
    help="Start a real vLLM (CPU build) or OpenVINO Model Server with explicit settings, wait until it is ready "
    "and print its base URL; `launch stop` stops it.",
    no_args_is_help=True,
)


def _report_started(state_path: Path, base_url: str, pid: int, log: str) -> None:
    from vlmparity.launch.common import info

    info(f"ready at {base_url} (pid {pid}; log {log})")
    info(f"stop it with: vlmparity launch stop --state-file {state_path}")
    typer.echo(base_url)


@launch_app.command("vllm")
def launch_vllm(
    model: str = typer.Option(..., "--model", help="Model folder or Hugging Face id."),
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", help="Name clients send as `model` (default: --model)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    python: str | None = typer.Option(
        None,
        "--python",
        help="Interpreter or venv folder that has vLLM installed (default: this interpreter).",
    ),
    limit_mm_per_prompt: str = typer.Option(
        "auto",
        "--limit-mm-per-prompt",
        help='Images per prompt: auto (the most any of --tasks sends: MME 1, MMMU-val 7), N for {"image": N}, '
        "a JSON object, or 0 for no flag.",
    ),
    tasks: str = typer.Option(
        "mme,mmmu_val", "--tasks", help="The tasks the server will be evaluated on (sizes the image limit)."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Context length (default: the model's)."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32, bfloat16, float16 (default: vLLM's, bf16 on CPU)."
    ),
    kv_cache_gb: float = typer.Option(
        4.0, "--kv-cache-gb", help="KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)."
    ),
    omp_threads_bind: str = typer.Option(
        "auto", "--omp-threads-bind", help="VLLM_CPU_OMP_THREADS_BIND: auto, nobind, or CPU ids like 0-31."
    ),
    chat_template: str = typer.Option(
        "auto",
        "--chat-template",
        help="auto (the model's own; vlmparity's llava-1.5 template for a llava folder without one), none, "
        "llava-1.5, or a .jinja FILE.",
    ),
    enforce_eager: bool = typer.Option(
        False, "--enforce-eager", help="Skip graph compilation (starts ~20 s faster)."
    ),
    log: Path | None = typer.Option(
        None, "--log", help="Server log file (default: ~/.cache/vlmparity/servers/)."
    ),
    state_file: Path | None = typer.Option(
        None, "--state-file", help="Where to record the PID for `launch stop`."
    ),
    ready_timeout: float = typer.Option(600.0, "--ready-timeout", help="Seconds to wait for readiness."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the exact command and environment; start nothing."
    ),
    extra_arg: list[str] | None = typer.Option(
        None, "--extra-arg", help="More vLLM arguments, passed as given (repeatable)."
    ),
) -> None:
    """Start vLLM's OpenAI-compatible server (CPU build), wait until /health and /v1/models answer."""
    from vlmparity.cli import require_at_least
    from vlmparity.launch import common, vllm
    from vlmparity.tasks.base import get_task

    require_at_least("--kv-cache-gb", kv_cache_gb, 0, strict=True)
    require_at_least("--ready-timeout", ready_timeout, 0, strict=True)

    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    for name in task_list:
        get_task(name)  # an unknown task: one line naming the known ones
    if not task_list:
        from vlmparity.errors import ConfigError

        raise ConfigError("--tasks names no task", hint="e.g. --tasks mme,mmmu_val")
    opts = vllm.VllmOptions(
        tasks=task_list,
        model=model,
        served_model_name=served_model_name,
        host=host,
        port=port,
        python=python,
        limit_mm_per_prompt=limit_mm_per_prompt,
        max_model_len=max_model_len,
        dtype=dtype,
        kv_cache_gb=kv_cache_gb,
        omp_threads_bind=omp_threads_bind,
        chat_template=chat_template,
        enforce_eager=enforce_eager,
        log=log,
        state_file=state_file,
        extra_args=common.parse_extra_args(extra_arg),
    )
    plan = vllm.build_plan(opts)
    if dry_run:
        typer.echo(common.format_plan(plan), nl=False)
        return
    for note in plan.notes:
        common.info(note)
    common.info(f"starting vllm on {plan.origin} (log {plan.log_path}); waiting up to {ready_timeout:g} s")
    state = common.start(plan, ready_timeout)
    _report_started(plan.state_path, state.base_url, state.pid, state.log)


@launch_app.command("ovms")
def launch_ovms(
    model: str = typer.Option(
        ...,
        "--model",
        help="Hugging Face id or folder to export, or a folder that already is an OpenVINO export.",
    ),
    model_name: str | None = typer.Option(
        None, "--model-name", help="Name clients send as `model` (default: the hub id, or the folder's name)."
    ),
    repository: Path = typer.Option(
        Path("ovms-models"), "--repository", help="Model repository folder (config.json, NAME/graph.pbtxt)."
    ),
    weight_format: str = typer.Option(
        "fp16", "--weight-format", help="Export precision: fp16 for parity (OVMS' own default is int8)."
    ),
    export: bool = typer.Option(False, "--export", help="Run the export step (else it is only printed)."),
    pipeline_type: str = typer.Option("VLM_CB", "--pipeline-type", help="VLM_CB, VLM, LM_CB, LM or AUTO."),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device."),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="Sequences processed together."),
    cache_size: int = typer.Option(10, "--cache-size", help="KV cache size in GB (0: dynamic)."),
    max_num_batched_tokens: int | None = typer.Option(
        None, "--max-num-batched-tokens", help="Tokens per batch."
    ),
    enable_prefix_caching: bool = typer.Option(
        True, "--enable-prefix-caching/--no-enable-prefix-caching", help="Cache prompt prefixes."
    ),
    plugin_config: str = typer.Option("{}", "--plugin-config", help="OpenVINO plugin config as JSON."),
    image: str = typer.Option("openvino/model_server:latest", "--image", help="Docker image (with its TAG)."),
    ovms_binary: str | None = typer.Option(
        None, "--ovms-binary", help="Run this local ovms binary instead of docker."
    ),
    port: int = typer.Option(
        8000, "--port", min=0, max=65535, help="REST port (--rest_port); 0 picks a free one."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    log: Path | None = typer.Option(
        None, "--log", help="Server log file (default: ~/.cache/vlmparity/servers/)."
    ),
    state_file: Path | None = typer.Option(
        None, "--state-file", help="Where to record the PID for `launch stop`."
    ),
    ready_timeout: float = typer.Option(900.0, "--ready-timeout", help="Seconds to wait for readiness."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the export step, the generated files and the exact command; start nothing.",
    ),
    extra_arg: list[str] | None = typer.Option(
        None, "--extra-arg", help="More OVMS arguments, e.g. '--port 9001' for gRPC (repeatable)."
    ),
) -> None:
    """Prepare an OVMS model repository for a VLM and start OVMS; wait until the model is ready; print the /v3 URL."""
    from vlmparity.cli import require_at_least
    from vlmparity.launch import common, ovms

    require_at_least("--ready-timeout", ready_timeout, 0, strict=True)

    opts = ovms.OvmsOptions(
        model=model,
        model_name=model_name,
        repository=repository,
        weight_format=weight_format,
        pipeline_type=pipeline_type,
        device=device,
        max_num_seqs=max_num_seqs,
        cache_size=cache_size,
        max_num_batched_tokens=max_num_batched_tokens,
        enable_prefix_caching=enable_prefix_caching,
        plugin_config=plugin_config,
        image=image,
        ovms_binary=ovms_binary,
        host=host,
        port=port,
        log=log,
        state_file=state_file,
        extra_args=common.parse_extra_args(extra_arg),
    )
    plan = ovms.build_plan(opts)
    ovms.validate(plan, check_model_files=False)
    if dry_run:
        typer.echo(ovms.format_export(plan) + common.format_plan(plan.launch), nl=False)
        return
    ovms.check_runner(opts)
    for note in plan.launch.notes:
        common.info(note)
    if plan.needs_export:
        if export:
            ovms.run_export(plan)
        else:
            for line in ovms.format_export(plan).splitlines():
                common.info(line)
    ovms.validate(plan, check_model_files=True)
    common.info(
        f"starting ovms on {plan.launch.origin} (log {plan.launch.log_path}); waiting up to {ready_timeout:g} s"
    )
    state = common.start(plan.launch, ready_timeout)
    _report_started(plan.launch.state_path, state.base_url, state.pid, state.log)


@launch_app.command("stop")
def launch_stop(
    state_file: Path | None = typer.Option(None, "--state-file", help="State file written by `launch`."),
    port: int | None = typer.Option(None, "--port", help="Stop the server vlmparity launched on this port."),
    grace: float = typer.Option(15.0, "--grace", help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop a server started by `vlmparity launch` (by the PID in its state file)."""
    from vlmparity.cli import require_at_least
    from vlmparity.errors import ConfigError
    from vlmparity.launch import common

    require_at_least("--grace", grace, 0)

    if state_file is not None:
        paths = [state_file]
    else:
        paths = common.find_state_files(port)
        if not paths:
            where = f" on port {port}" if port is not None else ""
            raise ConfigError(f"no server launched by vlmparity{where} is recorded in {common.state_dir()}")
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise ConfigError(
                f"several launched servers are recorded ({names})", hint="pass --state-file or --port"
            )
    for path in paths:
        common.info(common.stop(path, grace=grace))


def register(app: typer.Typer) -> None:
    """Add `launch` and its sub-commands to the app."""
    app.add_typer(launch_app, name="launch")
