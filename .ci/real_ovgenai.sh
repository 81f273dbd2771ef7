#!/usr/bin/env bash
# OpenVINO GenAI (the engine inside OVMS) behind an OVMS-like front end, serving the same tiny random LLaVA as
# the real vLLM of .ci/real_vllm.sh, for the cross-engine tests (tests/realengine/test_real_cross_engine.py).
#
#   bash .ci/real_ovgenai.sh install   # separate venv: torch 2.13.0, torchvision 0.28.0, openvino-genai, optimum-intel
#   bash .ci/real_ovgenai.sh build     # exports the tiny model (built by real_vllm.sh build) to OpenVINO IR (cached)
#   bash .ci/real_ovgenai.sh start     # two servers (f32 and OpenVINO's default precision); prints the export line
#   bash .ci/real_ovgenai.sh stop      # stops both by the PIDs in their state files
#   bash .ci/real_ovgenai.sh up        # install + build + start
#   bash .ci/real_ovgenai.sh test [PYTEST ARGS]  # vLLM and both OpenVINO servers up, cross-engine tests, stop all
#
# Only the `export ...` line goes to stdout (`eval "$(bash .ci/real_ovgenai.sh start)"` works); step timings,
# pip output and log tails go to stderr. The server is tests/realengine/ovgenai_server.py, run with this venv's
# python (it does not import vlmparity). Why each pin and fix: ../shared/research/openvino-genai.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VLMPARITY_CI_CACHE:-${HOME:-/tmp}/.cache/vlmparity-ci}
VENV=${VLMPARITY_OVGENAI_VENV:-$CACHE/venv-ovgenai}
TINY=${VLMPARITY_TINY_LLAVA:-$CACHE/tiny-llava}         # the HF folder real_vllm.sh builds
OV_MODEL=${VLMPARITY_OVGENAI_MODEL_DIR:-$CACHE/tiny-llava-ov}
SERVED_NAME=${VLMPARITY_OVGENAI_MODEL_NAME:-tiny-llava}
READY_TIMEOUT=${VLMPARITY_OVGENAI_READY_TIMEOUT:-180}
ARTIFACT=${VLMPARITY_CROSS_ENGINE_JSON:-$CACHE/cross-engine.json}  # the measured cross-engine figures
BASE_PYTHON=${VLMPARITY_OVGENAI_BASE_PYTHON:-python3}
NICE=${VLMPARITY_CI_NICE:-nice -n 10}                 # pip and the export share the machine with other jobs

PINS="torch==2.13.0 torchvision==0.28.0 openvino==2026.4.1 openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0 optimum-intel==2.2.0 optimum==2.3.0 nncf==3.4.0 transformers==5.5.4"
STAMP="$PINS fixes-v1"

log() { printf '[real_ovgenai] %s\n' "$*" >&2; }

timed() {
  local name=$1 t0 ms rc=0
  shift
  t0=$(date +%s%N)
  "$@" || rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  log "$(printf '%s: %d.%01d s (exit %d)' "$name" $((ms / 1000)) $((ms % 1000 / 100)) "$rc")"
  return "$rc"
}

venv_works() {
  [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.vlmparity-stamp" 2>/dev/null)" = "$STAMP" ] &&
    "$VENV/bin/python" -c "import torchvision, openvino_genai, optimum.intel" >/dev/null 2>&1
}

create_venv() {
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PYTHON" -m venv "$VENV"
}

# Without the torchvision pin pip picks torchvision 0.29.1, which pulls a CUDA torch 2.14 (6 GB).
# shellcheck disable=SC2086
pip_all() { $NICE "$VENV/bin/pip" install -q --no-cache-dir $PINS >&2; }

apply_fixes() {
  # torchvision's _C.so is PyPI's CUDA build: guard its unconditional fake-op registrations (as real_vllm.sh).
  local tv
  tv=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchvision").origin))')
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
    "$tv/_meta_registrations.py"
}

assert_imports() {
  "$VENV/bin/pip" check >&2
  "$VENV/bin/python" -c "import torchvision, openvino, openvino_genai, optimum.intel; print('openvino', openvino.__version__, 'openvino_genai', openvino_genai.__version__)" >&2
}

