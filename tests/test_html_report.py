"""The HTML comparison report: self-contained, escaped, complete (fast; no browser).

`make_report_data` builds the hand-made report also opened in Chromium by test_html_chromium.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmparity import stats
from vlmparity.compare import verdict as v
from vlmparity.errors import DataError, VlmparityError
from vlmparity.report import html as report_html
from vlmparity.report.html import render_report, side_of, write_report
from vlmparity.report.model import (
    AgreementInfo,
    AnswerView,
    Backend,
    Breakdown,
    Comparison,
    Disagreement,
    MetricComparison,
    Performance,
    ReportData,
    TaskSummary,
    VerdictSummary,
    thumbnail_data_url,
)

XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
ALERT_SCRIPT = "<script>alert(1)</script>"
ALERT_IMG = "<img src=x onerror=alert(1)>"


def png(width: int, height: int, colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _answer(
    raw: str | None, parsed: str | list[str] | None, correct: bool | None, outcome: str = "ok"
) -> AnswerView:
    return AnswerView(raw=raw, parsed=parsed, correct=correct, outcome=outcome)


def make_disagreements(ref: str, cand: str) -> list[Disagreement]:
    """Six disagreements: sides reference-only x2, candidate-only x2, all right x1, none right x1."""
    red = thumbnail_data_url(png(640, 480, (200, 30, 30)))
    blue = thumbnail_data_url(png(300, 600, (30, 30, 200)))
    green = thumbnail_data_url(png(200, 200, (30, 160, 60)))
    return [
        Disagreement(
            task="mme",
            sample_id="existence/000000006040.jpg::Is there a train in this image?",
            group="existence",
            prompt="Is there a train in this image? Please answer yes or no.",
            target="Yes",
            images=[red],
            answers={ref: _answer("Yes", "yes", True), cand: _answer(XSS_SCRIPT, "other", False)},
        ),
        Disagreement(
            task="mme",
            sample_id="OCR/0001.jpg::Is the word in the logo 'pizza'?",
            group="OCR",
            prompt='Is the word in the logo "pizza"? Please answer yes or no.',
            target="Yes",
            images=[green],
            answers={ref: _answer("No", "no", False), cand: _answer("Yes " + XSS_IMG, "yes", True)},
        ),
        Disagreement(
            task="mmmu_val",
            sample_id="validation_Art_12",
            group="Art",
            prompt="<image 1> <image 2> Which painting is older?\nA. left\nB. right\nAnswer with the option's letter.",
            target="A",
            images=[red, blue],
            answers={ref: _answer("A", "A", True), cand: _answer("B. right & <b>bold</b>", "B", False)},
        ),
        Disagreement(
            task="mmmu_val",
            sample_id="validation_Math_3",
            group="Math",
            prompt="What is 2 + 2?\nA. 3\nB. 5\nC. 22\nD. 4",
            target="D",
            images=[blue],
            answers={
                ref: _answer(ALERT_SCRIPT + " B", "B", False),
                cand: _answer(ALERT_IMG + " C", "C", False),
            },
        ),
        Disagreement(
            task="mmmu_val",
            sample_id="validation_Physics_7",
            group="Physics",
            prompt="Which force is larger?\nA. F1\nB. F2",
            target="B",
            images=[green],
            answers={ref: _answer(None, None, False, "timeout"), cand: _answer("B", "B", True)},
        ),
        Disagreement(
            task="mmmu_val",
            sample_id="validation_Physics_21",
            group="Physics",
            prompt="Give the period in seconds.",
            target="3.5",
            images=[],
            answers={
                ref: _answer("3.5", ["3.5"], True),
                cand: _answer("about 3.50 s", ["3.50", "3.5"], True),
            },
        ),
    ]


def _comparison(candidate: str, drop: int) -> Comparison:
    """A judged comparison from the real statistics on small hand-made correctness vectors."""
    a = np.array([True] * 140 + [False] * 60)
    b = a.copy()
    b[:drop] = False  # `drop` right answers become wrong
    mmmu = v.compare_accuracy(a, b, metric="mmmu_acc", n_boot=200)
    mme_a = np.tile([True, True, False, True], 50)
    mme_b = mme_a.copy()
    mme_acc = v.compare_accuracy(mme_a, mme_b, metric="mme_acc", n_boot=200)
    verdict = v.decide([mme_acc, mmmu])
    agreement = [
        AgreementInfo.from_stats("mmmu_val", "parsed", stats.agreement(list(a), list(b))),
        AgreementInfo("mme", "raw", 200, 197, 0.985, 0.957, 0.995),
    ]
    return Comparison.from_verdict(candidate, verdict, ["mme", "mmmu_val"], agreement)


def make_report_data(n_candidates: int = 1) -> ReportData:
    """Hand-built report: reference vllm, candidate(s) ovms..., MME and MMMU, six disagreements."""
    ref = "vllm"
    cands = ["ovms"] + [f"ovms-{i}" for i in range(2, n_candidates + 1)]
    rng = np.random.default_rng(0)

    def backend(name: str, kind: str, i: int) -> Backend:
        lat = list(np.round(rng.gamma(4.0, 0.15 * (i + 1), 120), 4))
        return Backend(
            name=name,
            kind=kind,
            model="llava-hf/llava-1.5-7b-hf",
            server_version="0.9.2" if kind == "vllm" else "2025.3",
            url=f"http://127.0.0.1:{8000 + i}/v1",
            run=f"runs/{name}",
            performance=Performance(
                latencies_s=[float(x) for x in lat],
                ttfts_s=[float(x) * 0.3 for x in lat],
                wall_s=61.5 + i,
                req_per_s=1.95,
                output_tokens_per_s=8.4,
            ),
            outcomes={
                "mme": {"ok": 118, "length": 1, "empty": 1},
                "mmmu_val": {"ok": 57, "timeout": 1 - min(i, 1), "http_error": 2 * min(i, 1)},
            },
            random_fallbacks={"mmmu_val": 2 + i},
        )

    backends = [backend(ref, "vllm", 0)] + [backend(c, "ovms", i + 1) for i, c in enumerate(cands)]
    names = [b.name for b in backends]
    mme_cats = ["existence", "count", "position", "color", "OCR", "code_reasoning"]
    subjects = ["Art", "Math", "Physics", "Computer_Science"]
    tasks = [
        TaskSummary(
            name="mme",
            n_samples=120,
            fingerprint={"source": "lmms-lab/MME", "revision": "abc123", "sha256": "f00d" * 8},
            plan={"kind": "stratified", "n": 120, "seed": 1234},
            metrics={
                n: {
                    "lmms-eval": {"mme_perception_score": 1450.0 - 10 * i, "mme_cognition_score": 300.0},
                    "answered": {"mme_perception_score": 1460.0 - 10 * i, "mme_cognition_score": 300.0},
                }
                for i, n in enumerate(names)
            },
            metric_units={"mme_perception_score": "points", "mme_cognition_score": "points"},
            breakdown=Breakdown(
                "category",
                "points",
                200.0,
                {c: {n: 150.0 + 5 * j - 7 * i for i, n in enumerate(names)} for j, c in enumerate(mme_cats)},
            ),
        ),
        TaskSummary(
            name="mmmu_val",
            n_samples=60,
            fingerprint={"source": "lmms-lab/MMMU", "revision": "def456"},
            plan={"kind": "limit", "limit": 60},
            metrics={n: {"lmms-eval": {"mmmu_acc": 0.35 - 0.02 * i}} for i, n in enumerate(names)},
            breakdown=Breakdown(
                "subject",
                "fraction",
                1.0,
                {
                    s: {n: 0.2 + 0.1 * j - 0.03 * i for i, n in enumerate(names)}
                    for j, s in enumerate(subjects)
                },
                {s: 15 for s in subjects},
            ),
        ),
    ]
    comparisons = [_comparison(c, drop=10 + 2 * i) for i, c in enumerate(cands)]
    dis = make_disagreements(ref, cands[0])
    for d in dis:  # further candidates agree with the first
        for c in cands[1:]:
            d.answers[c] = d.answers[cands[0]]
    worst = max(comparisons, key=lambda c: c.exit_code)
    return ReportData(
        reference=ref,
        backends=backends,
        verdict=VerdictSummary(worst.verdict, worst.label, worst.exit_code, list(worst.reasons)),
        comparisons=comparisons,
        tasks=tasks,
        disagreements=dis,
        alpha=0.05,
        margins={"mme_acc": 0.01, "mmmu_acc": 0.01, "mme_perception_score": 50.0},
        generation={"temperature": 0.0, "max_tokens": 16, "top_p": 1.0},
        tool_version="0.1.0",
        generated_at="2025-06-01T12:00:00Z",
        notes=["2 samples excluded: their request hashes differ between runs"],
    )


# --------------------------------------------------------------------------- parsing helpers


class _Collector(HTMLParser):
    """Tags with their attributes, script bodies and the disagreement rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script, self._buf = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._buf.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


