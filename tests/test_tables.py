"""Markdown tables: lmms-eval's results table (research §5.4) and the breakdowns; `vlmparity tasks`."""

from __future__ import annotations

import subprocess
import sys

from vlmparity.report.tables import (
    breakdown_table,
    markdown_table,
    render,
    results_table,
)
from vlmparity.tasks.base import TaskResult
from vlmparity.tasks.mmmu import MMMUTask

MME = TaskResult(
    task="mme",
    metrics={"mme_perception_score": 1500.25, "mme_cognition_score": 300.5},
    breakdown={
        "categories": {
            "code_reasoning": {
                "metric": "mme_cognition_score",
                "images": 20,
                "acc": 60.0,
                "acc_plus": 40.0,
                "score": 100.0,
            },
            "OCR": {
                "metric": "mme_perception_score",
                "images": 20,
                "acc": 75.0,
                "acc_plus": 50.5,
                "score": 125.5,
            },
        },
        "stderr_clt": {"mme_cognition_score": 0.03, "mme_perception_score": None},
    },
    n=80,
)
MMMU = TaskResult(
    task="mmmu_val",
    metrics={"mmmu_acc": 0.36444},
    breakdown={
        "printable_results": {
            "Overall-Art and Design": {"num": 2, "acc": 0.5},
            "Art": {"num": 2, "acc": 0.5},
            "Overall": {"num": 2, "acc": 0.5},
        }
    },
    n=2,
    counts={"random_fallback": 1, "failed": 0},
)


def test_mme_results_table_exact() -> None:
    assert results_table([MME]) == "\n".join(
        [
            "|Tasks|Filter|n-shot|       Metric       |   |  Value  |   |Stderr|Stderr_CLT|",
            "|-----|------|-----:|--------------------|---|--------:|---|------|----------|",
            "|mme  |none  |     0|mme_cognition_score |↑  | 300.5000|±  |N/A   |0.0300    |",
            "|mme  |none  |     0|mme_perception_score|↑  |1500.2500|±  |N/A   |N/A       |",
        ]
    )


def test_mmmu_alone_has_no_clt_column_and_tasks_sort_by_name() -> None:
    alone = results_table([MMMU]).splitlines()
    assert alone[0] == "| Tasks  |Filter|n-shot| Metric |   |Value |   |Stderr|"
    assert alone[2] == "|mmmu_val|none  |     0|mmmu_acc|↑  |0.3644|±  |N/A   |"
    both = results_table([MMMU, MME]).splitlines()
    assert [line.split("|")[1].strip() for line in both[2:]] == ["mme", "mme", "mmmu_val"]
    assert both[0].endswith("|Stderr_CLT|") and both[4].endswith("|N/A       |")


def test_markdown_table_alignment() -> None:
    table = markdown_table(["a", "num"], [["x", "1"], ["yy", "22.5"]])
    assert table.splitlines() == ["| a |num |", "|---|---:|", "|x  |   1|", "|yy |22.5|"]


def test_mme_breakdown_lists_perception_first_then_sums() -> None:
    lines = breakdown_table(MME).splitlines()
    assert lines[2].startswith("|OCR") and "125.50" in lines[2] and "75.00" in lines[2]
    assert lines[3].startswith("|code_reasoning") and "cognition" in lines[3]
    assert "1500.25" in lines[4] and "Perception" in lines[4]
    assert "300.50" in lines[5] and "Cognition" in lines[5]


def test_mmmu_breakdown_keeps_lmms_eval_order() -> None:
    table = MMMUTask().breakdown_tables(MMMU)[0]
    lines = markdown_table(table.headers, table.rows).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "**Overall-Art and Design**",
        "Art",
        "**Overall**",
    ]
    assert "0.50000" in lines[3]
    assert breakdown_table(MMMU) == "\n".join(lines)


def test_render_has_table_breakdowns_and_counts() -> None:
    text = render([MMMU, MME])
    assert text.index("Tasks") < text.index("mme breakdown") < text.index("mmmu_val breakdown")
    assert "mmmu_val: n=2, random_fallback=1" in text


def test_cli_tasks_lists_both() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vlmparity", "tasks"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert rows == [
        [
            "mme",
            "lmms-lab-encoder/MME (also lmms-lab/MME)",
            "test",
            "mme_cognition_score, mme_perception_score",
            "mme_acc, mme_perception_score, mme_cognition_score",
            "16",
        ],
        [
            "mmmu_val",
            "lmms-lab-encoder/MMMU (also lmms-lab/MMMU)",
            "validation",
            "mmmu_acc",
            "mmmu_acc",
            "128",
        ],
    ]
    assert "mme_acc" in out.stdout.split(table[-1], 1)[1]  # the note that says what mme_acc is
