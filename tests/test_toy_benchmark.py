"""A benchmark defined in this file alone runs through the whole tool (issue 13: the Task protocol is the
whole benchmark).

The toy benchmark `toy_sum` asks "What is A + B?" beside a small picture; its own schema (with a task rule:
the answer column holds digits), prompt, parser (the first integer of the answer), metric (`toy_sum_acc`)
and breakdown (accuracy per operand size) live here. It is registered in this process only, its data is a
parquet folder in tmp_path, and two fake OpenAI-compatible servers (stdlib `http.server`) answer the sum
from the question, one of them wrong on some questions. Then `run` (both endpoints) -> `compare` ->
`report` -> `score --lmms-samples`, all through the CLI in this process, with no edit outside this file.
Every expected number is computed here from the data and the servers' known mistakes.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlmparity.errors import DataError
from vlmparity.tasks import (
    ACCURACY,
    FALLBACK_SEQUENTIAL,
    Answer,
    BreakdownTable,
    ColumnSpec,
    GroupScores,
    ImageData,
    ImagePart,
    LoggedLine,
    MetricSpec,
    OfflineScore,
    Prompt,
    RowProblem,
    Sample,
    SampleScore,
    TaskResult,
    TaskSchema,
    TextPart,
    base,
    register_task,
    task_names,
)

TOY = "toy_sum"
METRIC = "toy_sum_acc"
MODEL = "toy-model"
QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
N = 40
# The fake servers' mistakes (answer the sum + 1): the reference's and the candidate's.
REF_WRONG = {"q03", "q17"}
CAND_WRONG = {"q03", "q05", "q11", "q22", "q31", "q38"}


# ------------------------------------------------------------------------------------ the toy benchmark


def size_of(a: int, b: int) -> str:
    """The toy's stratum: one-digit sums and two-digit sums."""
    return "small" if a + b < 10 else "large"


def first_integer(text: str) -> str | None:
    m = re.search(r"-?\d+", text)
    return m.group(0) if m else None


class ToySumTask:
    """The toy benchmark: a picture and "What is A + B?"; right when the first integer of the answer is A + B."""

    name = TOY
    default_source = "example/toy-sum"
    legacy_sources: tuple[str, ...] = ()
    split = "test"
    max_tokens = 8
    max_images = 1
    metric_names: tuple[str, ...] = (METRIC,)
    lmms_version: str | float = 1.0
    artifact_keys: tuple[str, ...] = ()
    reasoning_tags: Sequence[tuple[str, str]] | None = None  # no reasoning blocks to strip
    schema = TaskSchema(
        task=TOY,
        dataset="the toy sums (split test)",
        id_columns=("qid",),
        columns=(
            ColumnSpec("qid"),
            ColumnSpec("image", "image"),
            ColumnSpec("question"),
            ColumnSpec("answer"),
        ),
    )

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (MetricSpec(METRIC, ACCURACY, margin=0.05),)

    def stop_part(self, sample: Sample) -> str:
        return self.name

    def check_rows(self, rows: Sequence[Mapping[str, Any]], *, images: bool = True) -> list[RowProblem]:
        return [
            RowProblem(i, "answer", f"is {row['answer']!r}, expected digits", hint="a toy answer is a number")
            for i, row in enumerate(rows)
            if not str(row["answer"]).isdigit()
        ]

    def breakdown_tables(self, result: TaskResult) -> list[BreakdownTable]:
        sizes: Mapping[str, Mapping[str, Any]] = result.breakdown.get("sizes", {})
        rows = tuple((name, str(v["n"]), f"{v['acc']:.3f}") for name, v in sorted(sizes.items()))
        return [BreakdownTable(("Size", "N", "Acc"), rows)]

    def group_scores(self, result: TaskResult, samples: Sequence[Sample]) -> GroupScores | None:
        sizes: Mapping[str, Mapping[str, Any]] = result.breakdown.get("sizes", {})
        return GroupScores("size", "fraction", 1.0, {k: (v["acc"], v["n"]) for k, v in sizes.items()})

    def _sample(self, doc_id: int, qid: str, question: str, answer: str, image: bytes | None) -> Sample:
        m = QUESTION.search(question)
        if m is None:
            raise DataError(f"toy row {doc_id}: {question!r} is not a sum question")
        return Sample(
            task=TOY,
            id=qid,
            doc_id=doc_id,
            target=answer,
            group=size_of(int(m[1]), int(m[2])),
            cluster=qid,
            images=() if image is None else (ImageData.from_bytes(image),),
            fields={"question": question},
            omitted_images=1 if image is None else 0,
        )

    def samples_from_rows(self, rows: Iterable[Mapping[str, Any]], *, images: bool = True) -> list[Sample]:
        return [
            self._sample(i, r["qid"], r["question"], r["answer"], bytes(r["image"]) if images else None)
            for i, r in enumerate(rows)
        ]

    def prompt(self, sample: Sample) -> Prompt:
        text = f"{sample.fields['question']}\nAnswer with a number."
        return Prompt(parts=(ImagePart(0), TextPart(text)), max_tokens=self.max_tokens, text=text)

    def score(
        self,
        samples: Sequence[Sample],
        answers: Sequence[Answer],
        *,
        seed: int = 0,
        fallback: str = FALLBACK_SEQUENTIAL,
    ) -> list[SampleScore]:
        out = []
        for sample, answer in zip(samples, answers, strict=True):
            parsed = None if answer.text is None else first_integer(answer.text)
            correct = parsed == sample.target
            details = {METRIC: {"qid": sample.id, "question": sample.fields["question"], "correct": correct}}
            out.append(SampleScore(sample_id=sample.id, correct=correct, parsed=parsed, details=details))
        return out

    def aggregate(
        self, samples: Sequence[Sample], scores: Sequence[SampleScore], *, allow_partial_pairs: bool = False
    ) -> TaskResult:
        by_id = {s.sample_id: s for s in scores}
        kept = [(s, by_id[s.id]) for s in samples if by_id[s.id].scored]
        sizes: dict[str, dict[str, Any]] = {}
        for sample, sc in kept:
            entry = sizes.setdefault(sample.group, {"n": 0, "right": 0})
            entry["n"] += 1
            entry["right"] += int(sc.correct)
        for entry in sizes.values():
            entry["acc"] = entry["right"] / entry["n"]
        right = sum(1 for _, sc in kept if sc.correct)
        return TaskResult(
            task=TOY,
            metrics={METRIC: right / len(kept) if kept else 0.0},
            breakdown={"sizes": sizes},
            n=len(kept),
            counts={"correct": right, "excluded": len(samples) - len(kept)},
        )

    def score_logged(self, lines: Sequence[LoggedLine], *, allow_partial_pairs: bool = False) -> OfflineScore:
        samples, answers = [], []
        for _, line in lines:
            entry = line[METRIC]
            samples.append(
                self._sample(int(line["doc_id"]), entry["qid"], entry["question"], str(line["target"]), None)
            )
            text = line["filtered_resps"]
            while isinstance(text, list):  # lmms-eval writes the text, some writers wrap it in lists
                text = text[0]
            answers.append(Answer(sample_id=entry["qid"], text=str(text)))
        scores = self.score(samples, answers)
        return OfflineScore("lmms-samples", TOY, samples, scores, self.aggregate(samples, scores))