@pytest.fixture(scope="module")
def data() -> ReportData:
    return make_report_data()


@pytest.fixture(scope="module")
def page(data: ReportData) -> str:
    return render_report(data)


# --------------------------------------------------------------------------- self-contained


def test_no_network_references(page: str) -> None:
    assert "http://" not in page.replace("http://127.0.0.1:", "")  # only the endpoints' (text) URLs
    assert "https://" not in page
    tags = parse(page).tags
    for tag, attrs in tags:
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/", "#")), (tag, name, value[:60])
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed", "base")]
    assert "@import" not in page
    assert "url(" not in page


def test_scripts_inline_and_allowed_by_csp(page: str) -> None:
    c = parse(page)
    assert [a.get("src") for a, _ in c.scripts] == [None, None]
    executable = [body for attrs, body in c.scripts if attrs.get("type") != "application/json"]
    assert len(executable) == 1
    digest = base64.b64encode(hashlib.sha256(executable[0].encode()).digest()).decode()
    csp = next(
        a["content"] for t, a in c.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp is not None
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_data_urls_other_than_images_are_dropped() -> None:
    data = make_report_data()
    data.disagreements[0].images = [
        "https://example.com/x.png",
        "data:text/html;base64,PHNjcmlwdD4=",
        'data:image/png;base64,AAAA" onerror="x',
    ]
    page = render_report(data)
    assert "example.com" not in page
    assert "data:text/html" not in page
    assert 'onerror="x' not in page


# --------------------------------------------------------------------------- escaping


def test_model_text_is_escaped(page: str) -> None:
    for payload in (XSS_SCRIPT, XSS_IMG, ALERT_SCRIPT, ALERT_IMG, "<b>bold</b>"):
        assert payload not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "B. right &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    c = parse(page)
    assert len(c.scripts) == 2  # ours only
    assert not [a for t, a in c.tags if t == "img" and a.get("src") == "x"]
    assert not [a for _, a in c.tags if any(k.startswith("on") for k in a)]


def test_hostile_names_everywhere_are_escaped() -> None:
    evil = "</script><script>window.__xss=1</script>"
    data = make_report_data()
    data.backends[1].server_version = evil
    data.backends[1].model = '"><img src=x onerror=alert(1)>'
    data.tasks[0].fingerprint["source"] = evil
    data.generation["stop"] = [evil]
    for d in data.disagreements:
        if d.task == "mme":
            d.group = evil  # reaches the JSON block for the category filter
            d.sample_id = evil + d.sample_id
            d.target = evil
            d.prompt = evil
    assert data.tasks[0].breakdown is not None
    data.tasks[0].breakdown.values[evil] = {"vllm": 10.0, "ovms": 20.0}
    data.notes.append(evil)
    page = render_report(data)
    assert "<script>window" not in page
    assert "<img src=x" not in page
    c = parse(page)
    assert len(c.scripts) == 2
    blob = next(body for attrs, body in c.scripts if attrs.get("type") == "application/json")
    assert "</" not in blob and "<" not in blob
    assert evil in json.loads(blob)["groups"]["mme"]


# --------------------------------------------------------------------------- content


def _rows(page: str) -> list[dict[str, str | None]]:
    return [a for t, a in parse(page).tags if t == "tr" and "data-side" in a]


def test_every_disagreement_is_listed(data: ReportData, page: str) -> None:
    rows = _rows(page)
    assert len(rows) == 6
    assert [(r["data-task"], r["data-group"]) for r in rows] == [
        ("mme", "existence"), ("mme", "OCR"), ("mmmu_val", "Art"),
        ("mmmu_val", "Math"), ("mmmu_val", "Physics"), ("mmmu_val", "Physics"),
    ]  # fmt: skip
    for d in data.disagreements:
        assert d.sample_id.replace("'", "&#39;").replace('"', "&#34;") in page
    # Thumbnails: 1 + 1 + 2 + 1 + 1 + 0 images.
    imgs = [a for t, a in parse(page).tags if t == "img"]
    assert len(imgs) == 6
    assert "no answer (timeout)" in page


def test_side_classes_and_counts(page: str) -> None:
    assert [r["data-side"] for r in _rows(page)] == [
        "reference_only", "candidate_only", "reference_only", "none_right", "candidate_only", "all_right",
    ]  # fmt: skip
    for key, n in {"reference_only": 2, "candidate_only": 2, "all_right": 1, "none_right": 1}.items():
        assert re.search(rf'id="f-n-{key}">{n}<', page)
    assert 'id="f-count">6 of 6 shown<' in page


def test_side_of_several_candidates() -> None:
    def dis(ref: bool | None, *cands: bool | None) -> Disagreement:
        answers = {"r": _answer("x", "x", ref)} | {f"c{i}": _answer("y", "y", c) for i, c in enumerate(cands)}
        return Disagreement("mme", "s", "g", "p", answers=answers)

    names = ["c0", "c1"]
    assert side_of(dis(True, True, False), "r", names) == "reference_only"
    assert side_of(dis(True, True, True), "r", names) == "all_right"
    assert side_of(dis(False, False, True), "r", names) == "candidate_only"
    assert side_of(dis(None, None, None), "r", names) == "none_right"  # failures are not right


def test_verdict_and_statistics_shown(data: ReportData, page: str) -> None:
    # 10 of 200 right answers dropped: delta -5 pp, margin 1 pp.
    mmmu = next(m for m in data.comparisons[0].metrics if m.metric == "mmmu_acc")
    assert mmmu.delta == pytest.approx(-10 / 200)
    assert data.verdict.verdict == "not equivalent"
    assert re.search(r'id="overall-verdict">not equivalent<', page)
    assert "-5.00 pp" in page
    assert "mmmu_acc: not equivalent" in page
    for text in ("llava-hf/llava-1.5-7b-hf", "2025.3", "0.9.2", "lmms-lab/MME", "f00d" * 8, "stratified",
                 "max_tokens", "α", "±1.00 pp", "±50.00 points", "vlmparity 0.1.0", "request hashes differ"):  # fmt: skip
        assert text in page, text
    # Column names say what each test tests; the bootstrap is labelled a description.
    summary = page.split('id="summary"')[1].split("</section>")[0]
    for text in ("interval of Δ (decides)", "p (Δ ≠ 0, McNemar / z)", "p (|Δ| ≥ margin, TOST, Holm)",
                 "p (|Δ| ≤ margin, Holm)", "bootstrap 95 % (description)", "equivalent within",
                 "Values: paired, policy <strong>answered</strong>"):  # fmt: skip
        assert text in summary, text
    # Each run's own scores carry their policy's name; one number format ("35.00 %", with a space).
    breakdown = page.split('id="breakdown"')[1].split("</section>")[0]
    assert re.search(
        r"<code>mme_perception_score</code></td><td>lmms-eval</td><td class=\"num\">1450.00</td>", breakdown
    )
    assert re.search(
        r"<code>mme_perception_score</code></td><td>answered</td><td class=\"num\">1460.00</td>", breakdown
    )
    assert re.search(r"<code>mmmu_acc</code></td><td>lmms-eval</td><td class=\"num\">35.00 %</td>", breakdown)
    assert not re.search(r"\d%", page.split("<style>")[0] + page.split("</style>")[1].split("<script")[0])


def test_svg_charts(page: str) -> None:
    svgs = re.findall(r"<svg class=\"chart (\w+)\"", page)
    assert sorted(svgs) == ["bars", "bars", "forest", "hist", "hist"]
    # Per-category bars for both backends: 6 MME categories + 4 MMMU subjects, 2 bars each.
    bars = re.findall(r"<rect [^>]*fill=\"(#[0-9a-f]{6})\"><title>", page.split('class="chart hist"')[0])
    assert len(bars) == (6 + 4) * 2
    assert "equivalence margin ±1.00 pp" in page
    assert ">Computer_Science (n=15)<" in page and ">existence<" in page  # counts only where given


def test_outcome_and_speed_tables(page: str) -> None:
    outcomes = page.split('id="outcomes"')[1].split("</section>")[0]
    for cls in (
        "ok",
        "http_error",
        "timeout",
        "connection",
        "empty",
        "length",
        "unsupported",
        "malformed",
        "random fallback",
    ):
        assert f">{cls}<" in outcomes
    # mmmu_val row of ovms: ok 57, http_error 2, timeout 0, connection 0, empty 0, length 0, unsupported 0,
    # malformed 0, fallback 3
    assert re.search(
        r"ovms</td>" + "".join(rf'<td class="num">{n}</td>' for n in (57, 2, 0, 0, 0, 0, 0, 0, 3)), outcomes
    )
    speed = page.split('id="speed"')[1].split("</section>")[0]
    assert "61.5 s" in speed and "1.95" in speed and "8.40" in speed


def test_several_candidates_get_columns_and_a_filter() -> None:
    data = make_report_data(n_candidates=3)
    page = render_report(data)
    head = page.split('id="dis-table"')[1].split("</thead>")[0]
    assert head.count("<th>") == 3 + 4  # sample, images, prompt; reference + 3 candidates
    assert 'id="f-candidate"' in page
    assert "a candidate right, reference wrong" in page
    # Each candidate's verdict section.
    for name in ("ovms", "ovms-2", "ovms-3"):
        assert f"{name} vs vllm" in page


def test_no_disagreements_and_missing_optional_parts() -> None:
    data = make_report_data()
    data.disagreements = []
    for b in data.backends:
        b.performance = None
        b.outcomes = {}
        b.random_fallbacks = {}
    for t in data.tasks:
        t.breakdown = None
    page = render_report(data)
    assert "No disagreements" in page
    assert "no timings recorded" in page
    assert 'id="dis-table"' not in page


def test_capped_disagreements_say_so() -> None:
    data = make_report_data()
    data.disagreements_total = 250
    assert "Showing 6 of 250 disagreements" in render_report(data)


# --------------------------------------------------------------------------- model and API


def test_json_round_trip(data: ReportData) -> None:
    doc = json.loads(data.to_json())
    assert ReportData.from_dict(doc) == data


def test_from_dict_rejects_bad_input(data: ReportData) -> None:
    doc = data.to_dict()
    del doc["verdict"]
    with pytest.raises(DataError, match="malformed report data"):
        ReportData.from_dict(doc)
    with pytest.raises(DataError, match="schema version"):
        ReportData.from_dict(data.to_dict() | {"schema_version": 99})


def test_metric_comparison_copies_paired_result() -> None:
    r = v.compare_accuracy([True] * 8 + [False] * 2, [True] * 7 + [False] * 3, metric="mmmu_acc", n_boot=0)
    m = MetricComparison.from_paired("mmmu_val", r)
    assert (m.task, m.metric, m.a_value, m.b_value, m.discordant_ab, m.discordant_ba) == (
        "mmmu_val",
        "mmmu_acc",
        0.8,
        0.7,
        1,
        0,
    )
    assert m.boot_low is None and m.confidence == pytest.approx(0.9)
    page = render_report(
        ReportData(
            reference="a",
            backends=[Backend("a"), Backend("b")],
            verdict=VerdictSummary(m.verdict, m.label, 2),
            comparisons=[Comparison("b", m.verdict, m.label, 2, metrics=[m])],
        )
    )
    # The interval shown in the table and in the forest plot is the one decided on.
    shown = f"[{100 * m.ci_low:+.2f}, {100 * m.ci_high:+.2f}]"
    assert f'<td class="num decision-interval">{shown}</td>' in page
    assert f"[{100 * m.ci_low:+.2f} pp, {100 * m.ci_high:+.2f} pp]" in page.split('class="chart forest"')[1]
    # One flipped answer in ten is far from certifying a 1-point margin: the verdict says how far.
    assert m.verdict == "inconclusive" and m.n_more is not None
    note = m.label.removeprefix("inconclusive: ")
    assert f'<span class="t-inconclusive">inconclusive</span><div class="small muted">{note}</div>' in page
    assert f'<td class="num certified">±{100 * m.certified_margin:.2f} pp</td>' in page


def test_validation_errors(data: ReportData) -> None:
    bad = ReportData.from_dict(data.to_dict())
    bad.reference = "nope"
    with pytest.raises(DataError, match="reference 'nope'"):
        render_report(bad)
    dup = ReportData.from_dict(data.to_dict())
    dup.backends.append(Backend("ovms"))
    with pytest.raises(DataError, match="duplicate backend"):
        render_report(dup)
    stray = ReportData.from_dict(data.to_dict())
    stray.disagreements[0].answers["ghost"] = _answer("x", "x", True)
    with pytest.raises(DataError, match="unknown backends"):
        render_report(stray)


def test_write_report(tmp_path: Path, data: ReportData) -> None:
    old_umask = os.umask(0o022)
    try:
        out = write_report(data, tmp_path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # readable like any other output, not 0600
    assert out == tmp_path / "report.html"
    assert out.read_text(encoding="utf-8") == render_report(data)
    nested = write_report(data, tmp_path / "a" / "b" / "cmp.html")
    assert nested.is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VlmparityError, match="cannot write the report"):
        write_report(data, blocker / "report.html")


# --------------------------------------------------------------------------- thumbnails


def _decode(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    img = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    img.load()
    return img


def test_thumbnail_keeps_aspect_and_bounds() -> None:
    assert _decode(thumbnail_data_url(png(640, 320, (10, 20, 30)))).size == (160, 80)
    assert _decode(thumbnail_data_url(png(90, 300, (10, 20, 30)), max_side=100)).size == (30, 100)
    small = _decode(thumbnail_data_url(png(40, 30, (10, 20, 30))))
    assert small.size == (40, 30) and small.format == "JPEG"


def test_thumbnail_flattens_transparency_on_white() -> None:
    img = _decode(thumbnail_data_url(png(50, 50, (255, 0, 0, 0), mode="RGBA")))
    assert img.mode == "RGB"
    r, g, b = img.getpixel((25, 25))  # type: ignore[misc]
    assert min(r, g, b) > 245  # fully transparent red becomes white


def test_thumbnail_rejects_corrupt_bytes() -> None:
    with pytest.raises(DataError, match="cannot read image"):
        thumbnail_data_url(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        thumbnail_data_url(png(10, 10, (0, 0, 0))[:40])


def test_safe_image_src() -> None:
    ok = thumbnail_data_url(png(8, 8, (1, 2, 3)))
    assert report_html.safe_image_src(ok) == ok
    assert report_html.safe_image_src("javascript:alert(1)") is None
    assert report_html.safe_image_src("//evil/x.png") is None
