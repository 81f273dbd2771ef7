"""One run: plan → build requests → dispatch to every endpoint → persist → score.

`prepare` loads each task's data and sampling plan (`runner.plan`). `run` (`runner.orchestrate`) checks
everything local, resolves and checks the endpoints (`runner.startup`), builds each sample's request once
(`runner.requests`: images encoded once per run, shared by every endpoint, so every endpoint is sent the
same bytes apart from `model`), dispatches to all endpoints concurrently and commits each answer to the
run store as it arrives (`runner.engine`); a rerun sends only what is missing. `score_endpoint`
(`runner.scoring`) is the pure part: it reads the store and scores every task under the three scoring
policies (`lmms-eval`: a failure is scored from the text lmms-eval would have recorded for it; `strict`: a
failure is a wrong answer; `answered`: failures left out), with outcome counts and intervals. The run
writes no file besides the store: its caller supplies the writers (`RunOutputs`).
"""

from vlmparity.runner.engine import PREFETCH_SAMPLES, WRITER_GRACE_S, EndpointRun, Engine, Gate, SessionStats
from vlmparity.runner.orchestrate import RunOutcome, run
from vlmparity.runner.outputs import RunOutputs, RunState, default_stamp
from vlmparity.runner.plan import TaskPlan, load_images, plan_spec, prepare, prepare_task
from vlmparity.runner.progress import Counters, NullProgress, ProgressSink
from vlmparity.runner.requests import Built, RequestBook, build_one, merge_prompt, treatment_for
from vlmparity.runner.scoring import (
    MISSING,
    N_BOOT,
    PAIRED_FALLBACK,
    POLICIES,
    POLICY_ANSWERED,
    POLICY_EXCLUDED,
    POLICY_LABELS,
    POLICY_LMMS_EVAL,
    POLICY_PARITY,
    POLICY_STRICT,
    Bounds,
    PolicyScore,
    TaskScore,
    answer_for,
    score_endpoint,
    score_task,
    scoring_settings,
)
from vlmparity.runner.startup import (
    LOGPROBS_META,
    decide_logprobs,
    endpoint_identity,
    identity_changes,
    identity_error,
    probe_image_limit,
    probe_limits,
    public_url,
    resolve_all,
)

__all__ = [
    "LOGPROBS_META",
    "MISSING",
    "N_BOOT",
    "PAIRED_FALLBACK",
    "POLICIES",
    "POLICY_ANSWERED",
    "POLICY_EXCLUDED",
    "POLICY_LABELS",
    "POLICY_LMMS_EVAL",
    "POLICY_PARITY",
    "POLICY_STRICT",
    "PREFETCH_SAMPLES",
    "WRITER_GRACE_S",
    "Bounds",
    "Built",
    "Counters",
    "EndpointRun",
    "Engine",
    "Gate",
    "NullProgress",
    "PolicyScore",
    "ProgressSink",
    "RequestBook",
    "RunOutcome",
    "RunOutputs",
    "RunState",
    "SessionStats",
    "TaskPlan",
    "TaskScore",
    "answer_for",
    "build_one",
    "decide_logprobs",
    "default_stamp",
    "endpoint_identity",
    "identity_changes",
    "identity_error",
    "load_images",
    "merge_prompt",
    "plan_spec",
    "prepare",
    "prepare_task",
    "probe_image_limit",
    "probe_limits",
    "public_url",
    "resolve_all",
    "run",
    "score_endpoint",
    "score_task",
    "scoring_settings",
    "treatment_for",
]
