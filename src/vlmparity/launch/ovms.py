"""`vlmparity launch ovms`: an OVMS model repository for a VLM (export, graph.pbtxt, config.json) and its server.

Facts (../shared/research/servers.md §1.1–1.3): a VLM is served as a MediaPipe graph (`HttpLLMCalculator` node
"LLMExecutor" with `LLMCalculatorOptions`: pipeline_type, models_path, device, cache_size, ...) listed in
config.json as `{"model_config_list": [{"config": {"name", "base_path"}}]}`; the model is exported with
`optimum-cli export openvino` (OVMS' own export default is int8 weights; here fp16 for parity), plus
`convert_tokenizer` when no detokenizer came out; readiness is `/v2/health/ready` then `/v2/models/{name}/ready`;
the OpenAI API lives under `/v3` on every release (`/v1` too only from 2026.3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from vlmparity.errors import ConfigError, VlmparityError
from vlmparity.launch import pbtxt
from vlmparity.launch.common import LaunchPlan, ReadyCheck, connect_host, default_paths, free_port, info

PIPELINE_TYPES = ("LM", "VLM", "LM_CB", "VLM_CB", "OMNI", "AUTO")  # LLMCalculatorOptions.PipelineType
OPTIONS_EXT = "[type.googleapis.com/mediapipe.LLMCalculatorOptions]"
DEFAULT_IMAGE = "openvino/model_server:latest"
VLM_FILES = (
    "openvino_language_model.xml",
    "openvino_language_model.bin",
    "openvino_text_embeddings_model.xml",
    "openvino_text_embeddings_model.bin",
    "openvino_vision_embeddings_model.xml",
    "openvino_vision_embeddings_model.bin",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
)
LM_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml")


@dataclass
class OvmsOptions:
    """The options of `vlmparity launch ovms` (defaults as in the CLI)."""

    model: str  # Hugging Face id or folder (PyTorch to export, or an OpenVINO export)
    model_name: str | None = None
    repository: Path = Path("ovms-models")
    weight_format: str = "fp16"
    pipeline_type: str = "VLM_CB"
    device: str = "CPU"
    max_num_seqs: int = 256
    cache_size: int = 10
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    plugin_config: str = "{}"
    image: str = DEFAULT_IMAGE
    ovms_binary: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log: Path | None = None
    state_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)


@dataclass
class OvmsPlan:
    """A server plan plus what must happen before it: export commands and where the model files go."""

    launch: LaunchPlan
    model_dir: Path  # where the OpenVINO files are (models_path resolved)
    graph_path: Path
    config_path: Path
    export_commands: list[list[str]]  # the second (convert_tokenizer) only when no detokenizer came out
    needs_export: bool
    pipeline_type: str


def is_openvino_folder(path: Path) -> bool:
    """True for a folder that already holds an OpenVINO export."""
    return (path / "openvino_language_model.xml").is_file() or (path / "openvino_model.xml").is_file()


def default_model_name(model: str) -> str:
    """The served name: a hub id as is (as OVMS' export script does), a folder by its own name."""
    path = Path(model).expanduser()
    if model.startswith(("/", "./", "../", "~")) or path.exists():
        return path.resolve().name
    return model


def render_graph(opts: OvmsOptions, models_path: str) -> str:
    """The graph.pbtxt text for `opts`, reading models from `models_path` (relative to the graph's folder)."""
    template = (resources.files("vlmparity.launch") / "templates" / "ovms_graph.pbtxt").read_text()
    batched = (
        f"\n      max_num_batched_tokens: {opts.max_num_batched_tokens},"
        if opts.max_num_batched_tokens
        else ""
    )
    return Template(template).substitute(
        pipeline_type=opts.pipeline_type,
        models_path=models_path,
        plugin_config=opts.plugin_config,
        enable_prefix_caching="true" if opts.enable_prefix_caching else "false",
        cache_size=opts.cache_size,
        max_num_batched_tokens=batched,
        max_num_seqs=opts.max_num_seqs,
        device=opts.device,
    )


def render_config(existing: dict[str, Any] | None, name: str, base_path: str) -> str:
    """config.json listing the graph `name` at `base_path` (other servables of an existing file are kept)."""
    data: dict[str, Any] = dict(existing or {})
    entries = [e for e in data.get("model_config_list", []) if e.get("config", {}).get("name") != name]
    entries.append({"config": {"name": name, "base_path": base_path}})
    data["model_config_list"] = entries
    return json.dumps(data, indent=2) + "\n"


def graph_problems(text: str) -> list[str]:
    """What is wrong with a VLM graph.pbtxt (empty when it has every field OVMS needs)."""
    try:
        graph = pbtxt.parse(text)
    except pbtxt.PbtxtError as err:
        return [f"not valid protobuf text: {err}"]
    problems = []
    if "HTTP_REQUEST_PAYLOAD:input" not in graph.get("input_stream", []):
        problems.append('no input_stream "HTTP_REQUEST_PAYLOAD:input"')
    if "HTTP_RESPONSE_PAYLOAD:output" not in graph.get("output_stream", []):
        problems.append('no output_stream "HTTP_RESPONSE_PAYLOAD:output"')
    nodes = [
        n
        for n in graph.get("node", [])
        if isinstance(n, dict) and n.get("calculator") == ["HttpLLMCalculator"]
    ]
    if len(nodes) != 1:
        return [*problems, f"expected one node with calculator HttpLLMCalculator, found {len(nodes)}"]
    node = nodes[0]
    if "LLM_NODE_RESOURCES:llm" not in node.get("input_side_packet", []):
        problems.append('the node lacks input_side_packet "LLM_NODE_RESOURCES:llm"')
    options = [o for o in node.get("node_options", []) if isinstance(o, dict) and OPTIONS_EXT in o]
    if not options or not isinstance(options[0][OPTIONS_EXT][0], dict):
        return [*problems, f"the node lacks node_options {OPTIONS_EXT}"]
    llm = options[0][OPTIONS_EXT][0]

    def one(name: str) -> Any:
        values = llm.get(name, [])
        return values[0] if len(values) == 1 else None

    if not one("models_path"):
        problems.append("models_path is missing (it is required)")
    if one("pipeline_type") is not None and one("pipeline_type") not in PIPELINE_TYPES:
        problems.append(f"pipeline_type {one('pipeline_type')} is not one of {', '.join(PIPELINE_TYPES)}")
    if not one("device"):
        problems.append("device is missing")
    for name, low in (("max_num_seqs", 1), ("cache_size", 0)):
        value = one(name)
        if value is not None and not (str(value).isdigit() and int(value) >= low):
            problems.append(f"{name} {value} is not an integer >= {low}")
    if one("enable_prefix_caching") not in (None, "true", "false"):
        problems.append(f"enable_prefix_caching {one('enable_prefix_caching')} is not true/false")
    plugin = one("plugin_config")
    if plugin is not None:
        try:
            json.loads(plugin)
        except ValueError:
            problems.append(f"plugin_config {plugin!r} is not JSON")
    return problems


def config_problems(text: str, name: str, config_dir: Path, graph_dir: Path) -> list[str]:
    """What is wrong with an OVMS config.json for serving graph `name` from `graph_dir`."""
    try:
        data = json.loads(text)
    except ValueError as err:
        return [f"not valid JSON: {err}"]
    entries = data.get("model_config_list") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return ["no model_config_list list"]
    problems = []
    ours = []
    for i, entry in enumerate(entries):
        config = entry.get("config") if isinstance(entry, dict) else None
        if (
            not isinstance(config, dict)
            or not isinstance(config.get("name"), str)
            or not config.get("base_path")
        ):
            problems.append(f"model_config_list[{i}] needs config.name and config.base_path")
        elif config["name"] == name:
            ours.append(config)
    if len(ours) != 1:
        return [*problems, f"expected one entry named {name!r}, found {len(ours)}"]
    base = Path(ours[0]["base_path"])
    resolved = (base if base.is_absolute() else config_dir / base).resolve()
    if resolved != graph_dir.resolve():
        problems.append(
            f"base_path {ours[0]['base_path']} points to {resolved}, not to the graph folder {graph_dir}"
        )
    return problems


def missing_model_files(model_dir: Path, pipeline_type: str) -> list[str]:
    """The OpenVINO files a pipeline needs that `model_dir` lacks."""
    auto_lm = pipeline_type == "AUTO" and (model_dir / "openvino_model.xml").is_file()
    need = LM_FILES if pipeline_type in ("LM", "LM_CB") or auto_lm else VLM_FILES
    return [name for name in need if not (model_dir / name).is_file()]


def export_commands(source: str, target: Path, weight_format: str) -> list[list[str]]:
    """The export step: optimum-cli to OpenVINO IR, then the tokenizer conversion (needed when no detokenizer)."""
    optimum = ["optimum-cli", "export", "openvino", "--model", source, "--weight-format", weight_format]
    return [
        [*optimum, "--trust-remote-code", str(target)],
        ["convert_tokenizer", "--with-detokenizer", "--trust-remote-code", "-o", str(target), source],
    ]


def server_command(
    opts: OvmsOptions, port: int, repository: Path, config_path: Path, extra_mounts: list[Path]
) -> tuple[list[str], str | None]:
    """The OVMS command (docker image or local binary) and the docker container name (None for a binary)."""
    if opts.ovms_binary:
        cmd = [opts.ovms_binary, "--rest_port", str(port), "--rest_bind_address", opts.host]
        return [*cmd, "--config_path", str(config_path), *opts.extra_args], None
    name = f"vlmparity-ovms-{port}"
    publish = f"{port}:{port}" if opts.host in ("0.0.0.0", "") else f"{opts.host}:{port}:{port}"
    cmd = ["docker", "run", "--rm", "--name", name, "-u", f"{os.getuid()}:{os.getgid()}", "-p", publish]
    # Mounted at the same path inside, so config.json and graph.pbtxt paths mean the same in and out.
    for path in [repository, *extra_mounts]:
        cmd += ["-v", f"{path}:{path}:ro"]
    cmd += [opts.image, "--rest_port", str(port), "--config_path", str(config_path), *opts.extra_args]
    return cmd, name


def build_plan(opts: OvmsOptions) -> OvmsPlan:
    """The repository files, export step, server command and readiness checks for `opts` (no side effects)."""
    if opts.pipeline_type not in PIPELINE_TYPES:
        raise ConfigError(f"--pipeline-type {opts.pipeline_type} is not one of {', '.join(PIPELINE_TYPES)}")
    try:
        json.loads(opts.plugin_config)
    except ValueError as err:
        raise ConfigError(f"--plugin-config {opts.plugin_config!r} is not JSON") from err
    name = opts.model_name or default_model_name(opts.model)
    if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", name) or ".." in name.split("/"):
        raise ConfigError(f"model name {name!r} may hold only letters, digits, '_', '.', '-' and '/'")
    repository = opts.repository.expanduser().resolve()
    graph_dir = repository / name
    source = Path(opts.model).expanduser()
    extra_mounts: list[Path] = []
    if source.is_dir() and is_openvino_folder(source):
        model_dir = source.resolve()
        models_path = str(model_dir)
        needs_export = False
        if model_dir != graph_dir:
            extra_mounts.append(model_dir)
    else:
        model_dir = graph_dir
        models_path = "./"
        needs_export = not is_openvino_folder(graph_dir)
    source_arg = str(source.resolve()) if source.exists() else opts.model
    commands = export_commands(source_arg, graph_dir, opts.weight_format) if model_dir == graph_dir else []

    config_path = repository / "config.json"
    existing: dict[str, Any] | None = None
    if config_path.is_file():
        try:
            existing = json.loads(config_path.read_text())
        except ValueError as err:
            raise ConfigError(f"{config_path} is not valid JSON: {err}", hint="fix or remove it") from err
        if not isinstance(existing, dict):
            raise ConfigError(f"{config_path} is not a JSON object", hint="fix or remove it")
    graph_text = render_graph(opts, models_path)
    config_text = render_config(existing, name, os.path.relpath(graph_dir, repository))

    port = opts.port if opts.port else free_port(connect_host(opts.host))
    log_default, state_default = default_paths("ovms", port)
    command, container = server_command(opts, port, repository, config_path, extra_mounts)
    origin = f"http://{connect_host(opts.host)}:{port}"
    # KServe's model-ready path takes one path segment; a name with '/' is checked in /v1/config instead.
    model_check = (
        ReadyCheck("/v1/config", config_model=name) if "/" in name else ReadyCheck(f"/v2/models/{name}/ready")
    )
    notes = [
        f"model {opts.model} served as {name!r} from {model_dir}",
        f"weights {opts.weight_format} (OVMS' own export default is int8; vLLM on CPU defaults to bf16)",
        f"pipeline {opts.pipeline_type} on {opts.device}, KV cache {opts.cache_size} GB, max_num_seqs {opts.max_num_seqs}",
    ]
    if commands:
        notes.append("export " + ("needed" if needs_export else "already done") + f" (target {graph_dir})")
    launch = LaunchPlan(
        engine="ovms",
        command=command,
        env={},
        origin=origin,
        base_url=f"{origin}/v3",
        checks=[ReadyCheck("/v2/health/ready"), model_check],
        log_path=(opts.log or log_default).expanduser().resolve(),
        state_path=(opts.state_file or state_default).expanduser().resolve(),
        model_name=name,
        host=opts.host,
        port=port,
        notes=notes,
        files={graph_dir / "graph.pbtxt": graph_text, config_path: config_text},
        container=container,
    )
    return OvmsPlan(
        launch, model_dir, graph_dir / "graph.pbtxt", config_path, commands, needs_export, opts.pipeline_type
    )


def validate(plan: OvmsPlan, check_model_files: bool) -> None:
    """Check the generated graph and config (and the model folder's OpenVINO files) before anything starts."""
    graph = plan.launch.files[plan.graph_path]
    config = plan.launch.files[plan.config_path]
    problems = [f"graph.pbtxt: {p}" for p in graph_problems(graph)]
    problems += [
        f"config.json: {p}"
        for p in config_problems(
            config, plan.launch.model_name, plan.config_path.parent, plan.graph_path.parent
        )
    ]
    if problems:
        raise ConfigError("generated OVMS files are invalid: " + "; ".join(problems))
    if check_model_files:
        missing = missing_model_files(plan.model_dir, plan.pipeline_type)
        if missing:
            raise ConfigError(
                f"{plan.model_dir} lacks OpenVINO files: {', '.join(missing)}",
                hint="run the export command shown by --dry-run, or pass --export",
            )


def format_export(plan: OvmsPlan) -> str:
    """The export step as shell lines (for --dry-run and for the hint when files are missing)."""
    import shlex

    if not plan.export_commands:
        return "# export: not needed (the model folder is already an OpenVINO export)\n"
    lines = ["# export (once; needs: pip install 'optimum[openvino]' openvino-tokenizers)"]
    lines.append(shlex.join(plan.export_commands[0]))
    lines.append("# only if openvino_detokenizer.xml did not come out of the export:")
    lines.append(shlex.join(plan.export_commands[1]))
    return "\n".join(lines) + "\n"


def run_export(plan: OvmsPlan) -> None:
    """Run the export commands (their output goes to the terminal); raises when one fails."""
    for i, cmd in enumerate(plan.export_commands):
        if i == 1 and (plan.model_dir / "openvino_detokenizer.xml").is_file():
            break  # optimum-cli already converted the tokenizer
        if shutil.which(cmd[0]) is None:
            raise VlmparityError(
                f"cannot export: {cmd[0]} not found",
                hint="pip install 'optimum[openvino]' openvino-tokenizers",
            )
        info("running " + " ".join(cmd))
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            raise VlmparityError(
                f"export failed: {cmd[0]} exited with code {code}", hint="see its output above"
            )


def check_runner(opts: OvmsOptions) -> None:
    """The docker client or the OVMS binary must exist before anything is started."""
    if opts.ovms_binary:
        path = Path(opts.ovms_binary)
        found = (
            shutil.which(opts.ovms_binary)
            if "/" not in opts.ovms_binary
            else (str(path) if path.exists() else None)
        )
        if not found or not os.access(found, os.X_OK):
            raise ConfigError(f"--ovms-binary {opts.ovms_binary}: not an executable file")
    elif shutil.which("docker") is None:
        raise ConfigError(
            "docker not found", hint="install docker, or pass --ovms-binary PATH to a local ovms"
        )
