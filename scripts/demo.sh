#!/usr/bin/env bash
# The main job: builds weft, writes the default zoo model, and runs one inference on it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p weft-cli
out=${WEFT_DEMO_DIR:-$(mktemp -d)}
weft=target/release/weft
$weft zoo resnet50 --seed 0 -o "$out/resnet50.onnx"
$weft inspect "$out/resnet50.onnx" | tail -3
python3 - "$out/x.npy" <<'PY'
import struct, sys, random
# A .npy of shape (1, 3, 224, 224) float32 written without numpy.
random.seed(0)
n = 3 * 224 * 224
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 224, 224), }"
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    f.write(struct.pack(f"<{n}f", *(random.gauss(0, 1) for _ in range(n))))
PY
$weft run "$out/resnet50.onnx" --input "$out/x.npy" --output "$out/logits.npy"
echo "logits written to $out/logits.npy"
