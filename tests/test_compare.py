"""`vlmparity compare` on hand-made run stores: join, paired metrics, policies, infrastructure gates, CLI.

The stores are written directly (no HTTP) over the small synthetic sets, with answers chosen per sample,
so every expected value below follows from the answers by hand (MME: category score = mean over its
images of acc + acc_plus; MMMU: accuracy = right / questions).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy import stats as sps

from vlmparity import runner
from vlmparity.compare import analysis as an
from vlmparity.compare import join as jn
from vlmparity.config import RunConfig, RunOptions, SamplingPlan, parse_endpoints
from vlmparity.errors import ConfigError, DataError
from vlmparity.report import comparison, terminal
from vlmparity.report.labels import metric_label
from vlmparity.store import ResultRecord, SampleRecord, Store
from vlmparity.tasks.base import Sample

# (outcome, text) for one sample, or None for no stored result
Reply = tuple[str, str | None] | None
Answerer = Callable[[Sample], Reply]


@pytest.fixture(scope="module")
def data(synth_mme_small: Path, synth_mmmu_small: Path) -> dict[str, Path]:
    return {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small}


@pytest.fixture(scope="module")
def samples(data: dict[str, Path]) -> dict[str, list[Sample]]:
    return {
        t: list(runner.prepare_task(t, str(p), limit=None, sample=None, seed=0).samples)
        for t, p in data.items()
    }


def right(s: Sample) -> Reply:
    """The right answer: MME's own Yes/No, MMMU's letter in parentheses (open questions: the key)."""
    if s.task == "mmmu_val" and s.fields["question_type"] == "multiple-choice":
        return ("ok", f"({s.target})")
    return ("ok", str(s.target))


def wrong(s: Sample) -> Reply:
    if s.task == "mme":
        return ("ok", "No" if str(s.target).lower() == "yes" else "Yes")
    return ("ok", "(A)" if s.target != "A" else "(B)")


def make_store(
    out: Path,
    data: dict[str, Path],
    samples: dict[str, list[Sample]],
    answers: dict[str, Answerer],
    *,
    hash_of: Callable[[Sample], str] = lambda s: f"h:{s.task}:{s.id}",
    limit: float | None = None,
) -> Path:
    """A run store with one run per endpoint, answering each sample as `answers[endpoint]` says."""
    cfg = RunConfig(
        endpoints=parse_endpoints([f"{name}=http://127.0.0.1:9/v1" for name in answers]),
        tasks=tuple(data),
        data={t: str(p) for t, p in data.items()},
        plan=SamplingPlan(limit=limit),
        options=RunOptions(output_path=out),
    ).public()
    with Store.open(out) as st:
        planned = {
            t: runner.prepare_task(t, str(p), limit=limit, sample=None, seed=0).samples
            for t, p in data.items()
        }
        st.register_samples(
            SampleRecord(s.task, s.id, s.doc_id, hash_of(s), len(s.images))
            for ss in planned.values()
            for s in ss
        )
        for name, answer in answers.items():
            run = st.upsert_run(name, kind="vllm", model="m", config=cfg)
            recs = []
            for ss in planned.values():
                for s in ss:
                    reply = answer(s)
                    if reply is None:
                        continue
                    outcome, text = reply
                    recs.append(
                        ResultRecord(
                            run.run_id,
                            s.task,
                            s.id,
                            hash_of(s),
                            outcome,
                            text=text,
                            latency=0.1,
                            transient=False,
                        )
                    )
            st.put_results(recs)
    return out


def first_image(samples: list[Sample], category: str) -> str:
    return next(s.cluster for s in samples if s.group == category)


def flipper(ids: set[str]) -> Answerer:
    return lambda s: wrong(s) if s.id in ids else right(s)


def metric(t: an.TaskAnalysis, name: str, other: bool = False) -> an.v.PairedResult:
    return next(r for r in (t.other_metrics if other else t.metrics) if r.metric == name)


def test_paired_metrics_by_hand(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    mme, mmmu = samples["mme"], samples["mmmu_val"]
    art = first_image(mme, "artwork")
    code = first_image(mme, "code_reasoning")
    flips = {next(s.id for s in mme if s.cluster == art)} | {s.id for s in mme if s.cluster == code}
    mc = [s.id for s in mmmu if s.fields["question_type"] == "multiple-choice"]
    flips |= set(mc[:2])
    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": flipper(flips)})

    (joined,) = jn.load_joins([out])
    assert (joined.reference.label, joined.candidate.label) == ("ref", "cand")
    result = an.analyse(joined, an.Settings(n_boot=200))
    t_mme, t_mmmu = result.tasks
    assert (t_mme.n_pairs, t_mmmu.n_pairs) == (56, 60)

    acc = metric(t_mme, "mme_acc")
    assert (acc.a_value, acc.b_value) == (1.0, pytest.approx(53 / 56))
    assert (acc.discordant_ab, acc.discordant_ba) == (3, 0)
    # images are clusters: the test of no difference is a z-test with the variance under no difference,
    # (1^2 + 2^2) / 56^2 from the two images plus one pseudo-discordant question: z = 3 / sqrt(6)
    assert acc.difference_test == "z-test (clustered)"
    assert acc.p_difference == pytest.approx(2 * sps.norm.sf(3 / 6**0.5))
    # artwork has 4 images: one drops from 200 to 50 (acc 50, acc_plus 0): mean falls by 150 / 4
    perception = metric(t_mme, "mme_perception_score")
    assert (perception.a_value, perception.delta) == (pytest.approx(2000.0), pytest.approx(-37.5))
    # code_reasoning has one image, both questions wrong: 200 -> 0
    cognition = metric(t_mme, "mme_cognition_score")
    assert (cognition.a_value, cognition.delta) == (pytest.approx(800.0), pytest.approx(-200.0))
    mmmu_acc = metric(t_mmmu, "mmmu_acc")
    assert mmmu_acc.delta == pytest.approx(-2 / 60)
    assert (mmmu_acc.discordant_ab, mmmu_acc.discordant_ba) == (2, 0)
    assert (mmmu_acc.difference_test, mmmu_acc.p_difference) == ("McNemar exact", pytest.approx(0.5))

    assert t_mme.parsed_agreement is not None and t_mme.parsed_agreement.n_agree == 53
    assert {d.kind for d in result.disagreements} == {an.REGRESSION}
    assert {d.sample_id for d in result.disagreements} == flips
    assert result.problems == ()
    assert result.exit_code == result.verdict.exit_code
    # per-category values for the report: artwork 162.5 vs 200
    art_row = next(g for g in t_mme.groups if g.group == "artwork")
    assert (art_row.a, art_row.b, art_row.n) == (200.0, 162.5, 8)


def test_failures_policies_and_error_gate(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    mme = samples["mme"]
    code = first_image(mme, "code_reasoning")
    timed_out = next(s.id for s in mme if s.cluster == code)

    def cand(s: Sample) -> Reply:
        return ("timeout", None) if s.id == timed_out else right(s)

    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": cand})
    (joined,) = jn.load_joins([out])
    excluded = an.analyse(joined, an.Settings(n_boot=0))
    t = excluded.tasks[0]
    # errors excluded: the whole image (2 questions) leaves the MME statistics
    assert (t.n_pairs, t.n_used) == (56, 54)
    assert metric(t, "mme_acc").delta == 0.0
    # parity: the timeout is a wrong answer; cognition loses that image's 200 -> 50
    par = metric(t, "mme_cognition_score", other=True)
    assert par.delta == pytest.approx(-150.0)
    assert metric(t, "mme_acc", other=True).discordant_ab == 1
    assert [d.kind for d in excluded.disagreements] == [an.FAILURE]
    # 1 failure in 116 requests: 0.86 % is under the default 2 % gate, over a 0.5 % one
    assert excluded.health_b.failures == 1 and excluded.health_b.outcomes["timeout"] == 1
    assert excluded.problems == ()
    strict = an.analyse(joined, an.Settings(n_boot=0, max_error_rate=0.005))
    assert strict.exit_code == an.EXIT_INFRA
    assert "1 of 116 requests failed" in strict.problems[0] and "timeout=1" in strict.problems[0]
    assert "--rerun-errors" in strict.problems[0]  # a plain rerun cannot fix a permanent failure
    parity = an.analyse(joined, an.Settings(n_boot=0, policy="parity"))
    assert metric(parity.tasks[0], "mme_cognition_score").delta == pytest.approx(-150.0)


def test_identical_unparseable_answers_get_identical_random_letters(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    """Same raw answers, one extra failure: lmms-eval's one draw sequence would shift after it; pairs must not."""
    from vlmparity.tasks.mmmu_parse import multi_choice_info

    mc = [s for s in samples["mmmu_val"] if s.fields["question_type"] == "multiple-choice"]
    failed = mc[0].id

    def ref(s: Sample) -> Reply:
        return ("ok", "I cannot tell from the image") if s in mc else right(s)

    def cand(s: Sample) -> Reply:
        return ("http_error", None) if s.id == failed else ref(s)

    out = make_store(tmp_path / "runs", data, samples, {"ref": ref, "cand": cand})
    (joined,) = jn.load_joins([out])
    result = an.analyse(joined, an.Settings(n_boot=0))
    t = next(t for t in result.tasks if t.task == "mmmu_val")
    assert [(d.kind, d.sample_id) for d in t.disagreements] == [(an.FAILURE, failed)]
    assert t.raw_agreement is not None and t.raw_agreement.rate == 1.0
    assert t.parsed_agreement is not None and t.parsed_agreement.rate == 1.0
    assert t.random_fallbacks == (len(mc), len(mc) - 1)
    # the letter each side got is random.Random("<score seed 0>:<sample id>").choice(letters)
    sides = {p.sample.id: p for p in next(j for j in joined.tasks if j.task == "mmmu_val").pairs}
    for s in mc[1:]:
        _, letters = multi_choice_info(list(s.fields["options"]))
        expected = random.Random(f"0:{s.id}").choice(letters)
        assert sides[s.id].a.parsed == sides[s.id].b.parsed == expected
    assert metric(t, "mmmu_acc").delta == 0.0
    text = terminal.render_terminal(result)
    assert "drawn per sample" in text and "lmms-eval's sequential draw" in text
    doc = comparison.json_document([result])
    assert doc["settings"]["random_fallback"] == "per_sample"
    # the runs' own scores keep lmms-eval's sequence: one random.Random(0) over the unparsed answers in order
    own = joined.candidate.scores["mmmu_val"]
    rng = random.Random(0)
    for s, sc in zip(own.samples, own.scores, strict=True):
        if s in mc[1:]:
            assert sc.parsed == rng.choice(multi_choice_info(list(s.fields["options"]))[1])


