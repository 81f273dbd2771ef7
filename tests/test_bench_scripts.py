"""The bench scripts: every one answers --help, and the pure helpers of vs_lmms_eval.py and scale.py are right.

Expected values come from the research notes (lmms-eval-bench.md install steps, lmms-eval.md task YAMLs
and output formats) or from hand computation; no server, no lmms-eval run.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # scale.py imports vs_lmms_eval as a sibling script
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


vs = _load("vs_lmms_eval")
scale = _load("scale")


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_bench_script_answers_help(script: Path) -> None:
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_the_benches_listed_in_the_readme_exist() -> None:
    readme = (BENCH / "README.md").read_text()
    for script in SCRIPTS:
        assert f"`{script.name}`" in readme, f"{script.name} is not described in bench/README.md"


# ----- settings and commands -------------------------------------------------------------------------


def test_settings_ideal_times_by_hand() -> None:
    seed, fast = vs.make_settings(["seed", "fast"], 0.01)
    assert (seed.capacity, seed.latency, seed.time_scale) == (1, 4.4, 0.01)
    assert seed.ideal_s(500) == pytest.approx(22.0)  # 500 x 4.4 s x 0.01, one at a time
    assert (fast.capacity, fast.latency) == (64, 0.05)
    assert fast.ideal_s(500) == pytest.approx(500 * 0.05 / 64)  # 0.390625 s
    assert "scaled down 100x" in seed.describe()
    with pytest.raises(SystemExit):
        vs.make_settings(["slow"], 0.01)


def test_refuse_setting_refuses_some_multi_image_requests(tmp_path: Path) -> None:
    from vlmparity.sim import config_from_dict

    (refuse,) = vs.make_settings(["refuse"], 0.01)
    assert (refuse.capacity, refuse.latency, refuse.multi_image_reject) == (64, 0.05, 0.25)
    assert "25% of multi-image requests refused" in refuse.describe()
    cfg = config_from_dict(vs.sim_config(refuse, [tmp_path / "mme"], tmp_path / "log.jsonl"))
    assert cfg.multi_image_reject == 0.25 and cfg.image_limit is None
    (fast,) = vs.make_settings(["fast"], 0.01)
    assert (
        config_from_dict(vs.sim_config(fast, [tmp_path / "mme"], tmp_path / "l.jsonl")).multi_image_reject
        == 0
    )


def test_openai_error_style_from_the_venvs_rendering() -> None:
    # openai-python >= 3.51: "Error code: 400 - <message>"; older: the whole parsed body
    assert vs.openai_style_from("Error code: 400 - M\n") == "message"
    assert vs.openai_style_from("Error code: 400 - {'error': {'message': 'M'}}") == "body"
    assert vs.openai_style_from("version 3.51.0") == "message"
    assert vs.openai_style_from("version 3.22.1") == "body"
    assert vs.openai_style_from("version 2.54.0") == "body"
    cmd = vs.vlmparity_command(
        Path("py"), "http://h:1/v1", Path("/data"), 5, Path("/o"), openai_error_style="body"
    )
    assert cmd[cmd.index("--openai-error-style") + 1] == "body"


def test_open_question_candidates_compare_as_sets() -> None:
    a = {"mmmu_acc": {"parsed_pred": [["12", 12.0, "x"]]}, "filtered_resps": "12"}
    b = {"mmmu_acc": {"parsed_pred": [[12.0, "x", "12"]]}, "filtered_resps": "12"}
    c = {"mmmu_acc": {"parsed_pred": [[12.0, "12"]]}, "filtered_resps": "12"}
    assert vs.sample_diffs({0: a}, {0: b}) == []
    assert vs.sample_diffs({0: a}, {0: c}) != []
    mc = {"mmmu_acc": {"parsed_pred": ["B"]}, "filtered_resps": "B"}
    assert vs.sample_score(mc) == ["B"]


def test_sim_config_is_accepted_by_the_simulator(tmp_path: Path) -> None:
    from vlmparity.sim import config_from_dict

    setting = vs.Setting("seed", 1, 4.4, 0.01)
    cfg = config_from_dict(vs.sim_config(setting, [tmp_path / "mme"], tmp_path / "log.jsonl"))
    assert cfg.load.capacity == 1
    assert cfg.load.base_latency * cfg.load.time_scale == pytest.approx(0.044)
    assert cfg.image_limit is None  # every MMMU question is answered, by both tools
    assert cfg.model == vs.MODEL


def test_lmms_eval_command_is_the_seeds() -> None:
    cmd = vs.lmms_eval_command(Path("/v/bin/python"), "http://127.0.0.1:9/v1", 250, Path("/out"))
    assert cmd[:3] == ["/v/bin/python", "-m", "lmms_eval"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--model"] == "openai_compatible"
    assert (
        flags["--model_args"]
        == "model_version=llava-hf/llava-1.5-7b-hf,base_url=http://127.0.0.1:9/v1,api_key=x"
    )
    assert flags["--tasks"] == "mme_local,mmmu_val_local"
    assert flags["--limit"] == "250"
    assert flags["--batch_size"] == "1"
    assert "--log_samples" in cmd
    assert cmd[cmd.index("--process_docs_parallel") + 1] == "1"  # serial: MMMU's random draws in doc order
    assert cmd[cmd.index("--seed") + 1] == "0,1234,1234,1234"  # lmms-eval's default, spelled out
    assert cmd[cmd.index("--include_path") + 1] == str(BENCH / "lmms_eval_tasks")


def test_vlmparity_command_uses_options_the_cli_has() -> None:
    cmd = vs.vlmparity_command(Path("py"), "http://h:1/v1", Path("/data"), 250, Path("/o"))
    assert cmd[:4] == ["py", "-m", "vlmparity", "run"]
    assert cmd[cmd.index("--limit") + 1] == "250"
    datas = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--data"]
    assert datas == ["mme=/data/mme", "mmmu_val=/data/mmmu"]
    help_text = subprocess.run(
        [sys.executable, "-m", "vlmparity", "run", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in (c for c in cmd if c.startswith("--")):
        assert option in help_text, option
    assert "--limit" not in vs.vlmparity_command(Path("py"), "u", Path("/d"), None, Path("/o"))


def test_lmms_env_is_offline_and_drops_openai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("OPENAI_API_BASE", "http://elsewhere/v1")
    env = vs.lmms_env(Path("/hf"))
    assert env["HF_DATASETS_OFFLINE"] == env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"] == "/hf"
    assert "OPENAI_API_KEY" not in env and "OPENAI_API_BASE" not in env


def test_install_steps_follow_the_research_notes(tmp_path: Path) -> None:
    venv, constraint = tmp_path / "v", tmp_path / "c.txt"
    steps = vs.install_steps(venv, constraint)
    assert steps[0][1:] == ["-m", "venv", "--clear", str(venv)]
    assert steps[1][-1] == "torch==2.13.0"  # first, so that the CPU wheel is the one installed
    assert steps[2][-3:] == ["-c", str(constraint), "lmms-eval==0.7.3"]
    assert steps[3][-4:] == ["uninstall", "-y", "-q", "torchvision"]
    assert steps[4][-1] == "filelock<4"


def test_data_ok_wants_full_size_sets(tmp_path: Path) -> None:
    for folder, rows in (("mme", 2374), ("mmmu", 900)):
        (tmp_path / folder / "data").mkdir(parents=True)
        (tmp_path / folder / "data" / "x.parquet").write_bytes(b"")
        (tmp_path / folder / "synth.json").write_text(json.dumps({"rows": rows}))
    assert vs.data_ok(tmp_path)
    (tmp_path / "mmmu" / "synth.json").write_text(json.dumps({"rows": 30}))
    assert not vs.data_ok(tmp_path)
    assert not vs.data_ok(tmp_path / "nowhere")


# ----- the local lmms-eval task configs --------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)


def test_local_mme_task_keeps_lmms_eval_prompts_and_generation() -> None:
    cfg = _yaml(BENCH / "lmms_eval_tasks" / "mme_local" / "mme_local.yaml")
    assert cfg["task"] == "mme_local"
    assert cfg["dataset_path"] == "parquet"
    assert cfg["dataset_kwargs"] == {"data_files": {"test": "mme/data/test-00000-of-00001.parquet"}}
    assert cfg["test_split"] == "test"
    # research/lmms-eval.md §1.1
    assert cfg["generation_kwargs"] == {
        "max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False
    }  # fmt: skip
    assert cfg["lmms_eval_specific_kwargs"]["default"] == {
        "pre_prompt": "",
        "post_prompt": "\nAnswer the question using a single word or phrase.",
    }
    assert cfg["doc_to_visual"] == "!function utils.mme_doc_to_visual"
    assert [m["metric"] for m in cfg["metric_list"]] == ["mme_perception_score", "mme_cognition_score"]
    assert cfg["metadata"] == [{"version": 0.0}]


def test_local_mmmu_task_keeps_lmms_eval_prompts_and_generation() -> None:
    folder = BENCH / "lmms_eval_tasks" / "mmmu_val_local"
    cfg = _yaml(folder / "mmmu_val_local.yaml")
    template = _yaml(folder / "_default_template_yaml")
    assert cfg["task"] == "mmmu_val_local"
    assert cfg["dataset_path"] == "parquet"
    assert cfg["dataset_kwargs"] == {
        "data_files": {"validation": "mmmu/data/validation-00000-of-00001.parquet"}
    }
    assert cfg["include"] == "_default_template_yaml"
    assert cfg["doc_to_messages"] == "!function utils.mmmu_doc_to_messages"
    # research/lmms-eval.md §2.1
    assert cfg["lmms_eval_specific_kwargs"]["default"] == {
        "prompt_type": "format",
        "multiple_choice_prompt": "Answer with the option's letter from the given choices directly.",
        "open_ended_prompt": "Answer the question using a single word or phrase.",
    }
    assert template == {
        "generation_kwargs": {"max_new_tokens": 128},
        "metadata": {"version": 0.0, "interleaved_format": False},
    }


def _installed_tasks() -> Path | None:
    found = sorted((vs.DEFAULT_VENV / "lib").glob("python3*/site-packages/lmms_eval/tasks"))
    return found[0] if found else None


@pytest.mark.skipif(_installed_tasks() is None, reason="lmms-eval is not installed in bench/.venv-lmms-eval")
@pytest.mark.parametrize(
    ("local", "installed"),
    [
        ("mme_local/mme_local.yaml", "mme/mme.yaml"),
        ("mmmu_val_local/mmmu_val_local.yaml", "mmmu/mmmu_val.yaml"),
        ("mmmu_val_local/_default_template_yaml", "mmmu/_default_template_yaml"),
    ],
)
def test_local_tasks_equal_the_installed_ones_but_for_the_data(local: str, installed: str) -> None:
    tasks = _installed_tasks()
    assert tasks is not None
    ours = _yaml(BENCH / "lmms_eval_tasks" / local)
    theirs = _yaml(tasks / installed)
    changed = {"dataset_path", "dataset_kwargs", "task", "tag"}
    assert {k: v for k, v in ours.items() if k not in changed} == {
        k: v for k, v in theirs.items() if k not in changed
    }


def test_local_utils_reexport_the_installed_functions() -> None:
    for folder, module in (("mme_local", "mme"), ("mmmu_val_local", "mmmu")):
        text = (BENCH / "lmms_eval_tasks" / folder / "utils.py").read_text()
        assert f'"{module}" / "utils.py"' in text  # the installed task's own utils, executed afresh


# ----- scores and sample logs -----------------------------------------------------------------------------


def test_read_scores_maps_local_tasks_back_and_drops_stderrs(tmp_path: Path) -> None:
    doc = {
        "results": {
            "mme_local": {
                "alias": "mme_local",
                "mme_cognition_score,none": 300.0,
                "mme_cognition_score_stderr,none": "N/A",
                "mme_cognition_score_stderr_clt,none": 0.05,
                "mme_perception_score,none": 1234.5,
            },
            "mmmu_val": {"alias": "mmmu_val", "mmmu_acc,none": 0.51222, "mmmu_acc_pass_at_k,none": []},
        }
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    assert vs.read_scores(path) == {
        "mme": {"mme_cognition_score": 300.0, "mme_perception_score": 1234.5},
        "mmmu_val": {"mmmu_acc": 0.51222},
    }


def test_score_rows_flag_equal_different_and_missing() -> None:
    rows = vs.score_rows(
        {"mme": {"mme_perception_score": 1500.0, "mme_cognition_score": 300.0}},
        {
            "mme": {"mme_perception_score": 1500.0, "mme_cognition_score": 297.5},
            "mmmu_val": {"mmmu_acc": 0.5},
        },
    )
    assert rows == [
        ("mme", "mme_cognition_score", 300.0, 297.5, False),
        ("mme", "mme_perception_score", 1500.0, 1500.0, True),
        ("mmmu_val", "mmmu_acc", None, 0.5, False),
    ]


def test_sample_diffs_compare_answers_not_list_wrapping() -> None:
    a = {
        0: {"doc_id": 0, "filtered_resps": "Yes", "mme_perception_score": {"score": 1.0}},
        1: {"doc_id": 1, "filtered_resps": "No", "mme_perception_score": {"score": 0.0}},
        2: {"doc_id": 2, "filtered_resps": "B", "mmmu_acc": {"parsed_pred": ["B"]}},
    }
    b = {
        0: {"doc_id": 0, "filtered_resps": ["Yes"], "mme_perception_score": {"score": 1.0}},
        1: {"doc_id": 1, "filtered_resps": ["Yes"], "mme_perception_score": {"score": 1.0}},
        2: {"doc_id": 2, "filtered_resps": "B", "mmmu_acc": {"parsed_pred": ["C"]}},
        3: {"doc_id": 3, "filtered_resps": "A"},
    }
    assert vs.sample_diffs(a, b) == [
        "doc 1: answer 'No' vs 'Yes'",
        "doc 2: same answer, score ['B'] vs ['C']",
        "doc 3: only in vlmparity",
    ]


def test_field_diffs_ignore_doc_hash_and_the_vlmparity_block() -> None:
    a = {0: {"doc_id": 0, "filtered_resps": "Yes", "doc_hash": "x", "token_counts": [{"input_tokens": 5}]}}
    b = {
        0: {
            "doc_id": 0,
            "filtered_resps": ["Yes"],
            "doc_hash": "y",
            "token_counts": [{"input_tokens": 5}],
            "vlmparity": {},
        }
    }
    assert dict(vs.field_diffs(a, b)) == {"filtered_resps differs": 1}
    b[0]["input_media"] = []
    assert any(k.startswith("keys ") for k in vs.field_diffs(a, b))


# ----- request bodies -------------------------------------------------------------------------------------


def _png_url(mode: str, level: int, color: Any = (10, 20, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (7, 5), color).save(buf, format="PNG", compress_level=level)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(url: str, text: str = "Is it red?", **params: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return {"model": "m", "messages": [{"role": "user", "content": content}], **params}


def test_same_pixels_at_other_png_levels_are_no_difference() -> None:
    a = vs.body_view(_body(_png_url("RGB", 6), max_tokens=16, temperature=0.0, top_p=1.0))
    b = vs.body_view(_body(_png_url("RGB", 1), max_tokens=16, temperature=0.0, top_p=1.0, model="other"))
    (_, ia), (_, ib) = a.parts[0], b.parts[0]
    assert ia.pixels == ib.pixels and (ia.mode, ia.size, ia.format) == ("RGB", (7, 5), "PNG")
    assert vs.body_diffs(a, b) == []


def test_body_diffs_name_pixels_text_layout_and_typed_params() -> None:
    base = vs.body_view(_body(_png_url("RGB", 6), max_tokens=128, temperature=0))
    other_pixels = vs.body_view(_body(_png_url("RGB", 6, (10, 20, 31)), max_tokens=128, temperature=0))
    assert vs.body_diffs(base, other_pixels) == ["image pixels differ (RGB (7, 5) vs RGB (7, 5))"]
    rgba = vs.body_view(_body(_png_url("RGBA", 6, (10, 20, 30, 255)), max_tokens=128, temperature=0))
    assert vs.body_diffs(base, rgba) == ["image pixels differ (RGB (7, 5) vs RGBA (7, 5))"]
    text = vs.body_view(_body(_png_url("RGB", 6), "Is it blue?", max_tokens=128, temperature=0))
    assert vs.body_diffs(base, text) == ["text part differs"]
    params = vs.body_view(_body(_png_url("RGB", 6), max_tokens=128, temperature=0.0, top_p=1.0, seed=1234))
    assert vs.body_diffs(base, params) == [
        "seed: absent vs 1234 (int)",
        "temperature: 0 (int) vs 0.0 (float)",
        "top_p: absent vs 1.0 (float)",
    ]
    text_first = {
        "messages": [
            {"role": "user", "content": list(reversed(_body(_png_url("RGB", 6))["messages"][0]["content"]))}
        ]
    }
    assert vs.body_diffs(vs.body_view(_body(_png_url("RGB", 6))), vs.body_view(text_first)) == [
        "part layout ['image', 'text'] vs ['text', 'image']"
    ]


def test_compare_captures_counts_per_sample(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    one, two = vs.capture_name("s1"), vs.capture_name("s2")
    assert one != two and one == vs.capture_name("s1")
    (a / one).write_text(json.dumps(_body(_png_url("RGB", 6), max_tokens=16)))
    (b / one).write_text(json.dumps(_body(_png_url("RGB", 1), max_tokens=16, seed=1234)))
    (a / two).write_text(json.dumps(_body(_png_url("RGB", 6), max_tokens=16)))
    report = vs.compare_captures(a, b, {one: "s1", two: "s2"})
    assert (report.compared, report.only_one) == (1, 1)
    assert (report.images, report.pixels_equal, report.bytes_equal) == (1, 1, 0)
    assert (report.texts, report.texts_equal) == (1, 1)
    assert dict(report.diffs) == {"seed: absent vs 1234 (int)": 1}
    assert report.examples == {"seed: absent vs 1234 (int)": "s1"}


def test_tool_run_counts_sample_requests_only() -> None:
    stats = vs.ChildStats(returncode=0, wall_s=10.0, cpu_s=2.0, maxrss_mb=100.0, started=1000.0)
    entries = [
        {"time": 1001.0, "sample_id": None, "body_hash": None},  # vlmparity's endpoint probe
        {"time": 1002.5, "sample_id": "a", "body_hash": "h1"},
        {"time": 1003.0, "sample_id": "b", "body_hash": "h2"},
        {"time": 1004.0, "sample_id": "a", "body_hash": "h1"},  # a retry
    ]
    run = vs.ToolRun("vlmparity", stats, entries, Path("/o"), Path("/l"))
    assert run.requests == 3
    assert run.first_request_s == pytest.approx(2.5)
    assert run.sending_s == pytest.approx(7.5)
    assert run.hashes() == {"a": "h1", "b": "h2"}


def test_read_chat_log_keeps_chat_requests_in_arrival_order(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    lines = [
        {"time": 3.0, "path": "/v1/chat/completions", "sample_id": "b"},
        {"time": 1.0, "path": "/v1/models"},
        {"time": 2.0, "path": "/v1/chat/completions", "sample_id": "a"},
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [e["sample_id"] for e in vs.read_chat_log(log)] == ["a", "b"]
    assert vs.read_chat_log(tmp_path / "absent.jsonl") == []


def test_run_child_measures_cpu_and_rss(tmp_path: Path) -> None:
    # the child holds its 64 MB until the sampler has surely seen it (the peak is sampled from /proc)
    flag = tmp_path / "go"
    code = (
        "import pathlib, time\nx = bytearray(64 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
        f"pathlib.Path({str(tmp_path / 'held')!r}).touch()\n"
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.01)\nprint('ok')"
    )
    import threading
    import time

    def release() -> None:
        while not (tmp_path / "held").exists():
            time.sleep(0.01)
        time.sleep(0.3)
        flag.touch()

    t = threading.Thread(target=release)
    t.start()
    stats = vs.run_child([sys.executable, "-c", code], cwd=tmp_path, env=os.environ, log=tmp_path / "log")
    t.join()
    assert stats.returncode == 0
    assert (tmp_path / "log").read_text().strip() == "ok"
    assert stats.maxrss_mb >= 64  # the 64 MB buffer was touched page by page
    assert stats.cpu_s > 0
    failed = vs.run_child(
        [sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path, env=os.environ, log=tmp_path / "l2"
    )
    assert failed.returncode == 3


# ----- scale.py -----------------------------------------------------------------------------------------------


def test_phase_peaks_and_rss_at() -> None:
    samples = [(0.0, 100.0), (0.5, 300.0), (1.0, 250.0), (1.5, 900.0), (2.0, 400.0)]
    marks = [("load", 0.0), ("send", 1.0), ("score", 2.0)]
    assert scale.phase_peaks(samples, marks) == [("load", 300.0), ("send", 900.0), ("score", 400.0)]
    assert scale.rss_at(samples, 1.2) == 250.0
    assert scale.rss_at(samples, -1) is None


def test_goal_line_says_met_or_missed() -> None:
    assert scale.goal_line("peak RSS", 800.0, "MB", 1024).endswith("goal <= 1024 MB: met")
    assert scale.goal_line("rescoring", 2.5, "s", 2.0).endswith("goal <= 2 s: MISSED")


def test_proc_rss_of_this_process_and_of_none() -> None:
    rss = scale.proc_rss_mb(os.getpid())
    assert rss is not None and rss > 10  # this interpreter with pytest loaded
    assert scale.proc_rss_mb(2**22 + 12345) is None  # above the kernel's pid_max default


# ----- peak RSS of a tool's process tree (vs_lmms_eval.run_child) ------------------------------------------


def test_peak_rss_is_the_tools_process_tree_not_the_benchs(tmp_path: Path) -> None:
    # the bench holds 300 MB itself; the tool is a parent that starts a child holding 150 MB until told
    ballast = bytearray(300 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident
    flag = tmp_path / "go"
    child = (
        "import pathlib, time\n"
        "b = bytearray(150 << 20)\n"
        "b[::4096] = b'x' * len(b[::4096])\n"
        f"pathlib.Path({str(tmp_path / 'held')!r}).touch()\n"
        f"while not pathlib.Path({str(flag)!r}).exists(): time.sleep(0.01)\n"
    )
    parent = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}])\n"
    import threading
    import time

    def release() -> None:  # let the child go once the sampler has certainly seen it holding its memory
        while not (tmp_path / "held").exists():
            time.sleep(0.01)
        time.sleep(0.5)
        flag.touch()

    t = threading.Thread(target=release)
    t.start()
    stats = vs.run_child(
        [sys.executable, "-c", parent], cwd=tmp_path, env=dict(os.environ), log=tmp_path / "log"
    )
    t.join()
    assert stats.returncode == 0
    assert 150 <= stats.maxrss_mb < 150 + 200, stats.maxrss_mb  # the tree's; never the bench's 300 MB
    del ballast


def test_process_tree_finds_descendants() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])",
        ]
    )
    try:
        import time

        for _ in range(500):
            tree = vs.process_tree(proc.pid)
            if len(tree) >= 2:
                break
            time.sleep(0.01)
        assert tree[0] == proc.pid and len(tree) == 2
        assert os.getpid() not in tree
    finally:
        for pid in reversed(vs.process_tree(proc.pid)):
            os.kill(pid, 15)
        proc.wait()
