#!/usr/bin/env bash
# weft's whole test suite: installs what it needs, then the Rust tests and the end-to-end
# tests against real third-party tools (onnxruntime, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dependency licences, duplicate bans and sources (advisories need GitHub: see deny.toml)
cargo deny --log-level error check licenses bans sources
cargo build --release -q -p weft-cli
# The OpenCL tests run on every device found: PoCL, and Oclgrind with its API checks on
# (its out-of-bounds checks are always on); whatever Oclgrind reports goes to this log, and
# the tests fail on any line in it. (Its uninitialized-value checker is off: in Oclgrind
# 21.10 it misreports and crashes, see kernels/README.md; weft's own poisoned-buffer runs
# cover reads of unwritten memory instead.)
export OCLGRIND_LOG="$PWD/target/oclgrind.log" OCLGRIND_CHECK_API=1
rm -f "$OCLGRIND_LOG"
cargo test --workspace -q
if [ -s "$OCLGRIND_LOG" ]; then
  echo "Oclgrind reported:" >&2
  cat "$OCLGRIND_LOG" >&2
  exit 1
fi
unset OCLGRIND_LOG OCLGRIND_CHECK_API
# The fuzz targets (a workspace member, built on stable Rust: libFuzzer without
# sanitizers) replay their seed corpora and any saved regressions; a crash fails the run.
cargo build -q -p weft-fuzz --bins
for corpus in crates/fuzz/seeds/*/ crates/fuzz/regressions/*/; do
  [ -d "$corpus" ] || continue
  target/debug/"$(basename "$corpus")" -runs=0 "$corpus" 2>&1 | tail -n 1
done
export PERF_ANALYZER="$PWD/.venv-perf/bin/perf_analyzer"
cudart=$(ls -d "$PWD"/.venv-perf/lib/python3*/site-packages/nvidia/cuda_runtime/lib 2>/dev/null | head -n1)
export LD_LIBRARY_PATH="${cudart}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WEFT_BIN="$PWD/target/release/weft" .venv/bin/python -m pytest -q tests
