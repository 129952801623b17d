#!/usr/bin/env bash
# Start-up and serving costs for the int8 zoo ResNet-50 (the performance issue's item 4):
# `weft compile` time, `weft serve` time to ready with a cold and a warm program cache, and
# perf_analyzer at concurrency 1 and 8 against `weft bench` at batch 1 and 8.
#
#   bash bench/startup.sh [WORK_DIR]      (needs perf_analyzer: PERF_ANALYZER=path, else .venv-perf)
set -euo pipefail
cd "$(dirname "$0")/.."
WEFT=${WEFT:-$PWD/target/release/weft}
WORK=${1:-$PWD/target/startup}
PA=${PERF_ANALYZER:-$PWD/.venv-perf/bin/perf_analyzer}
mkdir -p "$WORK"
cudart=$(ls -d "$(dirname "$PA")"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib 2>/dev/null | head -n1 || true)
export LD_LIBRARY_PATH="${cudart}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

[ -f "$WORK/r50.onnx" ] || "$WEFT" zoo resnet50 -o "$WORK/r50.onnx" >/dev/null
PY=${PYTHON:-$PWD/.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c 'import sys, numpy as np; np.save(sys.argv[1], np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32))' "$WORK/calib.npy"
start=$(date +%s.%N)
"$WEFT" compile "$WORK/r50.onnx" --calib "$WORK/calib.npy" -o "$WORK/r50.weft" >/dev/null 2>&1
echo "weft compile (ResNet-50, int8, 8 calibration images): $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s"

ready_time() { # CACHE_DIR POCL_CACHE -> seconds until /readyz answers 200
  local port http start pid
  port=$((20000 + RANDOM % 20000)); http=$((port + 1))
  start=$(date +%s.%N)
  WEFT_CACHE_DIR=$1 POCL_CACHE_DIR=$2 "$WEFT" serve "$WORK/r50.weft" --host 127.0.0.1 --port $port --http-port $http --quiet \
    >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do sleep 0.05; done
  awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}"
  kill -TERM $pid; wait $pid || true
}
cold=$(mktemp -d); pcold=$(mktemp -d)
echo "weft serve to ready, cold program and PoCL caches: $(ready_time "$cold" "$pcold") s"
echo "weft serve to ready, warm caches: $(ready_time "$cold" "$pcold") s"
rm -rf "$cold" "$pcold"

"$WEFT" bench "$WORK/r50.weft" --batch 1 --iterations 20
"$WEFT" bench "$WORK/r50.weft" --batch 8 --iterations 5

port=$((20000 + RANDOM % 20000)); http=$((port + 1))
"$WEFT" serve "$WORK/r50.weft" --host 127.0.0.1 --port $port --http-port $http --max-batch 8 --quiet >/dev/null 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do sleep 0.1; done
"$PA" -m r50 -u 127.0.0.1:$port -i grpc --concurrency-range 1:8:7 --measurement-interval 5000 2>&1 \
  | grep -E "Concurrency:|Avg latency|p50 latency|p99 latency|Throughput" || true
kill -TERM $pid; wait $pid || true