cmd_install() {
  if venv_works; then
    log "venv $VENV already works: reused"
    return 0
  fi
  log "creating the OpenVINO GenAI venv at $VENV"
  timed "venv" create_venv
  timed "pip install (pinned)" pip_all
  timed "fix (torchvision guard)" apply_fixes
  timed "pip check, imports" assert_imports
  echo "$STAMP" >"$VENV/.vlmparity-stamp"
  log "venv size: $(du -sh "$VENV" | cut -f1)"
}

export_stamp() {
  { echo "$STAMP"; cat "$TINY/.vlmparity-build-stamp" 2>/dev/null; } | sha256sum | cut -c1-16
}

export_model() {
  local tmp="$OV_MODEL.tmp.$$"
  rm -rf "$tmp"
  HF_HUB_OFFLINE=1 $NICE "$VENV/bin/optimum-cli" export openvino --model "$TINY" \
    --task image-text-to-text --weight-format fp32 "$tmp" >&2
  [ -f "$tmp/openvino_language_model.xml" ] && [ -f "$tmp/openvino_detokenizer.xml" ] ||
    { log "the export wrote no language model or detokenizer IR into $tmp"; return 3; }
  export_stamp >"$tmp/.vlmparity-export-stamp"
  rm -rf "$OV_MODEL"
  mv "$tmp" "$OV_MODEL"
}

cmd_build() {
  if [ ! -f "$TINY/.vlmparity-build-stamp" ]; then
    log "no tiny model at $TINY: building it with the vLLM venv (.ci/real_vllm.sh build)"
    bash "$REPO/.ci/real_vllm.sh" build
  fi
  if [ "$(cat "$OV_MODEL/.vlmparity-export-stamp" 2>/dev/null)" = "$(export_stamp)" ]; then
    log "OpenVINO export $OV_MODEL is up to date: reused"
    return 0
  fi
  [ -x "$VENV/bin/optimum-cli" ] || { log "no OpenVINO venv at $VENV: run '$0 install' first"; return 3; }
  timed "export to OpenVINO IR (fp32 weights)" export_model
}

# Two servers from the same export: OpenVINO's defaults, and f32 inference with an f32 KV cache.
PRECISIONS="f32 default"

free_port() { "$BASE_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_one() {
  local precision=$1 port pid deadline
  port=${VLMPARITY_OVGENAI_PORT_BASE:+$((VLMPARITY_OVGENAI_PORT_BASE + $([ "$precision" = f32 ] && echo 0 || echo 1)))}
  port=${port:-$(free_port)}
  # setsid: the server leads its own process group, so stop can end it and anything it started.
  setsid "$VENV/bin/python" "$REPO/tests/realengine/ovgenai_server.py" --model-dir "$OV_MODEL" \
    --served-model-name "$SERVED_NAME" --host 127.0.0.1 --port "$port" --precision "$precision" \
    --prompt-tokens engine >"$CACHE/ovgenai-$precision.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid $port" >"$CACHE/ovgenai-$precision.state"
  deadline=$(($(date +%s) + READY_TIMEOUT))
  until "$BASE_PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$port/v2/health/ready" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      log "the $precision server did not become ready; last lines of $CACHE/ovgenai-$precision.log:"
      tail -n 30 "$CACHE/ovgenai-$precision.log" >&2 || true
      return 3
    fi
    sleep 0.5
  done
}

cmd_start() {
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/python" ] || { log "no OpenVINO venv at $VENV: run '$0 install' first"; return 3; }
  [ -f "$OV_MODEL/openvino_language_model.xml" ] || { log "no export at $OV_MODEL: run '$0 build' first"; return 3; }
  local precision line=""
  for precision in $PRECISIONS; do
    if ! timed "OpenVINO GenAI server ($precision) start until ready" start_one "$precision"; then
      cmd_stop || true
      return 3
    fi
  done
  local f32_port default_port
  f32_port=$(cut -d' ' -f2 "$CACHE/ovgenai-f32.state")
  default_port=$(cut -d' ' -f2 "$CACHE/ovgenai-default.state")
  log "$(head -n 1 "$CACHE/ovgenai-default.log")"
  line="export VLMPARITY_OVGENAI_URL=http://127.0.0.1:$f32_port/v3 VLMPARITY_OVGENAI_DEFAULT_URL=http://127.0.0.1:$default_port/v3"
  echo "$line"
}

cmd_stop() {
  local precision pid
  for precision in $PRECISIONS; do
    [ -f "$CACHE/ovgenai-$precision.state" ] || continue
    pid=$(cut -d' ' -f1 "$CACHE/ovgenai-$precision.state")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      log "stopped the $precision server (pid $pid)"
    fi
    rm -f "$CACHE/ovgenai-$precision.state"
  done
}

