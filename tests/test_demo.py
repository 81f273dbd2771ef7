"""`vlmparity demo`: a fresh folder, two simulated engines, a real run and comparison, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmparity.demo import MARKER, prepare_folder
from vlmparity.errors import ConfigError


def main(args: list[str]) -> int:
    from vlmparity.cli import main as cli_main

    try:
        cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_demo_folder_is_fresh_and_never_clobbers_user_files(tmp_path: Path) -> None:
    new = tmp_path / "a" / "demo"
    prepare_folder(new)
    assert [p.name for p in new.iterdir()] == [MARKER]
    (new / "runs").mkdir()
    (new / "report.html").write_text("old")
    prepare_folder(new)  # a previous demo's folder is cleared
    assert [p.name for p in new.iterdir()] == [MARKER]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not made by `vlmparity demo`"):
        prepare_folder(mine)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_small_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-mme", "28", "--n-mmmu", "10", "--keep"]) == 0
    printed = capsys.readouterr().out
    assert "VERDICT ovms vs vllm:" in printed
    assert f"report: {(out / 'report.html').resolve()}" in printed
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "vllm" in html and "ovms" in html
    doc = json.loads((out / "verdict.json").read_text())
    metrics = {m["metric"] for m in doc["candidates"][0]["metrics"]}
    assert metrics == {"mme_acc", "mme_perception_score", "mme_cognition_score", "mmmu_acc"}
    assert doc["candidates"][0]["health"]["candidate"]["n"] == 38
    # token-level closeness beside the verdict, as `compare` shows it (issue 15)
    assert "Numerical closeness (ovms vs vllm; not part of the verdict)" in printed
    closeness = doc["candidates"][0]["closeness"]
    assert closeness["overall"]["pairs"] == 38 and closeness["statement"]
    # --keep: the stored runs compare again without any server, with the same closeness figures
    again = tmp_path / "again.json"
    assert main(["compare", str(out / "runs"), "--no-report", "--json", str(again)]) == doc["exit_code"]
    assert json.loads(again.read_text())["candidates"][0]["closeness"] == closeness


def test_demo_points_at_nothing_it_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --keep the data and runs are scratch: no message, report or verdict names them; the last
    line says how to open the report. With --keep everything named exists afterwards."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-mme", "12", "--n-mmmu", "4"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.html", "verdict.json"]
    texts = {
        "terminal": printed,
        "report": (out / "report.html").read_text(encoding="utf-8"),
        "verdict": (out / "verdict.json").read_text(encoding="utf-8"),
    }
    for gone in (out / "runs", out / "data", out.resolve() / "runs", out.resolve() / "data"):
        for where, text in texts.items():
            assert str(gone) not in text, (where, gone)
    assert "--keep" in printed and "--keep" in texts["report"]  # said where it matters
    report = (out / "report.html").resolve()
    last = captured.out.strip().splitlines()[-1]
    assert last == f"open the report: xdg-open {report}  (or {report.as_uri()} in a browser)"

    kept = tmp_path / "kept"
    assert main(["demo", "--out", str(kept), "--n-mme", "12", "--n-mmmu", "4", "--keep"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    html = (kept / "report.html").read_text(encoding="utf-8")
    runs = kept / "runs"
    assert runs.is_dir() and (runs / "vlmparity.sqlite").is_file() and (kept / "data" / "mme").is_dir()
    assert f"vlmparity run -o {runs}" in printed and f"try `vlmparity compare {runs.resolve()}`" in printed
    assert f"{runs} (plan #1)" in html  # the setup table names the kept run folder and its plan
    assert captured.out.strip().splitlines()[-1].startswith("open the report: ")


@pytest.mark.slow
def test_default_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the default folder is ./vlmparity-demo
    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    assert "VERDICT ovms vs vllm:" in printed
    demo = tmp_path / "vlmparity-demo"
    assert (demo / "report.html").is_file() and (demo / "verdict.json").is_file()
    assert (
        not (demo / "data").exists() and not (demo / "runs").exists()
    )  # without --keep only the results stay
