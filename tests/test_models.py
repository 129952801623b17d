"""Whole models: every zoo model, and ResNets exported the way PyTorch and Keras/tf2onnx
write them, run by the reference executor and compared with onnxruntime."""

import json
import re

import numpy as np
import onnx
import pytest

from conftest import compare_with_onnxruntime, ort_run, rel_error
from foreign_models import keras_style_resnet, pytorch_style_resnet

ZOO = ["resnet8", "resnet20", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def image(batch, size, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_onnxruntime(w, name):
    path = w.tmp / f"{name}.onnx"
    w("zoo", name, "--seed", "7", "-o", path)
    size = 32 if name in ("resnet8", "resnet20") else 224
    batch = 2 if size == 32 else 1
    errors = compare_with_onnxruntime(w, path, {"input": image(batch, size)})
    print(name, errors)
    # Activations stay in a sane range: features neither vanish nor explode.
    feats = ort_run(path, {"input": image(batch, size)})["features"]
    assert np.isfinite(feats).all()
    assert 0.05 < float(feats.std()) < 100.0, feats.std()
    assert (feats > 0).mean() > 0.2


def test_zoo_fixed_batch_and_seed(w):
    a, b, c = (w.tmp / f"{n}.onnx" for n in "abc")
    w("zoo", "resnet8", "--seed", "1", "--batch", "4", "-o", a)
    w("zoo", "resnet8", "--seed", "1", "--batch", "4", "-o", b)
    w("zoo", "resnet8", "--seed", "2", "-o", c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    m = onnx.load(a)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert [o.name for o in m.graph.output] == ["logits", "features"]
    # torchvision tensor names
    names = {i.name for i in m.graph.initializer}
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "fc.weight"} <= names


def test_resnet50_torchvision_names_and_macs(w):
    path = w.tmp / "r50.onnx"
    w("zoo", "resnet50", "-o", path)
    names = {i.name for i in onnx.load(path).graph.initializer}
    assert {"layer4.2.bn3.weight", "layer1.0.downsample.1.running_mean", "fc.bias"} <= names
    out = w("inspect", path).stdout
    macs = int(re.search(r"MACs\s+(\d+)", out).group(1))
    assert 4.0e9 < macs < 4.2e9, out
    params = int(re.search(r"parameters\s+(\d+)", out).group(1))
    # torchvision's 25,557,032 weights plus BatchNorm running statistics
    assert params == 25_557_032 + 53_120


def test_inspect_layers_table(w):
    path = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", path)
    out = w("inspect", path, "--layers", "--batch", "2").stdout
    assert "layer3.0.conv1" in out and "[2, 64, 8, 8]" in out
    # --json says the same for scripts
    doc = json.loads(w("inspect", path, "--layers", "--batch", "2", "--json").stdout)
    assert doc["macs"] == int(re.search(r"MACs\s+(\d+)", out).group(1))
    assert doc["parameters"] == int(re.search(r"parameters\s+(\d+)", out).group(1))
    assert doc["format"] == "onnx" and doc["batch"] == 2 and doc["nodes"] == len(doc["layers"])
    assert doc["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 3, 32, 32]}]
    assert {o["name"]: o["shape"] for o in doc["outputs"]}["logits"] == [2, 10]
    conv = next(l for l in doc["layers"] if l["name"] == "layer3.0.conv1")
    assert conv["output_shape"] == [2, 64, 8, 8] and conv["macs"] > 0
    assert sum(o["macs"] for o in doc["ops"]) == doc["macs"]


@pytest.mark.parametrize("depth", [18, 50])
def test_pytorch_style_resnet(w, depth):
    path = w.tmp / "torch.onnx"
    onnx.save(pytorch_style_resnet(depth=depth, seed=depth), path)
    errors = compare_with_onnxruntime(w, path, {"input.1": image(2, 224, seed=3)})
    print(depth, errors)


def test_keras_style_nhwc_resnet(w):
    path = w.tmp / "keras.onnx"
    onnx.save(keras_style_resnet(), path)
    x = np.random.default_rng(5).standard_normal((3, 32, 32, 3)).astype(np.float32)
    errors = compare_with_onnxruntime(w, path, {"input_1": x})
    print(errors)


def test_run_reads_float64_and_writes_named_output(w):
    path = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", path)
    x = image(1, 32).astype(np.float64)
    feats = w.run_model(path, {"input": x}, output_name="features")
    want = ort_run(path, {"input": x.astype(np.float32)})["features"]
    assert rel_error(feats, want) <= 1e-4
