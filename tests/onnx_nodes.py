"""The ONNX project's backend node tests, run through `weft run`.

The `onnx` wheels up to 1.22.0 ship a directory of single-operator test cases
(`onnx/backend/test/data/node/<case>/model.onnx` with `test_data_set_0/input_*.pb` and
`output_*.pb`); later wheels dropped them. `scripts/setup.sh` extracts them from the pinned
wheel into `.cache/onnx-node-tests/node` (or set WEFT_ONNX_NODE_DATA to another copy).

Every case whose operators are all among the ones the README claims is run on the reference
executor and classified:

  pass     every output has ONNX's dtype and shape, values within rtol 1e-3 / atol 1e-5
  refused  weft exits non-zero with a message saying what is "not supported"
  wrong    weft exits 0 with a wrong dtype, shape or value (never acceptable)
  error    weft exits non-zero without saying what is not supported, or crashes

Run as a script for the report: `.venv/bin/python tests/onnx_nodes.py [--weft BIN] [-v]`.
"""

import argparse
import collections
import functools
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / ".cache" / "onnx-node-tests" / "node"

# The operators of the README's "Supported ONNX" (default domain).
CLAIMED_OPS = {
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "Sub", "Mul", "Div", "MaxPool",
    "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose",
    "Squeeze", "Unsqueeze", "Gemm", "MatMul", "Softmax", "Identity", "Dropout", "Constant",
    "Pad", "Concat", "ReduceMean", "Shape", "Gather", "Cast", "QuantizeLinear",
    "DequantizeLinear", "QLinearConv", "QLinearMatMul",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Softplus",
    "Softsign", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil",
}

RTOL, ATOL = 1e-3, 1e-5

# How many of the claimed cases pass at least (tests/test_onnx_nodes.py); raised as
# support grows, never lowered.
PASS_FLOOR = 384
# The same, compiled and run on PoCL (`--device pocl`).
POCL_PASS_FLOOR = 318


def data_dir():
    return pathlib.Path(os.environ.get("WEFT_ONNX_NODE_DATA", DEFAULT_DATA))


def claimed_cases(root=None):
    """(name, directory) of every node test whose operators weft claims."""
    root = pathlib.Path(root or data_dir())
    cases = []
    for d in sorted(root.iterdir()):
        model = d / "model.onnx"
        if not model.exists() or not (d / "test_data_set_0").is_dir():
            continue
        m = onnx.load(str(model), load_external_data=False)
        ops = {n.op_type for n in m.graph.node if n.domain in ("", "ai.onnx")}
        foreign = any(n.domain not in ("", "ai.onnx") for n in m.graph.node)
        if ops and not foreign and ops <= CLAIMED_OPS:
            cases.append((d.name, d))
    return cases


@functools.lru_cache(maxsize=None)
def ops_of(name):
    """The default-domain op types of node test `name`."""
    m = onnx.load(str(data_dir() / name / "model.onnx"), load_external_data=False)
    return frozenset(n.op_type for n in m.graph.node)


def _load(pb):
    t = onnx.TensorProto()
    t.ParseFromString(pb.read_bytes())
    return t.name, numpy_helper.to_array(t)