# --------------------------------------------------------------------------------------------- fixtures


def operands(i: int) -> tuple[int, int]:
    return (i * 7) % 13, (i * 5) % 11


ROWS = [(f"q{i:02d}", *operands(i)) for i in range(N)]


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("qid", pa.string()), ("image", image), ("question", pa.string()), ("answer", pa.string())]
    )
    rows = [
        {
            "qid": qid,
            "image": {"bytes": png(i), "path": f"{qid}.png"},
            "question": f"What is {a} + {b}?",
            "answer": str(a + b),
        }
        for i, (qid, a, b) in enumerate(ROWS)
    ]
    folder = tmp_path / "toy"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The toy benchmark in this process's registry for one test (the registry is restored after)."""
    task_names()  # the built-in tasks are loaded into the registry that is restored
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_task(TOY, ToySumTask)
    yield


class FakeServer:
    """A generic OpenAI-compatible server: /v1/models and /v1/chat/completions, answering A + B, or A + B + 1
    for the questions in `wrong` (identified by their sum question and the fixture's rows)."""

    def __init__(self, wrong: set[str]) -> None:
        by_question = {f"What is {a} + {b}?": qid for qid, a, b in ROWS}
        requests: list[dict[str, Any]] = []
        self.requests = requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                requests.append(body)
                m = QUESTION.search(json.dumps(body))  # a question of the toy, or a probe of the tool
                answer = "I cannot tell."
                if m is not None:
                    total = int(m[1]) + int(m[2])
                    answer = str(total + 1 if by_question.get(m[0]) in wrong else total)
                self._send(
                    200,
                    {
                        "id": "cmpl-toy",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", MODEL),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def asked(server: FakeServer) -> list[str]:
    """The text of every request laid out as the toy's prompt (its image, then its text; 8 tokens)."""
    out = []
    for body in server.requests:
        content = body.get("messages", [{}])[0].get("content")
        if isinstance(content, list) and [p.get("type") for p in content] == ["image_url", "text"]:
            assert body["max_tokens"] == 8
            out.append(content[1]["text"])
    return sorted(out)


def cli(args: list[str]) -> int:
    from vlmparity.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# ------------------------------------------------------------------------------------------------ tests


def expected_acc(wrong: set[str], size: str | None = None) -> float:
    rows = [qid for qid, a, b in ROWS if size is None or size_of(a, b) == size]
    return sum(1 for qid in rows if qid not in wrong) / len(rows)


def test_expected_values_are_not_trivial() -> None:
    """The fixture's numbers: both strata present, the two endpoints disagree both ways."""
    assert {size_of(a, b) for _, a, b in ROWS} == {"small", "large"}
    assert CAND_WRONG - REF_WRONG and REF_WRONG - CAND_WRONG and REF_WRONG & CAND_WRONG
    assert expected_acc(REF_WRONG) == 38 / 40 and expected_acc(CAND_WRONG) == 34 / 40


def test_the_data_layer_checks_the_toy_schema_and_rule(toy_registered: None) -> None:
    from vlmparity.data.schema import check_rows, schema_for

    assert schema_for(TOY).id_columns == ("qid",)
    rows = [{"qid": "q0", "image": png(0), "question": "What is 1 + 2?", "answer": "three"}]
    with pytest.raises(DataError) as err:
        check_rows(TOY, rows, "toy.parquet")
    assert err.value.one_line().startswith(
        "toy.parquet row 0 (qid 'q0'), column 'answer': is 'three', expected"
    )
    rows[0]["answer"] = "3"
    check_rows(TOY, rows, "toy.parquet")
    del rows[0]["question"]
    with pytest.raises(DataError, match="column 'question' is missing"):
        check_rows(TOY, rows, "toy.parquet")


def test_run_compare_report_score(
    toy_registered: None, toy_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with FakeServer(REF_WRONG) as ref, FakeServer(CAND_WRONG) as cand:
        code = cli(
            ["run", "-e", f"ref={ref.url}", "-e", f"cand={cand.url}", "--tasks", TOY,
             "--data", f"{TOY}={toy_data}", "-o", str(out), "--log-samples"]
        )  # fmt: skip
        printed = capsys.readouterr()
        assert code == 0, printed.err
        # every question was asked of each endpoint once, with the toy's prompt layout and limit
        prompts = sorted(f"What is {a} + {b}?\nAnswer with a number." for _, a, b in ROWS)
        assert asked(ref) == asked(cand) == prompts

    # run: lmms-eval's results.json per endpoint with the toy's metric, version and config
    for name, wrong in (("ref", REF_WRONG), ("cand", CAND_WRONG)):
        (results,) = (out / name).glob("*_results.json")
        doc = json.loads(results.read_text())
        assert doc["results"][TOY][f"{METRIC},none"] == pytest.approx(expected_acc(wrong))
        assert doc["versions"][TOY] == 1.0
        assert doc["configs"][TOY]["generation_kwargs"]["max_new_tokens"] == 8
    assert f"|{TOY}|none  |     0|{METRIC}|↑  |{expected_acc(REF_WRONG):.4f}|" in printed.out
    assert f"|{TOY}|none  |     0|{METRIC}|↑  |{expected_acc(CAND_WRONG):.4f}|" in printed.out

    # compare: the toy's metric judged, the disagreements counted both ways
    verdict = tmp_path / "verdict.json"
    code = cli(["compare", str(out), "--reference", "ref", "--json", str(verdict), "--no-report"])
    printed = capsys.readouterr()
    assert code in (0, 1, 2), printed.err
    doc = json.loads(verdict.read_text())
    (candidate,) = doc["candidates"]
    assert doc["reference"] == "ref"
    assert candidate["tasks"][TOY]["paired"] == N
    assert candidate["tasks"][TOY]["disagreements"] == {
        "improvement": len(REF_WRONG - CAND_WRONG),  # q17
        "regression": len(CAND_WRONG - REF_WRONG),  # q05, q11, q22, q31, q38 (q03: both wrong alike)
    }
    (judged,) = candidate["metrics"]
    assert (judged["task"], judged["metric"], judged["n"], judged["unit"]) == (TOY, METRIC, N, "fraction")
    assert judged["a_value"] == pytest.approx(expected_acc(REF_WRONG))
    assert judged["b_value"] == pytest.approx(expected_acc(CAND_WRONG))
    assert (judged["discordant_ab"], judged["discordant_ba"]) == (5, 1)
    assert "VERDICT cand vs ref:" in printed.out

    # report: the HTML from the stores names the toy task and its metric
    report = tmp_path / "report.html"
    assert cli(["report", str(out), "--out", str(report)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    html = report.read_text(encoding="utf-8")
    assert TOY in html and METRIC in html
    assert f"{TOY} — per size" in html  # the toy's own groups (its `group_scores`), charted per backend

    # score: the run's lmms-eval samples file scored again, offline, by the toy's own hook
    (samples,) = (out / "cand").glob(f"*_samples_{TOY}.jsonl")
    assert cli(["score", "--lmms-samples", str(samples)]) == 0
    printed = capsys.readouterr()
    assert f"|{TOY}|none  |     0|{METRIC}|↑  |{expected_acc(CAND_WRONG):.4f}|" in printed.out
    assert f"{TOY}: n={N}, correct={N - len(CAND_WRONG)}" in printed.out
    # the toy's breakdown, rendered by report/tables from the data its hook returns
    sizes = {size: sum(1 for _, a, b in ROWS if size_of(a, b) == size) for size in ("large", "small")}
    breakdown = printed.out.split(f"{TOY} breakdown\n\n", 1)[1].splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in breakdown[:4]]
    assert cells == [
        ["Size", "N", "Acc"],
        ["-----", "--:", "----:"],
        ["large", str(sizes["large"]), f"{expected_acc(CAND_WRONG, 'large'):.3f}"],
        ["small", str(sizes["small"]), f"{expected_acc(CAND_WRONG, 'small'):.3f}"],
    ]
