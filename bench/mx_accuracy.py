"""Accuracy of weft's precisions against f32, for docs/MX.md's table.

For each model: f32 (the ONNX model on the reference), int8 (calibrated on 256 training
images for the trained models, on 64 seeded inputs for the zoo ones), and MX packages
compiled without calibration data (MXINT8, MXFP8 E4M3, MXFP6 E2M3, MXFP4 with the default
activations: the weights' format, MXINT8 at the layers reading the image; and two MXFP8
variants: E4M3 activations everywhere, MXINT8 activations everywhere). Printed: top-1 on the labelled test images (trained models) and top-1
agreement with f32 (every model), as a Markdown table.

    python bench/mx_accuracy.py [--n 1000] [--zoo-n 16] [--weft target/release/weft]

Models: weft's Fashion-MNIST ResNet (the embedded default) and its Keras model (trained,
labelled test split of classes 0-4), zoo resnet20 (CIFAR-style, seeded weights) and zoo
resnet50 (seeded weights) on seeded normal inputs (agreement only: seeded weights have no
accuracy). f32 runs on the reference executor, packages on PoCL (int8 and MX kernels are
bit-exact with the reference).
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
# (precision, extra compile flags)
PRECISIONS = [
    ("int8", ()),
    ("mxint8", ()),
    ("mxfp8_e4m3", ()),
    ("mxfp8_e4m3", ("--mx-input-activations", "same")),
    ("mxfp8_e4m3", ("--mx-activations", "int8")),
    ("mxfp6_e2m3", ()),
    ("mxfp4_e2m1", ()),
]


def weft(binary, *args):
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True, text=True)


def fashion(n, nhwc):
    sys.path.insert(0, str(ROOT / "models" / "fashion"))
    import fashion_data

    x, y = fashion_data.load("t10k")
    keep = np.flatnonzero(np.isin(y, [0, 1, 2, 3, 4]))[:n]
    xc, yc = fashion_data.load("train")
    cal = np.random.default_rng(0).choice(np.flatnonzero(np.isin(yc, [0, 1, 2, 3, 4])), 256, replace=False)
    xt, xcal = fashion_data.normalize(x[keep]), fashion_data.normalize(xc[cal])
    if nhwc:
        xt, xcal = xt.transpose(0, 2, 3, 1), xcal.transpose(0, 2, 3, 1)
    return xt, y[keep], xcal


def row(binary, tmp, name, model, x, y, xcal):
    np.save(tmp / "x.npy", x)
    np.save(tmp / "cal.npy", xcal)
    outs = {}
    weft(binary, "run", model, "--input", tmp / "x.npy", "--output", tmp / "f32.npy", "--output-name", "logits")
    outs["f32"] = np.load(tmp / "f32.npy")
    for p, flags in PRECISIONS:
        pkg = tmp / f"{p}.weft"
        extra = ["--calib", tmp / "cal.npy"] if p == "int8" else list(flags)
        weft(binary, "compile", model, "--precision", p, *extra, "-o", pkg)
        weft(binary, "run", pkg, "--device", "pocl", "--input", tmp / "x.npy", "--output", tmp / "o.npy", "--output-name", "logits")
        outs[(p, flags)] = np.load(tmp / "o.npy")
    ref = outs["f32"].argmax(1)
    cells = []
    for p in ["f32", *PRECISIONS]:
        pred = outs[p].argmax(1)
        agree = (pred == ref).mean() * 100
        if y is not None:
            cells.append(f"{(pred == y).mean() * 100:.2f} / {agree:.1f}")
        else:
            cells.append(f"{agree:.1f}")
    print(f"| {name} ({len(x)}) | " + " | ".join(cells) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--zoo-n", type=int, default=16)
    ap.add_argument("--weft", default=str(ROOT / "target" / "release" / "weft"))
    args = ap.parse_args()
    print(
        "| model (images) | f32 | int8 (calibrated) | MXINT8 | MXFP8 E4M3 | MXFP8 E4M3, E4M3 input layer "
        "| MXFP8 E4M3 weights, MXINT8 activations | MXFP6 E2M3 | MXFP4 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        for name, file, nhwc in [
            ("Fashion-MNIST ResNet (default model), top-1 % / agreement %", "fashion_resnet.onnx", False),
            ("Fashion-MNIST Keras CNN, top-1 % / agreement %", "fashion_keras.onnx", True),
        ]:
            x, y, xcal = fashion(args.n, nhwc)
            row(args.weft, tmp, name, ROOT / "models" / "fashion" / file, x, y, xcal)
        for zoo, shape in [("resnet20", (3, 32, 32)), ("resnet50", (3, 224, 224))]:
            model = tmp / f"{zoo}.onnx"
            weft(args.weft, "zoo", zoo, "--seed", "1", "-o", model)
            rng = np.random.default_rng(5)
            x = rng.normal(size=(args.zoo_n, *shape)).astype(np.float32)
            xcal = rng.normal(size=(64, *shape)).astype(np.float32)
            row(args.weft, tmp, f"zoo {zoo} (seeded), agreement %", model, x, None, xcal)


if __name__ == "__main__":
    main()
