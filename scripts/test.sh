#!/usr/bin/env bash
# weft's whole test suite: installs what it needs, then the Rust tests and the end-to-end
# tests against real third-party tools (onnxruntime, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dependency licences, duplicate bans and sources (advisories need GitHub: see deny.toml)
cargo deny --log-level error check licenses bans sources
cargo build --release -q -p weft-cli
cargo test --workspace -q
export PERF_ANALYZER="$PWD/.venv-perf/bin/perf_analyzer"
cudart=$(ls -d "$PWD"/.venv-perf/lib/python3*/site-packages/nvidia/cuda_runtime/lib 2>/dev/null | head -n1)
export LD_LIBRARY_PATH="${cudart}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WEFT_BIN="$PWD/target/release/weft" .venv/bin/python -m pytest -q tests
