"""Broken, foreign and inconsistent model files give a clear error and exit code 1,
never a panic."""

import numpy as np
import onnx
import pytest
from onnx import helper

from onnx_build import model


@pytest.fixture
def r8(w):
    path = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", path)
    return path


def fails(w, path, *needles):
    x = w.tmp / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 32), np.float32))
    for args in (["inspect", path], ["run", path, "--input", x, "--output", w.tmp / "y.npy"]):
        proc = w(*args, check=False)
        assert proc.returncode == 1, proc.stderr
        low = proc.stderr.lower()
        assert low.startswith("error:"), proc.stderr
        for n in needles:
            assert n.lower() in low, proc.stderr


def test_truncated_file(w, r8):
    data = r8.read_bytes()
    for cut in (5, 1000, len(data) // 2, len(data) - 3):
        p = w.tmp / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        fails(w, p)


def test_random_bytes_and_empty_file(w):
    rng = np.random.default_rng(0)
    for i in range(20):
        p = w.tmp / f"rand{i}.onnx"
        p.write_bytes(rng.integers(0, 256, size=int(rng.integers(0, 5000)), dtype=np.uint8).tobytes())
        proc = w("inspect", p, check=False)
        assert proc.returncode == 1
    empty = w.tmp / "empty.onnx"
    empty.write_bytes(b"")
    fails(w, empty)


def test_missing_file(w):
    fails(w, w.tmp / "nope.onnx", "nope.onnx")


def test_missing_initializer(w, r8):
    m = onnx.load(r8)
    victim = m.graph.initializer[3].name
    del m.graph.initializer[3]
    p = w.tmp / "missing.onnx"
    onnx.save(m, p)
    fails(w, p, victim)


def test_cycle(w):
    m = model([helper.make_node("Add", ["x", "z"], ["y"], name="a"), helper.make_node("Relu", ["y"], ["z"], name="b")], [("x", [1, 3, 32, 32])], [("z", None)])
    p = w.tmp / "cycle.onnx"
    onnx.save(m, p)
    fails(w, p, "cycle")


def test_shape_mismatch_names_the_node(w):
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], name="bad_conv")], [("x", [1, 3, 32, 32])], [("y", None)], {"w": np.zeros((4, 5, 3, 3), np.float32)})
    p = w.tmp / "mismatch.onnx"
    onnx.save(m, p)
    fails(w, p, "bad_conv", "Conv")


def test_unsupported_op_names_node_op_and_opset(w):
    m = model([helper.make_node("Erf", ["x"], ["y"], name="my_erf")], [("x", [1, 3, 32, 32])], [("y", None)], opset=13)
    p = w.tmp / "erf.onnx"
    onnx.save(m, p)
    fails(w, p, "my_erf", "Erf", "opset 13")


def test_unsupported_opset_and_domain(w):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 3, 32, 32])], [("y", None)], opset=5)
    p = w.tmp / "old.onnx"
    onnx.save(m, p)
    fails(w, p, "opset 5")
    m = model([helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")], [("x", [1, 3, 32, 32])], [("y", None)])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(m, p)
    fails(w, p, "com.microsoft")


def test_initializer_with_wrong_byte_count(w, r8):
    m = onnx.load(r8)
    t = m.graph.initializer[0]
    t.raw_data = t.raw_data[:-4]
    p = w.tmp / "short.onnx"
    onnx.save(m, p)
    fails(w, p, t.name)


def test_bad_run_inputs(w, r8):
    bad = w.tmp / "bad.npy"
    np.save(bad, np.zeros((1, 3, 31, 32), np.float32))
    proc = w("run", r8, "--input", bad, "--output", w.tmp / "y.npy", check=False)
    assert proc.returncode == 1 and "shape" in proc.stderr
    (w.tmp / "junk.npy").write_bytes(b"\x93NUMPY junk")
    proc = w("run", r8, "--input", w.tmp / "junk.npy", "--output", w.tmp / "y.npy", check=False)
    assert proc.returncode == 1 and "npy" in proc.stderr
    np.save(bad, np.zeros((1, 3, 32, 32), np.float32))
    proc = w("run", r8, "--input", bad, "--output", w.tmp / "y.npy", "--output-name", "nope", check=False)
    assert proc.returncode == 1 and "nope" in proc.stderr
    proc = w("zoo", "vgg16", "-o", w.tmp / "v.onnx", check=False)
    assert proc.returncode == 1 and "vgg16" in proc.stderr
