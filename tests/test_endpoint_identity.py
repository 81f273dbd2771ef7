"""Issue 11 item 8 and issue 10's "rerun after a fix": each endpoint's server identity (backend kind,
version, served model, base URL) is stored with its answers; resuming under the same name against another
server stops (exit 4) unless continued on purpose; a server restarted with another image limit has the
questions it refused for their images sent again without --rerun-errors.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from vlmparity import runner
from vlmparity.config import RunConfig, RunOptions, SamplingPlan, parse_endpoints
from vlmparity.errors import ConfigError
from vlmparity.report.run_summary import run_outputs
from vlmparity.sim import SimConfig, SimServer
from vlmparity.store import Store

FAST = {"capacity": 8, "base_latency": 0.002, "per_image": 0.0, "per_token": 0.0}


@pytest.fixture(scope="module")
def mmmu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmparity.synth import write_mmmu

    return write_mmmu(tmp_path_factory.mktemp("identity") / "mmmu", n=40, seed=3, workers=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sim(mmmu: Path, **cfg: Any) -> SimServer:
    return SimServer(SimConfig(personality="vllm", data=[mmmu], load=FAST, **cfg))


def _config(mmmu: Path, url: str, out: Path, **options: Any) -> RunConfig:
    return RunConfig(
        endpoints=parse_endpoints([f"ep={url}"]),
        tasks=("mmmu_val",),
        data={"mmmu_val": str(mmmu)},
        plan=SamplingPlan(),
        options=RunOptions(output_path=out, **options),
    )


def _outcomes(out: Path) -> dict[str, str]:
    with Store.open(out, create=False) as st:
        run = st.get_run("ep")
        assert run is not None
        return {sid: rec.outcome for (_, sid), rec in st.results(run.run_id).items()}


def test_identity_is_stored_and_another_server_stops_the_resume(mmmu: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with _sim(mmmu, vllm_version="0.11.0", image_limit=1) as first:
        runner.run(_config(mmmu, first.url, out), outputs=run_outputs())
        first_url = first.url
    with Store.open(out, create=False) as st:
        run = st.get_run("ep")
        assert run is not None
        assert (run.kind, run.server_version, run.url) == ("vllm", "0.11.0", first_url)
        assert run.model == "llava-hf/llava-1.5-7b-hf"
    before = _outcomes(out)
    with _sim(mmmu, vllm_version="0.10.0", image_limit=1) as other:
        with pytest.raises(ConfigError) as err:
            runner.run(_config(mmmu, other.url, out), outputs=run_outputs())
        line = err.value.one_line()
        assert "endpoint 'ep' was run against another server" in line
        assert "version 0.11.0 -> 0.10.0" in line and f"URL {first_url} -> {other.url}" in line
        assert "--output-path" in line and "--allow-identity-change" in line
        assert err.value.exit_code == 4
        assert not [e for e in other.chat_log if e.image_count], "nothing may be sent to the other server"
        assert _outcomes(out) == before  # nothing lost or changed
        # continued on purpose: the failures are asked of the new server again, the answers kept
        other.clear_log()
        runner.run(_config(mmmu, other.url, out, allow_identity_change=True), outputs=run_outputs())
        refused = [k for k, o in before.items() if o != "ok"]
        assert refused, "the image limit must have refused some questions"
        assert len([e for e in other.chat_log if e.image_count]) == len(refused)
    with Store.open(out, create=False) as st:
        run = st.get_run("ep")
        assert run is not None and run.server_version == "0.10.0"


def test_another_served_model_cannot_be_continued(mmmu: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with _sim(mmmu) as first:
        runner.run(_config(mmmu, first.url, out, multi_image="skip", max_images=1), outputs=run_outputs())
    with _sim(mmmu, model="other/model") as other:
        for allow in (False, True):
            with pytest.raises(ConfigError) as err:
                runner.run(
                    _config(
                        mmmu, other.url, out, multi_image="skip", max_images=1, allow_identity_change=allow
                    ),
                    outputs=run_outputs(),
                )
            assert "served model llava-hf/llava-1.5-7b-hf -> other/model" in err.value.one_line()


def test_a_server_restarted_with_a_higher_image_limit_gets_its_refusals_again(
    mmmu: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    port = _free_port()
    with _sim(mmmu, port=port, image_limit=1) as limited:
        runner.run(_config(mmmu, limited.url, out), outputs=run_outputs())
    refused = {k for k, o in _outcomes(out).items() if o == "unsupported"}
    assert refused
    with Store.open(out, create=False) as st:
        run = st.get_run("ep")
        assert run is not None and run.image_limit == 1
    # the same server, same limit: resuming sends nothing (one probe request aside)
    with _sim(mmmu, port=port, image_limit=1) as same:
        runner.run(_config(mmmu, same.url, out), outputs=run_outputs())
        assert [e.sample_id for e in same.chat_log if e.sample_id] == []
    # restarted with a higher limit: the refusals are sent again without --rerun-errors
    with _sim(mmmu, port=port, image_limit=None) as fixed:
        outcome = runner.run(_config(mmmu, fixed.url, out), outputs=run_outputs())
        resent = {e.sample_id for e in fixed.chat_log if e.sample_id}
    assert resent == refused
    assert set(_outcomes(out).values()) == {"ok"}
    assert outcome.scores["ep"][0].outcomes == {"ok": 40}


def _multi(mmmu: Path) -> dict[str, int]:
    """MMMU sample id -> image count, for the questions with more than one image (from the data)."""
    from vlmparity.data.sources import load_rows
    from vlmparity.tasks.base import get_task

    task = get_task("mmmu_val")
    samples = task.samples_from_rows(load_rows(mmmu, split="validation"))
    return {s.id: s.image_count for s in samples if s.image_count > 1}


def test_skip_uses_the_start_up_probe_and_max_images_wins(mmmu: Path, tmp_path: Path) -> None:
    multi = _multi(mmmu)
    assert multi and max(multi.values()) > 2 and 2 in multi.values()
    with _sim(mmmu, image_limit=1) as sim:
        # no --max-images: one probe before any question finds the limit; no multi-image question is sent
        outcome = runner.run(
            _config(mmmu, sim.url, tmp_path / "probe", multi_image="skip"), outputs=run_outputs()
        )
        probes = [e for e in sim.chat_log if e.image_count > 1]
        assert len(probes) == 1 and probes[0].sample_id is None and probes[0].status == 400
        assert outcome.endpoints[0].limit == 1
        assert outcome.scores["ep"][0].skipped == len(multi)
        # --max-images 2 wins over the probe (and nothing is probed): 2-image questions are sent whole
        # (the server refuses them: that is their outcome), the others skipped
        sim.clear_log()
        outcome = runner.run(
            _config(mmmu, sim.url, tmp_path / "max", multi_image="skip", max_images=2), outputs=run_outputs()
        )
        sent = [e for e in sim.chat_log if e.image_count > 1]
        assert sorted(e.image_count for e in sent) == sorted(n for n in multi.values() if n == 2)
        ts = outcome.scores["ep"][0]
        assert ts.skipped == sum(1 for n in multi.values() if n > 2)
        assert ts.outcomes.get("unsupported", 0) == len(sent)


def test_a_not_sent_record_of_an_older_vlmparity_is_sent(mmmu: Path, tmp_path: Path) -> None:
    """Older versions recorded questions over a limit learned mid-run as `unsupported` without sending
    them (attempts 0): they were never asked, so a rerun asks them."""
    import sqlite3

    from vlmparity.store import store_path

    out = tmp_path / "out"
    with _sim(mmmu, image_limit=None) as sim:
        runner.run(_config(mmmu, sim.url, out), outputs=run_outputs())
        sid = next(iter(_multi(mmmu)))
        with sqlite3.connect(store_path(out)) as conn:
            conn.execute(
                "UPDATE results SET outcome = 'unsupported', text = NULL, status = NULL, attempts = 0, "
                "server_message = 'not sent: 3 images, limit 1' WHERE sample_id = ?",
                (sid,),
            )
        sim.clear_log()
        runner.run(_config(mmmu, sim.url, out), outputs=run_outputs())
        assert [e.sample_id for e in sim.chat_log if e.sample_id] == [sid]
    assert _outcomes(out)[sid] == "ok"
