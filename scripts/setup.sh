#!/usr/bin/env bash
# Installs what weft's tests need on Debian 12: system packages (apt) and the Python test
# clients (a virtual environment in .venv). Safe to run again; skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# PoCL (OpenCL on the CPU) and the ICD loader run the OpenCL tests; clang checks that the
# kernels' portable path compiles for a SPIR target; the Fashion-MNIST set is the real data;
# debootstrap builds image base layers, skopeo and podman (with runc) check and run images;
# Oclgrind (a strict OpenCL 1.2 simulator) is the second OpenCL implementation the kernel
# tests run on.
APT_PACKAGES=(python3-venv python3-pip pkg-config pocl-opencl-icd ocl-icd-libopencl1 ocl-icd-opencl-dev clinfo clang dataset-fashion-mnist libb64-0d openssl curl
  debootstrap podman runc skopeo binutils oclgrind)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Oclgrind's package installs its ICD library but registers no vendor file: name it here so
# the ICD loader lists it beside PoCL.
OCLGRIND_ICD=/etc/OpenCL/vendors/oclgrind.icd
if [ ! -f "$OCLGRIND_ICD" ]; then
  lib=$(dpkg -L oclgrind | grep 'liboclgrind-rt-icd\.so$' | head -n1)
  [ -n "$lib" ] || { echo "oclgrind's liboclgrind-rt-icd.so not found" >&2; exit 1; }
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "$lib" | $SUDO tee "$OCLGRIND_ICD" >/dev/null
fi

# podman runs containers here only with runc and the cgroupfs manager (no systemd).
PODMAN_CONF=/etc/containers/containers.conf.d/50-weft.conf
if [ ! -f "$PODMAN_CONF" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO mkdir -p "$(dirname "$PODMAN_CONF")"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' | $SUDO tee "$PODMAN_CONF" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

# cargo-deny checks the dependencies' licences and sources (deny.toml).
if ! cargo deny --version 2>/dev/null | grep -q "0.20.2"; then
  cargo install --locked -q cargo-deny --version 0.20.2
fi

install_venv() { # DIR REQUIREMENTS
  local dir=$1 req=$2
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  local stamp="$dir/.requirements.sha256" want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q -r "$req"
    echo "$want" > "$stamp"
  fi
}
# exact versions (scripts/lock-python.sh writes the locks from tests/requirements*.txt)
install_venv .venv tests/requirements.lock
install_venv .venv-perf tests/requirements-perf.lock

# The ONNX project's backend node tests (tests/onnx_nodes.py): the last onnx wheel that
# ships them is 1.22.0; only its data directory is taken, pinned by the wheel's hash.
NODE_DATA=.cache/onnx-node-tests
ONNX_NODE_WHEEL_SHA256=1d0a2bdb15eb2b3cb65c438f3423d9620d14fdce32f92380e6bb1b2e09568ef5
if [ ! -f "$NODE_DATA/.complete" ]; then
  rm -rf "$NODE_DATA" && mkdir -p "$NODE_DATA/wheel"
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    -d "$NODE_DATA/wheel" onnx==1.22.0
  wheel=$(ls "$NODE_DATA"/wheel/onnx-1.22.0-*.whl)
  echo "$ONNX_NODE_WHEEL_SHA256  $wheel" | sha256sum -c --quiet
  .venv/bin/python - "$wheel" "$NODE_DATA" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix)]
    for n in names:
        z.extract(n, dest)
print(f"extracted {len(names)} files of the ONNX node tests")
PY
  mv "$NODE_DATA/onnx/backend/test/data/node" "$NODE_DATA/node"
  rm -rf "$NODE_DATA/onnx" "$NODE_DATA/wheel"
  touch "$NODE_DATA/.complete"
fi