def test_unsupported_failures_say_why_and_what_to_do(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    multi = [s for s in samples["mmmu_val"] if len(s.images) > 1]
    most = max(len(s.images) for s in multi)
    timed_out = samples["mme"][0].id

    def cand(s: Sample) -> Reply:
        if s.id == timed_out:
            return ("timeout", None)
        return ("unsupported", None) if s in multi else right(s)

    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": cand})
    (joined,) = jn.load_joins([out])
    # no limit recorded (the run never saw the server's message): say so, and what to do
    (generic, advice) = an.analyse(joined, an.Settings(n_boot=0)).problems
    assert generic.startswith(f"cand: {len(multi) + 1} of 116 requests failed")
    assert "timeout=1" in generic and f"unsupported={len(multi)}" in generic
    assert advice.startswith(
        f"cand: {len(multi)} of 60 mmmu_val samples unsupported (the server refused them"
    )
    assert f"raise the server's limit to {most} images per request" in advice
    assert "--multi-image skip" in advice

    # the vLLM server reported a one-image limit: the restart flag with the images the data needs
    with Store.open(out) as st:
        st.set_image_limit(next(r.run_id for r in st.runs() if r.endpoint == "cand"), 1)
    (joined,) = jn.load_joins([out])
    advice = an.analyse(joined, an.Settings(n_boot=0)).problems[1]
    assert "(the server accepts 1 image per request, they have up to" in advice
    assert f"""restart it with --limit-mm-per-prompt '{{"image": {most}}}'""" in advice


def test_missing_answers_are_an_infrastructure_failure(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    gone = {samples["mmmu_val"][3].id, samples["mmmu_val"][4].id}
    out = make_store(
        tmp_path / "runs", data, samples, {"ref": right, "cand": lambda s: None if s.id in gone else right(s)}
    )
    (joined,) = jn.load_joins([out])
    result = an.analyse(joined, an.Settings(n_boot=0))
    assert result.health_b.missing == 2 and result.health_b.failures == 0
    assert result.exit_code == an.EXIT_INFRA
    assert any("no answer for 2 of 116" in p for p in result.problems)


def test_request_hash_mismatch_is_excluded_and_reported(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    odd = samples["mme"][10].id
    a = make_store(tmp_path / "a", data, samples, {"ref": right})
    b = make_store(
        tmp_path / "b",
        data,
        samples,
        {"cand": right},
        hash_of=lambda s: "other" if s.id == odd else f"h:{s.task}:{s.id}",
    )
    (joined,) = jn.load_joins([a, b], reference="ref")
    assert joined.tasks[0].mismatched == (odd,)
    assert odd not in {p.sample.id for p in joined.tasks[0].pairs}
    result = an.analyse(joined, an.Settings(n_boot=0))
    assert result.tasks[0].n_pairs == 55
    assert result.exit_code == an.EXIT_INFRA
    assert "1 sample(s) were sent different requests" in result.problems[0]


def test_names_folders_and_plans(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    a = make_store(tmp_path / "A", data, samples, {"x": right})
    b = make_store(tmp_path / "B", data, samples, {"x": right, "y": right}, limit=20)
    refs = jn.discover([a, b])
    assert [r.label for r in refs] == ["A:x", "B:x", "y"]
    with pytest.raises(ConfigError, match="several run folders"):
        jn.resolve_name(refs, "x")
    with pytest.raises(ConfigError, match="no run named"):
        jn.resolve_name(refs, "z")
    assert jn.resolve_name(refs, f"{b}:x").directory == b
    ref, cands = jn.select(refs, "A:x", ["y", "B:x", "y"])
    assert ref.label == "A:x" and [c.label for c in cands] == ["y", "B:x"]
    ref, cands = jn.select(refs, None)
    assert ref.label == "A:x" and [c.label for c in cands] == ["B:x", "y"]
    with pytest.raises(ConfigError, match="nothing to compare"):
        jn.select(refs[:1], None)
    # a folder without a store, a store without runs
    with pytest.raises(DataError, match="holds no run store"):
        jn.discover([tmp_path])
    # B planned the first 20 samples (--limit 20): compared on those, the rest noted, not an error
    (joined,) = jn.load_joins([a, b], reference="A:x", candidates=["B:x"])
    t = joined.tasks[0]
    assert len(t.pairs) == 20 and len(t.only_reference) == 36 and t.only_candidate == ()
    result = an.analyse(joined, an.Settings(n_boot=0))
    assert result.problems == () and any("36 sample(s) only in A:x" in n for n in result.notes)
    # a run of MME only: MMMU is not compared, and said so
    c = make_store(tmp_path / "C", {"mme": data["mme"]}, samples, {"z": right})
    (joined,) = jn.load_joins([a, c], candidates=["z"])
    assert [t.task for t in joined.tasks] == ["mme"] and joined.unpaired_tasks == ("mmmu_val",)
    assert (
        "mmmu_val: evaluated by only one of the two runs"
        in an.analyse(joined, an.Settings(n_boot=0)).notes[0]
    )


def test_other_data_is_refused(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": right})
    with Store.open(out) as st:
        st.set_meta(
            "fingerprint:mme", {"of": "samples", "num_rows": 56, "content_sha256": "0" * 64, "source": "x"}
        )
    with pytest.raises(DataError, match="is not the data run ref evaluated") as err:
        jn.load_joins([out])
    assert err.value.exit_code == 3


def test_exit_codes_agree_with_the_cli() -> None:
    from vlmparity import cli
    from vlmparity.compare import verdict as v

    assert an.EXIT_INFRA == cli.EXIT_INFRA
    assert v.EXIT_CODES == {
        v.EQUIVALENT: cli.EXIT_OK,
        v.NOT_EQUIVALENT: cli.EXIT_NOT_EQUIVALENT,
        v.INCONCLUSIVE: cli.EXIT_INCONCLUSIVE,
    }


def test_policy_names_and_former_names() -> None:
    assert an.Settings(policy="strict").policy == an.Settings(policy="parity").policy == "strict"
    assert an.Settings().policy == an.Settings(policy="excluded").policy == "answered"


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="--policy"):
        an.Settings(policy="bogus")
    with pytest.raises(ConfigError, match="lmms-eval cannot decide"):
        an.Settings(policy="lmms-eval")
    # former names still work
    assert (an.Settings(policy="excluded").policy, an.Settings(policy="parity").policy) == (
        "answered",
        "strict",
    )
    with pytest.raises(ConfigError, match="max-error-rate"):
        an.Settings(max_error_rate=2.0)
    with pytest.raises(ConfigError, match="margin"):
        an.Settings(margin=0.0)


def _main(args: list[str]) -> int:
    from vlmparity.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_compare_json_report_and_usage_errors(
    tmp_path: Path,
    data: dict[str, Path],
    samples: dict[str, list[Sample]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = "<script>alert(1)</script>"
    hostile = samples["mme"][0].id
    out = make_store(
        tmp_path / "runs",
        data,
        samples,
        {"ref": right, "cand": lambda s: ("ok", script) if s.id == hostile else right(s)},
    )
    verdict_file = tmp_path / "v.json"
    code = _main(["compare", str(out), "--json", str(verdict_file), "--top", "1"])
    printed = capsys.readouterr().out
    doc = json.loads(verdict_file.read_text())
    assert code == doc["exit_code"] == doc["candidates"][0]["exit_code"]
    assert code in (1, 2)  # one regression in 116 cannot make these runs equivalent
    assert "VERDICT cand vs ref:" in printed and "regression" in printed
    assert doc["candidates"][0]["tasks"]["mme"]["disagreements"] == {"regression": 1}
    report = out / "report.html"
    assert report.is_file()
    html = report.read_text(encoding="utf-8")
    assert script not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    # --json -: stdout is the JSON alone, the tables go to stderr
    assert _main(["compare", str(out), "--json", "-", "--no-report"]) == code
    captured = capsys.readouterr()
    assert json.loads(captured.out)["exit_code"] == code and "VERDICT cand vs ref:" in captured.err

    # `report` regenerates it from the stores, elsewhere
    assert _main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()

    # usage errors: exit 4 with one line
    assert _main(["compare", str(out), "--limit", "5"]) == 4
    assert "used only when compare runs endpoints" in capsys.readouterr().err
    assert _main(["compare", str(out), "--policy", "nope"]) == 4
    assert _main(["compare"]) == 4
    assert (
        _main(["compare", "--endpoint", "a=http://127.0.0.1:9/v1", "--endpoint", "b=http://127.0.0.1:9/v1"])
        == 4
    )
    assert "--tasks" in capsys.readouterr().err
    assert _main(["compare", str(tmp_path / "nothing-here")]) == 3


def test_report_data_carries_every_backend_answer(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    flips = {samples["mme"][0].id, samples["mmmu_val"][0].id}
    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "b": flipper(flips), "c": right})
    joins = jn.load_joins([out])
    analyses = [an.analyse(j, an.Settings(n_boot=0)) for j in joins]
    rd = comparison.report_data(analyses, joins)
    assert [b.name for b in rd.backends] == ["ref", "b", "c"]
    assert {(d.task, d.sample_id) for d in rd.disagreements} == {
        (s.task, s.id) for ss in samples.values() for s in ss if s.id in flips
    }
    row = next(d for d in rd.disagreements if d.task == "mme")
    assert set(row.answers) == {"ref", "b", "c"}
    assert row.answers["ref"].correct is True and row.answers["b"].correct is False
    assert row.images and row.images[0].startswith("data:image/jpeg;base64,")
    # the runs were loaded without image bytes; the shown samples' images were read for the report
    assert all(not p.sample.images for t in joins[0].tasks for p in t.pairs)
    from vlmparity.report.model import thumbnail_data_url

    for d in rd.disagreements:
        full = next(s for s in samples[d.task] if s.id == d.sample_id)
        assert d.images == [thumbnail_data_url(im.data) for im in full.images]
    assert rd.tasks[0].breakdown is not None and set(rd.tasks[0].breakdown.values["artwork"]) == {
        "ref",
        "b",
        "c",
    }
    assert [c.candidate for c in rd.comparisons] == ["b", "c"]
    assert rd.verdict.exit_code == an.overall_exit_code(analyses)


def test_every_value_is_named_by_its_policy(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    """The verdict's paired value and the runs' own value of mmmu_acc differ (random letters drawn per sample
    vs lmms-eval's one sequence): each is shown with its name, in the terminal, verdict.json and the report."""
    from vlmparity.report.html import render_report
    from vlmparity.tasks.mmmu_parse import multi_choice_info

    mc = [s for s in samples["mmmu_val"] if s.fields["question_type"] == "multiple-choice"]

    def unsure(s: Sample) -> Reply:
        return ("ok", "I cannot tell from the image") if s in mc else right(s)

    out = make_store(tmp_path / "runs", data, samples, {"ref": unsure, "cand": unsure})
    (joined,) = jn.load_joins([out])
    result = an.analyse(joined, an.Settings(n_boot=0))
    mmmu = metric(next(t for t in result.tasks if t.task == "mmmu_val"), "mmmu_acc")
    # Independent replays: per sample, random.Random("0:<id>"); the run's own, one random.Random(0) in order.
    n = len(samples["mmmu_val"])
    paired = sum(
        1
        for s in samples["mmmu_val"]
        if s not in mc
        or random.Random(f"0:{s.id}").choice(multi_choice_info(list(s.fields["options"]))[1]) == s.target
    )
    rng = random.Random(0)
    own = sum(
        1
        for s in samples["mmmu_val"]
        if s not in mc or rng.choice(multi_choice_info(list(s.fields["options"]))[1]) == s.target
    )
    assert own != paired  # the two draws differ on this data: the point of the labels
    assert (mmmu.a_value, mmmu.b_value) == (pytest.approx(paired / n), pytest.approx(paired / n))
    # identical answers: 0 discordant, so the decision interval is the exact bound (not a bootstrap [0, 0])
    assert (mmmu.discordant_ab, mmmu.discordant_ba, mmmu.delta) == (0, 0, 0.0)
    assert mmmu.ci_high == pytest.approx(sps.beta.ppf(1 - mmmu.level, 1, n))

    text = terminal.render_terminal(result)
    assert "values: paired, policy answered" in text
    assert f"{100 * paired / n:.2f} %" in text  # one number format: "81.33 %"
    line = next(x for x in text.splitlines() if "|mmmu_acc" in x)
    assert f"[{-100 * mmmu.ci_high:+.2f}, {100 * mmmu.ci_high:+.2f}]" in line
    assert f"{100 * (1 - 2 * mmmu.level):.4g} %" in line
    assert "p Δ≠0" in text and "p |Δ|≥margin" in text and "McNemar exact" in text

    doc = comparison.json_document([result])
    rec = next(m for m in doc["candidates"][0]["metrics"] if m["metric"] == "mmmu_acc")
    assert (rec["values"], rec["policy"]) == ("paired", "answered")
    assert (rec["ci_low"], rec["ci_high"]) == (pytest.approx(mmmu.ci_low), pytest.approx(mmmu.ci_high))
    scores = doc["candidates"][0]["scores"]
    for endpoint in ("ref", "cand"):
        per_policy = scores[endpoint]["mmmu_val"]
        assert "answered" in per_policy and len(per_policy) >= 2
        for values in per_policy.values():  # no failure here: every policy gives lmms-eval's sequential value
            assert values["mmmu_acc"] == pytest.approx(own / n, abs=1e-5)

    page = render_report(comparison.report_data([result], [joined]))
    breakdown = page.split('id="breakdown"')[1].split("</section>")[0]
    own_cell = f'<td class="num">{100 * own / n:.2f} %</td>'
    paired_cell = f'<td class="num">{100 * paired / n:.2f} %</td>'
    assert f"<code>mmmu_acc</code></td><td>answered</td>{own_cell}{own_cell}" in breakdown
    assert (
        f"<code>mmmu_acc</code></td><td>paired, answered (verdict vs cand)</td>{paired_cell}{paired_cell}"
        in breakdown
    )
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert paired_cell in summary and own_cell not in summary


def test_run_tables_use_the_one_number_format(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    """`vlmparity run`'s policies table and `compare`'s table print an accuracy the same way ("83.93 %")."""
    from vlmparity.report import run_summary

    flips = {samples["mmmu_val"][0].id, samples["mmmu_val"][1].id}
    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": flipper(flips)})
    (joined,) = jn.load_joins([out])
    table = run_summary.policies_table(list(joined.candidate.scores.values()))
    n = len(samples["mmmu_val"])
    expected = f"{100 * (n - 2) / n:.2f} %"
    row = next(line for line in table.splitlines() if "mmmu_acc" in line)
    assert expected in row
    assert not re.search(r"\b0\.\d{4}\b", table)  # no bare fractions
    text = terminal.render_terminal(an.analyse(joined, an.Settings(n_boot=0)))
    assert expected in next(line for line in text.splitlines() if "|mmmu_acc" in line)


def test_more_samples_are_counted_against_the_data_set(
    tmp_path: Path, data: dict[str, Path], samples: dict[str, list[Sample]]
) -> None:
    """A --limit run of identical answers: each metric knows how many questions of its kind the data set
    holds, and an inconclusive one asks for at most what remains (in the task's samples)."""
    from vlmparity.tasks.mme import metric_for

    out = make_store(tmp_path / "runs", data, samples, {"ref": right, "cand": right}, limit=20)
    (joined,) = jn.load_joins([out])
    result = an.analyse(joined, an.Settings(n_boot=0))
    mme, mmmu = samples["mme"], samples["mmmu_val"]
    perception = sum(1 for s in mme if metric_for(s.group) == "mme_perception_score")
    expected = {
        "mme_acc": len(mme),
        "mme_perception_score": perception,
        "mme_cognition_score": len(mme) - perception,
        "mmmu_acc": len(mmmu),
    }
    for t in result.tasks:
        total = len(samples[t.task])
        for r in t.metrics:
            assert r.available == expected[r.metric], r.metric
            assert r.task_per_metric == pytest.approx(total / expected[r.metric])
            assert r.verdict == "inconclusive"  # 20 identical answers certify about +-15 pp only
            # the metric's own share of what is left, scaled to task samples, never more than the task has left
            share = int((expected[r.metric] - r.n) * total / expected[r.metric] + 1e-9)
            assert r.remaining == min(share, total - t.n_pairs)
            if r.n_more is not None:
                assert r.n_more <= r.remaining
            else:
                assert r.full_margin is not None and "out of reach" in metric_label(r)
    mmmu_acc = metric(next(t for t in result.tasks if t.task == "mmmu_val"), "mmmu_acc")
    assert mmmu_acc.remaining == len(mmmu) - 20
