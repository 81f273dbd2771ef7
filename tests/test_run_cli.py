"""`vlmparity run`: option parsing into typed settings, secrets masking, and the command end to end."""

from __future__ import annotations

import pytest

from vlmparity.config import (
    RunConfig,
    RunOptions,
    SamplingPlan,
    mask_argv,
    mask_url,
    parse_endpoints,
    parse_task_data,
)
from vlmparity.errors import ConfigError


def test_endpoints_names_models_kinds() -> None:
    eps = parse_endpoints(
        ["vllm=http://127.0.0.1:8000/v1/", "ovms=http://127.0.0.1:9000/v3", "http://h:7/v1"],
        models=["llava", "ovms=OpenVINO/llava"],
        kinds=["ovms=ovms"],
        api_key="sk-secret",
    )
    assert [(e.name, e.url, e.model, e.kind) for e in eps] == [
        ("vllm", "http://127.0.0.1:8000/v1", "llava", "auto"),
        ("ovms", "http://127.0.0.1:9000/v3", "OpenVINO/llava", "ovms"),
        ("h_7", "http://h:7/v1", "llava", "auto"),
    ]
    assert all(e.api_key is not None and e.api_key.get_secret_value() == "sk-secret" for e in eps)
    # the key never serialises
    assert "sk-secret" not in str(eps) and "sk-secret" not in str([e.public() for e in eps])
    assert "sk-secret" not in eps[0].model_dump_json()


def test_endpoint_from_openai_api_base_and_errors() -> None:
    (ep,) = parse_endpoints([], default_base="http://localhost:8000/v1")
    assert ep.name == "localhost_8000" and ep.url == "http://localhost:8000/v1"
    assert parse_endpoints([]) == ()
    with pytest.raises(ConfigError, match="must look like"):
        parse_endpoints(["a=localhost:8000"])
    with pytest.raises(ConfigError, match="names no endpoint"):
        parse_endpoints(["a=http://h:1/v1"], models=["b=x"])
    with pytest.raises(ConfigError, match="unknown --kind"):
        parse_endpoints(["a=http://h:1/v1"], kinds=["tgi"])
    with pytest.raises(ConfigError, match="must be letters"):
        parse_endpoints(["a b=http://h:1/v1"])


def test_task_data_and_plan() -> None:
    assert parse_task_data(["mme=/d/mme", "mmmu_val=lmms-lab/MMMU"], ["mme", "mmmu_val"]) == {
        "mme": "/d/mme",
        "mmmu_val": "lmms-lab/MMMU",
    }
    assert parse_task_data(["/d/mme"], ["mme"]) == {"mme": "/d/mme"}
    with pytest.raises(ConfigError):
        parse_task_data(["/d/x"], ["mme", "mmmu_val"])
    with pytest.raises(ValueError, match="cannot be combined"):
        SamplingPlan(limit=10, sample=5)
    assert SamplingPlan().mode == "all" and SamplingPlan(limit=0.5).mode == "limit"
    assert SamplingPlan(sample=5, seed=3).mode == "sample"


def test_run_config_checks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eps = parse_endpoints(["a=http://h:1/v1", "a=http://h:2/v1"])
    with pytest.raises(ValueError, match="used twice"):
        RunConfig(endpoints=eps, tasks=("mme",), options=RunOptions(output_path=tmp_path))
    with pytest.raises(ValueError, match="concurrency"):
        RunOptions(output_path=tmp_path, concurrency=0)
    cfg = RunConfig(
        endpoints=parse_endpoints(["a=http://u:pw@h:1/v1"], api_key="sk-x"),
        tasks=("mme",),
        options=RunOptions(output_path=tmp_path, concurrency=8),
    )
    public = cfg.public()
    assert public["endpoints"][0]["url"] == "http://u:***@h:1/v1"
    assert "sk-x" not in str(public) and "pw" not in str(public)


def test_mask_argv_and_url() -> None:
    argv = ["run", "--api-key", "sk-1", "--endpoint", "a=http://u:pw@h:1/v1", "--api-key=sk-2", "x sk-3 y"]
    assert mask_argv(argv, ["sk-3"]) == [
        "run",
        "--api-key",
        "***",
        "--endpoint",
        "a=http://u:***@h:1/v1",
        "--api-key=***",
        "x *** y",
    ]
    assert mask_url("http://h:1/v1") == "http://h:1/v1"
    assert mask_url("https://user:secret@h/v1") == "https://user:***@h/v1"
