"""Real accuracy on a real labelled image set: weft's Fashion-MNIST models (trained by
models/fashion/train_torch.py and train_keras.py, exported by PyTorch and by tf2onnx)
import, and int8 top-1 on the classes-0-4 test split stays within 1 point of f32."""

import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "fashion"))
import fashion_data  # noqa: E402

CLASSES = [0, 1, 2, 3, 4]


def split(name, n=None):
    x, y = fashion_data.load(name)
    keep = np.flatnonzero(np.isin(y, CLASSES))
    if n:
        keep = np.random.default_rng(0).choice(keep, n, replace=False)
    return fashion_data.normalize(x[keep]), y[keep]


@pytest.mark.parametrize("model,nhwc", [("fashion_resnet.onnx", False), ("fashion_keras.onnx", True)])
def test_int8_accuracy_within_one_point_of_f32(w, model, nhwc):
    path = ROOT / "models" / "fashion" / model
    xte, yte = split("t10k")
    xcal, _ = split("train", 256)
    if nhwc:
        xte, xcal = xte.transpose(0, 2, 3, 1), xcal.transpose(0, 2, 3, 1)
    np.save(w.tmp / "test.npy", xte)
    np.save(w.tmp / "calib.npy", xcal)
    w("compile", path, "--calib", w.tmp / "calib.npy", "-o", w.tmp / "m.weft")
    f32 = w.tmp / "f32.npy"
    w("run", path, "--input", w.tmp / "test.npy", "--output", f32, "--output-name", "logits")
    i8 = w.tmp / "i8.npy"
    w("run", w.tmp / "m.weft", "--device", "pocl", "--input", w.tmp / "test.npy", "--output", i8, "--output-name", "logits")
    acc_f32 = float((np.load(f32).argmax(1) == yte).mean())
    acc_i8 = float((np.load(i8).argmax(1) == yte).mean())
    print(f"{model}: f32 top-1 {acc_f32 * 100:.2f}%, int8 top-1 {acc_i8 * 100:.2f}% on {len(yte)} test images")
    assert acc_f32 >= 0.88
    assert abs(acc_i8 - acc_f32) <= 0.01