cmd_up() {
  cmd_install
  cmd_build
  cmd_start
}

# Everything under tests/realengine (the vLLM-only tests and the cross-engine ones) with one vLLM start.
run_tests() {
  VLMPARITY_VLLM_URL=$(cat "$CACHE/vllm-url") VLMPARITY_VLLM_MODEL=$SERVED_NAME \
    VLMPARITY_OVGENAI_URL=$OV_URL VLMPARITY_OVGENAI_DEFAULT_URL=$OV_DEFAULT_URL \
    VLMPARITY_OVGENAI_MODEL=$SERVED_NAME VLMPARITY_TINY_LLAVA=$TINY VLMPARITY_CROSS_ENGINE_JSON=$ARTIFACT \
    "${VLMPARITY_PYTHON:-python3}" -m pytest -m realengine "$REPO/tests/realengine" "$@"
}

# The artifact's headline figures, one line each (the whole JSON stays in the file).
summarize() {
  "$BASE_PYTHON" - "$ARTIFACT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("  CPU BF16 flags:", " ".join(d.get("cpu_bf16_flags") or []) or "none")
for name, c in (d.get("compare") or {}).items():
    agree = ", ".join(f"{t} raw {a['raw_same']}/{a['n']} parsed {a['parsed_rate']}" for t, a in c["agreement"].items())
    print(f"  vllm vs {name}: {c['label']}; answers agree: {agree}")
for name, p in (d.get("prompt_tokens") or {}).items():
    print(f"  prompt tokens {name} - vllm: {p['difference_vs_vllm']} (the BOS accounts for {p['explained_by_bos']})")
for pair, t in (d.get("tokens") or {}).items():
    print(f"  tokens {pair}: {t['tokens_same']}/{t['tokens']} same, {t['requests_identical']}/{t['requests']} requests identical, "
          f"max |dlogprob| {t['max_abs_logprob_delta_common_prefix']:.2g}")
for name, c in (d.get("closeness") or {}).items():
    o = c["overall"]
    causes = "; ".join(f"{x['cause']} ({x['evidence']})" for x in c["causes"]) or "none"
    print(f"  closeness vllm vs {name} (vlmparity compare): {c['statement']}; tokens agree {o['token_agreement']}, "
          f"|dlogprob| median {o['median']} p95 {o['p95']} max {o['max']}; cause: {causes}")
if "default_precision" in d:
    print("  default precision:", json.dumps(d["default_precision"].get("answers_differing_from", d["default_precision"])))
PY
}

cmd_test() {
  local t0 rc=0 line
  t0=$(date +%s)
  trap 'cmd_stop || true; bash "$REPO/.ci/real_vllm.sh" stop || true' EXIT
  timed "vLLM: install, build the tiny model" bash -c "bash '$REPO/.ci/real_vllm.sh' install && bash '$REPO/.ci/real_vllm.sh' build"
  timed "OpenVINO GenAI: install, export" bash -c "bash '$0' install && bash '$0' build"
  bash "$REPO/.ci/real_vllm.sh" start >/dev/null
  line=$(cmd_start)
  OV_URL=$(sed -E 's/.*VLMPARITY_OVGENAI_URL=([^ ]+).*/\1/' <<<"$line")
  OV_DEFAULT_URL=$(sed -E 's/.*VLMPARITY_OVGENAI_DEFAULT_URL=([^ ]+).*/\1/' <<<"$line")
  rm -f "$ARTIFACT"
  timed "real-engine tests (vLLM alone, and vLLM against OpenVINO GenAI)" run_tests "$@" || rc=$?
  if [ -f "$ARTIFACT" ]; then
    log "cross-engine figures ($ARTIFACT):"
    summarize >&2 || cat "$ARTIFACT" >&2
  fi
  cmd_stop || true
  bash "$REPO/.ci/real_vllm.sh" stop || true
  trap - EXIT
  log "total: $(($(date +%s) - t0)) s"
  return "$rc"
}

case "${1:-}" in
  install) cmd_install ;;
  build) cmd_build ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  up) cmd_up ;;
  test)
    shift
    cmd_test "$@"
    ;;
  *)
    echo "usage: $0 install|build|start|stop|up|test [pytest args]" >&2
    exit 4
    ;;
esac
