#!/usr/bin/env bash
# Installs what weft's tests need on Debian 12: system packages (apt) and the Python test
# clients (a virtual environment in .venv). Safe to run again; skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# PoCL (OpenCL on the CPU) and the ICD loader run the OpenCL tests; clang checks that the
# kernels' portable path compiles for a SPIR target; the Fashion-MNIST set is the real data.
APT_PACKAGES=(python3-venv python3-pip pkg-config pocl-opencl-icd ocl-icd-libopencl1 ocl-icd-opencl-dev clinfo clang dataset-fashion-mnist)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
  echo "$want" > "$stamp"
fi