def run_case(weft, case_dir, work, device=None):
    """Returns (verdict, detail) for one node test; with `device` (such as `pocl`), the
    model is compiled to an f32 package (`weft compile --precision f32`; pre-quantized
    models to int8) and run there."""
    model = case_dir / "model.onnx"
    m = onnx.load(str(model), load_external_data=False)
    graph_inputs = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    data = case_dir / "test_data_set_0"
    ins = sorted(data.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    outs = sorted(data.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    args = [str(weft), "run", str(model)]
    if device:
        package = work / "model.weft"
        try:
            compile_args = [str(weft), "compile", str(model), "-o", str(package)]
            proc = subprocess.run(compile_args + ["--precision", "f32"], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0 and "pre-quantized" in proc.stderr:
                # QuantizeLinear, DequantizeLinear, QLinear*: an int8 package
                proc = subprocess.run(compile_args, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return "error", "compile timed out"
        if proc.returncode != 0:
            err = proc.stderr.strip()
            if "panicked" in err or proc.returncode < 0:
                return "error", f"compile crashed (exit {proc.returncode}): {err[-400:]}"
            if "not supported" in err:
                return "refused", err.splitlines()[-1] if err else ""
            return "error", f"compile: {err[-400:]}"
        args = [str(weft), "run", str(package), "--device", device]
    for i, pb in enumerate(ins):
        decl = graph_inputs[i] if i < len(graph_inputs) else f"input_{i}"
        path = work / f"input_{i}.npy"
        if m.graph.input[i].type.WhichOneof("value") != "tensor_type":
            # a sequence, map or optional: weft refuses the model before reading inputs
            args += ["--input", f"{decl}={path}"]
            continue
        name, arr = _load(pb)
        name = name or decl
        try:
            np.save(path, arr, allow_pickle=False)
        except ValueError:
            return "skipped", f"input {name} cannot be written as .npy ({arr.dtype})"
        args += ["--input", f"{name}={path}"]
    out_dir = work / "out"
    args += ["--output-dir", str(out_dir)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "error", "timed out"
    err = proc.stderr.strip()
    if proc.returncode != 0:
        if "panicked" in err or proc.returncode < 0:
            return "error", f"crashed (exit {proc.returncode}): {err[-400:]}"
        if "not supported" in err:
            return "refused", err.splitlines()[-1] if err else ""
        return "error", err[-400:]
    for i, pb in enumerate(outs):
        if m.graph.output[i].type.WhichOneof("value") != "tensor_type":
            return "wrong", f"output {i} is not a tensor, yet weft ran the model"
        name, want = _load(pb)
        path = out_dir / f"output_{i}.npy"
        if not path.exists():
            return "wrong", f"output {i} ({name}) missing"
        got = np.load(path, allow_pickle=False)
        ml_type = want.dtype.kind == "V" or (want.dtype.kind == "f" and want.dtype.itemsize == 1)
        if ml_type and got.dtype.kind == "V" and got.dtype.itemsize == want.dtype.itemsize:
            # NumPy has no names for bfloat16, float8, float4, int4, int2: weft writes their
            # bytes raw, as ml_dtypes does
            got = got.view(want.dtype)
        if got.dtype != want.dtype:
            return "wrong", f"output {name}: dtype {got.dtype}, ONNX says {want.dtype}"
        if got.shape != want.shape:
            return "wrong", f"output {name}: shape {got.shape}, ONNX says {want.shape}"
        if ml_type:
            # ml_dtypes' types: every value exact (NaN matching NaN)
            ok = np.array_equal(got.astype(np.float32), want.astype(np.float32), equal_nan=True)
        elif want.dtype.kind in "fc":
            ok = np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            ok = np.array_equal(got, want)
        if not ok:
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            return "wrong", f"output {name}: max abs difference {np.nanmax(diff) if diff.size else 0}"
    return "pass", ""


def run_all(weft, cases, device=None):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in cases:
            work = pathlib.Path(tmp) / name
            work.mkdir()
            results[name] = run_case(weft, d, work, device)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default=os.environ.get("WEFT_BIN", ROOT / "target" / "release" / "weft"))
    ap.add_argument("-v", action="store_true", help="print every case")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--device", help="compile each model (f32) and run it on this device, e.g. pocl")
    a = ap.parse_args()
    cases = [c for c in claimed_cases() if a.k in c[0]]
    results = run_all(a.weft, cases, a.device)
    count = collections.Counter(v for v, _ in results.values())
    for name, (verdict, detail) in results.items():
        if a.v or verdict in ("wrong", "error"):
            print(f"{verdict:8} {name}: {detail}")
    print(f"{len(cases)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(count.items())))
    return 1 if count["wrong"] or count["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
