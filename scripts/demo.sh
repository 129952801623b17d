#!/usr/bin/env bash
# The main job: builds weft, starts `weft serve` on the embedded default model (weft's
# int8 Fashion-MNIST featurizer and classifier) and makes one demo call: a real test image
# sent over gRPC, answered with class probabilities. The server keeps running in the
# foreground afterwards (Ctrl-C stops it) unless WEFT_DEMO_EXIT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building weft (cargo build --release; the first build takes a few minutes)" >&2
cargo build --release -p weft-cli
weft=target/release/weft
port=${WEFT_PORT:-50051}
http=${WEFT_HTTP_PORT:-8080}
echo "starting weft serve on the embedded default model (a first start compiles the OpenCL kernels)" >&2
$weft serve --port "$port" --http-port "$http" --quiet &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
$weft client --url "127.0.0.1:$port" --image models/fashion/samples/13_dress.png
if [ "${WEFT_DEMO_EXIT:-0}" = "1" ]; then
  exit 0
fi
echo "weft serve is running on gRPC port $port and HTTP port $http (Ctrl-C stops it)"
wait $server
