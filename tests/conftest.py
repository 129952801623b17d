"""Shared fixtures: the weft binary (built once per session) and model helpers."""

import os
import pathlib
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def weft():
    """Path to a release build of the weft binary."""
    path = os.environ.get("WEFT_BIN")
    if path:
        return pathlib.Path(path)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "weft-cli"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "weft"


class Weft:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp

    def __call__(self, *args, check=True, timeout=600):
        proc = subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True, timeout=timeout)
        assert "panicked" not in proc.stderr, proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"weft {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc

    def run_model(self, model_path, inputs, output_name=None, extra=()):
        """Runs `weft run` and returns the output array."""
        args = ["run", model_path]
        for i, (name, arr) in enumerate(inputs.items()):
            p = self.tmp / f"in_{i}.npy"
            np.save(p, arr)
            args += ["--input", f"{name}={p}" if len(inputs) > 1 else p]
        out = self.tmp / "out.npy"
        args += ["--output", out, *extra]
        if output_name:
            args += ["--output-name", output_name]
        self(*args)
        return np.load(out)


@pytest.fixture
def w(weft, tmp_path):
    return Weft(weft, tmp_path)


def ort_run(model_path, inputs):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, inputs)))


def rel_error(got, want):
    """Max abs error divided by the reference output's max magnitude."""
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-6)
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale


def compare_with_onnxruntime(w, model, inputs, tol=1e-4):
    """Saves `model` (ModelProto or path), runs every output through weft and onnxruntime
    and asserts they agree within `tol` of the output's max magnitude. Returns the errors."""
    if isinstance(model, onnx.ModelProto):
        path = w.tmp / "model.onnx"
        onnx.save(model, path)
    else:
        path = model
    want = ort_run(path, inputs)
    errors = {}
    for name, ref in want.items():
        got = w.run_model(path, inputs, output_name=name)
        errors[name] = rel_error(got, ref)
        assert errors[name] <= tol, f"output {name}: relative error {errors[name]:.3g} > {tol}"
    return errors
