#!/usr/bin/env bash
# Compiles the embedded default model: fashion_resnet.onnx (trained by train_torch.py) to
# an int8 package calibrated on 256 training images, with its preprocessing spec (28x28
# grayscale, Fashion-MNIST mean and std) and class labels. Needs numpy and the Debian
# package dataset-fashion-mnist. Run from anywhere: bash models/fashion/make_package.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
tmp=$(mktemp -d)
(cd "$here" && "$python" make_calibration.py "$tmp/calib.npy")
cargo build --release -q -p weft-cli --manifest-path "$root/Cargo.toml" 2>/dev/null || true
weft=${WEFT_BIN:-$root/target/release/weft}
"$weft" compile "$here/fashion_resnet.onnx" --precision int8 --calib "$tmp/calib.npy" --calib-method percentile \
  --preprocess "none,channels=gray,range=0:1,mean=0.2860,std=0.3530" --labels "$here/labels.txt" \
  -o "$here/fashion_resnet.weft"
rm -rf "$tmp"
