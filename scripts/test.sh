#!/usr/bin/env bash
# weft's whole test suite: installs what it needs, then the Rust tests and the end-to-end
# tests against real third-party tools (onnxruntime, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p weft-cli
cargo test --workspace -q
WEFT_BIN="$PWD/target/release/weft" .venv/bin/python -m pytest -q tests
