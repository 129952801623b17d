#!/usr/bin/env bash
# weft on a GPU's OpenCL driver (NVIDIA by default): lists the device, runs the kernel tests
# on it (int8 bit-exact, float within tolerance), checks int8 ResNet-50 bit-exact against the
# integer reference, both kernel sets, and times it at batch 1 and 8. One short run, prepared
# for a lent GPU machine; writes everything it prints to $OUT/opencl-gpu.log when OUT is set.
#
#   bash bench/device/opencl-gpu.sh [PLATFORM]     (PLATFORM: a platform name substring, NVIDIA)
#
# Needs the GPU's OpenCL ICD (NVIDIA's driver installs /etc/OpenCL/vendors/nvidia.icd) and
# the ICD loader (libOpenCL.so.1). weft comes from WEFT_BIN, else target/release/weft, else
# cargo builds it; the kernel tests need cargo (or KERNEL_TESTS: a directory of the prebuilt
# test binaries `cargo test -p weft-opencl --tests --no-run` wrote). Nothing here asserts a
# time: the timings are printed.
set -uo pipefail
cd "$(dirname "$0")/../.."
PLATFORM=${1:-NVIDIA}
DEVICE="opencl:$PLATFORM"
LOG=${OUT:+$OUT/opencl-gpu.log}
exec > >(tee ${LOG:+"$LOG"}) 2>&1
status=0
step() { echo; echo "== $*"; }
fail() { echo "FAILED: $*"; status=1; }

step "OpenCL platforms"
ls /etc/OpenCL/vendors/ 2>/dev/null || echo "no /etc/OpenCL/vendors"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

WEFT=${WEFT_BIN:-target/release/weft}
if [ ! -x "$WEFT" ]; then
  if command -v cargo >/dev/null; then
    step "building weft"
    cargo build --release -q -p weft-cli || { echo "build failed"; exit 1; }
  else
    echo "no weft binary (set WEFT_BIN) and no cargo to build one"; exit 1
  fi
fi
"$WEFT" devices || fail "weft devices"
if ! "$WEFT" devices 2>/dev/null | grep -qi "$PLATFORM"; then
  echo "no OpenCL platform matching '$PLATFORM': is the GPU's ICD installed?"; exit 1
fi

step "kernel tests on $DEVICE (int8 bit-exact, float within tolerance, FPGA variant)"
if [ -n "${KERNEL_TESTS:-}" ]; then
  for t in "$KERNEL_TESTS"/kernels-* "$KERNEL_TESTS"/float_kernels-*; do
    [ -x "$t" ] && { WEFT_TEST_DEVICE="$DEVICE" WEFT_TEST_DEVICES="$DEVICE" "$t" --test-threads 1 -q || fail "$t"; }
  done
elif command -v cargo >/dev/null; then
  WEFT_TEST_DEVICE="$DEVICE" WEFT_TEST_DEVICES="$DEVICE" cargo test -q -p weft-opencl --tests -- --test-threads 1 \
    || fail "kernel tests"
else
  echo "skipped: no cargo and no KERNEL_TESTS"; status=1
fi

step "int8 ResNet-50 on $DEVICE against the integer reference"
work=$(mktemp -d)
"$WEFT" zoo resnet50 -o "$work/r50.onnx" >/dev/null
python3 - "$work" <<'PY' || fail "inputs"
import sys, struct
import random
d = sys.argv[1]
def save(path, shape, seed):
    # a float32 .npy without numpy: header, then little-endian values
    rng = random.Random(seed)
    n = 1
    for s in shape: n *= s
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    header = header.ljust(118) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % n, *(rng.gauss(0, 1) for _ in range(n))))
save(f"{d}/calib.npy", (8, 3, 224, 224), 1)
save(f"{d}/x1.npy", (1, 3, 224, 224), 2)
save(f"{d}/x8.npy", (8, 3, 224, 224), 3)
PY
"$WEFT" compile "$work/r50.onnx" --calib "$work/calib.npy" -o "$work/r50.weft" || fail "compile"
for b in 1 8; do
  "$WEFT" run "$work/r50.weft" --device reference --input "$work/x$b.npy" --output "$work/ref$b.npy" >/dev/null 2>&1
  for k in default fpga; do
    "$WEFT" run "$work/r50.weft" --device "$DEVICE" --kernels "$k" --input "$work/x$b.npy" --output "$work/gpu$b$k.npy" \
      || { fail "run batch $b kernels $k"; continue; }
    if cmp -s "$work/ref$b.npy" "$work/gpu$b$k.npy"; then
      echo "batch $b, kernels $k: bit-exact with the integer reference"
    else
      fail "batch $b, kernels $k: differs from the integer reference"
    fi
  done
done

step "timing on $DEVICE (weft bench; medians over the timed runs)"
for b in 1 8; do
  "$WEFT" bench "$work/r50.weft" --device "$DEVICE" --batch "$b" --iterations 30 --warmup 5 || fail "bench batch $b"
done
"$WEFT" bench "$work/r50.weft" --device "$DEVICE" --batch 1 --iterations 5 --warmup 1 --profile | tail -n 25 || true
rm -rf "$work"
echo
[ $status -eq 0 ] && echo "opencl-gpu: all checks passed" || echo "opencl-gpu: some checks FAILED"
exit $status
