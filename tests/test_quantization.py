"""int8 quantization: accuracy against f32 on the zoo, agreement with onnxruntime's own
int8 models (QDQ and QOperator), f16 packages, and damaged package files."""

import json

import numpy as np
import onnx
import pytest

from conftest import ort_run, rel_error
from ort_quant import output_step, quantize


def gaussian(n, size, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name,method", [("resnet50", "percentile"), ("resnet18", "minmax"), ("resnet18", "entropy"), ("resnet18", "percentile:99.9")])
def test_int8_features_match_f32(w, name, method):
    """Calibrated on 32 inputs, the int8 features keep cosine similarity >= 0.99 with the
    f32 model's on 64 other inputs."""
    model = w.tmp / f"{name}.onnx"
    w("zoo", name, "--seed", "3", "-o", model)
    np.save(w.tmp / "calib.npy", gaussian(32, 224, 1))
    np.save(w.tmp / "eval.npy", gaussian(64, 224, 2))
    pkg, report = w.tmp / "m.weft", w.tmp / "report.json"
    w("compile", model, "--precision", "int8", "--calib", w.tmp / "calib.npy", "--calib-method", method,
      "--report", report, "--eval", w.tmp / "eval.npy", "-o", pkg)
    r = json.loads(report.read_text())
    feats = next(o for o in r["outputs"] if o["name"] == "features")
    print(name, method, feats["cosine_similarity"], feats["min_cosine_similarity"])
    assert r["samples"] == 64
    assert feats["cosine_similarity"] >= 0.99
    assert len(r["layers"]) > 10 and all(l["sqnr_db"] > 0 for l in r["layers"])
    # The package runs on its own and agrees with what the report measured.
    x = gaussian(2, 224, 9)
    got = w.run_model(pkg, {"input": x}, output_name="features")
    want = ort_run(model, {"input": x})["features"]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_onnxruntime_quantized_model_agrees(w, fmt):
    """A model quantized by onnxruntime (per-channel) runs in weft with the model's own
    scales: identical top-1 on >= 99% of 256 inputs, >= 99% of outputs within one step.
    Its weights are 7-bit (`reduce_range`): with 8-bit ones onnxruntime's fused int8 kernels
    saturate on CPUs without VNNI, and it is then onnxruntime that departs from the model."""
    src = w.tmp / "r20.onnx"
    w("zoo", "resnet20", "--seed", "5", "-o", src)
    q = w.tmp / f"r20_{fmt}.onnx"
    quantize(src, q, gaussian(32, 32, 1), fmt=fmt, reduce_range=True)
    pkg = w.tmp / "q.weft"
    w("compile", q, "-o", pkg)
    assert "pre-quantized" in w("inspect", pkg).stdout
    x = gaussian(256, 32, 4)
    want = ort_run(q, {"input": x})["logits"]
    got = w.run_model(pkg, {"input": x}, output_name="logits")
    step = output_step(q, "logits")
    top1 = (got.argmax(1) == want.argmax(1)).mean()
    within = (np.abs(got - want) <= step * 1.001).mean()
    print(fmt, "top-1", top1, "within one step", within)
    assert top1 >= 0.99
    assert within >= 0.99


def test_prequantized_model_needs_no_calibration_and_refuses_f16(w):
    src = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", src)
    q = w.tmp / "r8_qdq.onnx"
    quantize(src, q, gaussian(8, 32, 1))
    proc = w("compile", q, "--precision", "f16", "-o", w.tmp / "x.weft", check=False)
    assert proc.returncode == 1 and "int8 only" in proc.stderr


def test_int8_needs_calibration(w):
    src = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", src)
    proc = w("compile", src, "-o", w.tmp / "x.weft", check=False)
    assert proc.returncode == 1 and "calib" in proc.stderr


@pytest.mark.parametrize("precision,tol", [("f16", 5e-3), ("f32", 1e-4)])
def test_float_packages(w, precision, tol):
    src = w.tmp / "r18.onnx"
    w("zoo", "resnet18", "-o", src)
    pkg = w.tmp / "m.weft"
    w("compile", src, "--precision", precision, "-o", pkg)
    out = w("inspect", pkg).stdout
    assert f"precision {precision}" in out
    x = gaussian(2, 224, 3)
    got = w.run_model(pkg, {"input": x}, output_name="features")
    assert rel_error(got, ort_run(src, {"input": x})["features"]) <= tol
    if precision == "f16":
        assert pkg.stat().st_size < 0.6 * (w.tmp / "r18.onnx").stat().st_size


def test_damaged_packages_give_clear_errors(w):
    src = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", src)
    pkg = w.tmp / "m.weft"
    w("compile", src, "--precision", "f32", "-o", pkg)
    data = pkg.read_bytes()
    x = w.tmp / "x.npy"
    np.save(x, gaussian(1, 32, 0))
    cases = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],
        "version": data[:8] + (7).to_bytes(4, "little") + data[12:],
        "header": data[:8],
    }
    expected = {"truncated": "truncated", "flipped": "checksum", "version": "version 7", "header": "truncated"}
    for case, blob in cases.items():
        p = w.tmp / f"{case}.weft"
        p.write_bytes(blob)
        for args in (["inspect", p], ["run", p, "--input", x, "--output", w.tmp / "y.npy"]):
            proc = w(*args, check=False)
            assert proc.returncode == 1, (case, proc.stderr)
            assert expected[case] in proc.stderr.lower(), (case, proc.stderr)


def test_preprocess_spec_and_labels_travel_in_the_package(w):
    src = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", src)
    labels = w.tmp / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    pkg = w.tmp / "m.weft"
    w("compile", src, "--precision", "f32", "--preprocess", "imagenet,crop=32,resize=36", "--labels", labels, "-o", pkg)
    out = w("inspect", pkg).stdout
    assert '"resize":36' in out and '"crop":[32,32]' in out and "class0" in out
    proc = w("compile", src, "--precision", "f32", "--preprocess", "imagenet,bogus=1", "-o", pkg, check=False)
    assert proc.returncode != 0 and "bogus" in proc.stderr


def test_image_calibration_without_preprocessing_warns_and_names_the_presets(w):
    """Calibrating on a folder of photos with the default `--preprocess none` says what that
    does and names the presets; with a preset given it says nothing of it."""
    from PIL import Image

    w("zoo", "resnet8", "--seed", "1", "-o", w.tmp / "r8.onnx")
    photos = w.tmp / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), np.uint8)).save(photos / f"p{i}.png")
    plain = w("compile", w.tmp / "r8.onnx", "--calib", photos, "-o", w.tmp / "a.weft")
    assert "--preprocess none" in plain.stderr and "imagenet" in plain.stderr and "brainwave" in plain.stderr, plain.stderr
    assert plain.stderr.count("--preprocess none") == 1
    chosen = w("compile", w.tmp / "r8.onnx", "--calib", photos, "--preprocess", "imagenet,resize=36,crop=32",
               "-o", w.tmp / "b.weft")
    assert "--preprocess none" not in chosen.stderr, chosen.stderr
    # a .npy calibration set is already a tensor: nothing to say about images
    np.save(w.tmp / "c.npy", gaussian(4, 32, 0))
    tensor = w("compile", w.tmp / "r8.onnx", "--calib", w.tmp / "c.npy", "-o", w.tmp / "c.weft")
    assert "--preprocess none" not in tensor.stderr, tensor.stderr
