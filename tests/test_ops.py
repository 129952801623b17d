"""The reference executor against onnxruntime, one small hand-built graph per op and
edge case (asymmetric pads, SAME_UPPER/LOWER, stride-2 1x1, ceil_mode,
count_include_pad, NHWC transposes, opset-dependent forms)."""

import numpy as np
import pytest
from onnx import helper

from conftest import compare_with_onnxruntime
from onnx_build import model, rand

N = helper.make_node
X = ("x", [2, 4, 9, 8])


def conv_case(opset=17, x_shape=(2, 4, 9, 8), w_shape=(6, 4, 3, 3), bias=True, **attrs):
    def build(rng):
        inits = {"w": rand(rng, *w_shape)}
        ins = ["x", "w"]
        if bias:
            inits["b"] = rand(rng, w_shape[0])
            ins.append("b")
        m = model([N("Conv", ins, ["y"], **attrs)], [("x", list(x_shape))], [("y", None)], inits, opset)
        return m, {"x": rand(rng, *x_shape)}

    return build


def single(op, x_shape=(2, 4, 9, 8), opset=17, inits=None, extra_inputs=(), **attrs):
    def build(rng):
        m = model(
            [N(op, ["x", *extra_inputs], ["y"], **attrs)],
            [("x", list(x_shape))],
            [("y", None)],
            (inits or {}),
            opset,
        )
        return m, {"x": rand(rng, *x_shape)}

    return build


CASES = {
    "conv_asymmetric_pads": conv_case(pads=[0, 1, 2, 1], strides=[2, 1]),
    "conv_same_upper_stride2": conv_case(auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv_same_upper_even_kernel": conv_case(w_shape=(6, 4, 2, 2), auto_pad="SAME_UPPER"),
    "conv_same_lower_even_kernel": conv_case(w_shape=(6, 4, 2, 2), auto_pad="SAME_LOWER", strides=[2, 2]),
    "conv_valid": conv_case(auto_pad="VALID", strides=[2, 2]),
    "conv_groups_dilation": conv_case(w_shape=(6, 2, 3, 3), group=2, dilations=[2, 2], pads=[2, 2, 2, 2]),
    "conv_depthwise": conv_case(w_shape=(4, 1, 3, 3), group=4, pads=[1, 1, 1, 1]),
    "conv_1x1_stride2": conv_case(w_shape=(8, 4, 1, 1), strides=[2, 2]),
    "conv_7x7_stride2_no_bias": conv_case(x_shape=(1, 3, 32, 32), w_shape=(8, 3, 7, 7), bias=False, strides=[2, 2], pads=[3, 3, 3, 3]),
    "conv_opset11": conv_case(opset=11, pads=[1, 1, 1, 1]),
    "batchnorm_standalone": lambda rng: (
        model(
            [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
            [X],
            [("y", None)],
            {"s": rand(rng, 4), "b": rand(rng, 4), "m": rand(rng, 4), "v": np.abs(rand(rng, 4)) + 0.5},
        ),
        {"x": rand(rng, 2, 4, 9, 8)},
    ),
    "relu": single("Relu"),
    "clip_opset11_inputs": single("Clip", extra_inputs=["lo", "hi"], opset=11, inits={"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    "clip_opset13_max_only": single("Clip", extra_inputs=["", "hi"], opset=13, inits={"hi": np.float32(0.3)}),
    "clip_opset7_attrs": single("Clip", opset=7, min=-0.2, max=0.4),
    "add_broadcast": single("Add", extra_inputs=["c"], inits={"c": np.arange(4, dtype=np.float32).reshape(4, 1, 1)}),
    "mul_broadcast": single("Mul", extra_inputs=["c"], inits={"c": np.linspace(-1, 1, 8, dtype=np.float32)}),
    "sub": single("Sub", extra_inputs=["c"], inits={"c": np.float32(0.25)}),
    "div": single("Div", extra_inputs=["c"], inits={"c": np.full((1, 4, 1, 1), 3.0, np.float32)}),
    "maxpool_ceil_pads": single("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1),
    "maxpool_ceil_end_pad_only": single("MaxPool", x_shape=(1, 2, 5, 5), kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1),
    "maxpool_same_upper": single("MaxPool", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    "maxpool_dilated": single("MaxPool", kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
    "maxpool_resnet_stem": single("MaxPool", x_shape=(1, 3, 112, 112), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "avgpool_count_include_pad": single("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    "avgpool_exclude_pad_asymmetric": single("AveragePool", kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 2, 0]),
    "avgpool_ceil_include_pad": single("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    "avgpool_ceil_exclude_pad": single("AveragePool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    "avgpool_same_lower": single("AveragePool", kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_LOWER"),
    "global_average_pool": single("GlobalAveragePool"),
    "global_max_pool": single("GlobalMaxPool"),
    "flatten_axis2": single("Flatten", axis=2),
    "flatten_axis0": single("Flatten", axis=0),
    "reshape_allow_zero_copy": single("Reshape", extra_inputs=["s"], inits={"s": np.array([0, -1, 8], np.int64)}),
    "transpose_nhwc": single("Transpose", perm=[0, 2, 3, 1]),
    "transpose_default_reverse": single("Transpose"),
    "squeeze_opset11_attr": single("Squeeze", x_shape=(2, 1, 5, 1), opset=11, axes=[1, 3]),
    "squeeze_opset13_input": single("Squeeze", x_shape=(2, 1, 5, 1), opset=13, extra_inputs=["a"], inits={"a": np.array([-1], np.int64)}),
    "squeeze_all": single("Squeeze", x_shape=(1, 3, 1, 1), opset=13),
    "unsqueeze_opset11_attr": single("Unsqueeze", x_shape=(2, 5), opset=11, axes=[0, 3]),
    "unsqueeze_opset13_input": single("Unsqueeze", x_shape=(2, 5), opset=13, extra_inputs=["a"], inits={"a": np.array([1, -1], np.int64)}),
    "gemm_transposes_alpha_beta": lambda rng: (
        model(
            [N("Gemm", ["x", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)],
            [("x", [7, 3])],
            [("y", None)],
            {"b": rand(rng, 5, 7), "c": rand(rng, 5)},
        ),
        {"x": rand(rng, 7, 3)},
    ),
    "gemm_no_c": lambda rng: (
        model([N("Gemm", ["x", "b"], ["y"])], [("x", [3, 6])], [("y", None)], {"b": rand(rng, 6, 4)}),
        {"x": rand(rng, 3, 6)},
    ),
    "matmul_batched": single("MatMul", x_shape=(2, 3, 5), extra_inputs=["b"], inits={"b": np.ones((5, 4), np.float32) * 0.3}),
    "matmul_vector": single("MatMul", x_shape=(5,), extra_inputs=["b"], inits={"b": np.arange(20, dtype=np.float32).reshape(5, 4)}),
    "softmax_opset11_legacy_axis1": single("Softmax", x_shape=(2, 3, 4), opset=11, axis=1),
    "softmax_opset13_last": single("Softmax", x_shape=(2, 3, 4), opset=13),
    "softmax_opset13_axis1": single("Softmax", x_shape=(2, 3, 4), opset=13, axis=1),
    "identity": single("Identity"),
    "dropout_inference": single("Dropout", opset=12),
    "pad_constant_opset11": single("Pad", extra_inputs=["p", "v"], opset=11, inits={"p": np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64), "v": np.float32(1.5)}),
    "pad_reflect": single("Pad", extra_inputs=["p"], opset=13, mode="reflect", inits={"p": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)}),
    "pad_edge": single("Pad", extra_inputs=["p"], opset=13, mode="edge", inits={"p": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)}),
    "pad_opset10_attrs": single("Pad", opset=10, pads=[0, 0, 1, 1, 0, 0, 1, 1], value=-2.0),
    "pad_negative_crops": single("Pad", extra_inputs=["p"], opset=13, inits={"p": np.array([0, 0, -1, 1, 0, 0, 1, -2], np.int64)}),
    "concat_channels": single("Concat", extra_inputs=["c"], axis=1, inits={"c": np.ones((2, 3, 9, 8), np.float32)}),
    "concat_negative_axis": single("Concat", extra_inputs=["x"], axis=-1),
    "reducemean_opset13_attr": single("ReduceMean", opset=13, axes=[2, 3], keepdims=1),
    "reducemean_opset18_input": single("ReduceMean", opset=18, extra_inputs=["a"], keepdims=0, inits={"a": np.array([-1, -2], np.int64)}),
    "reducemean_all": single("ReduceMean", opset=13, keepdims=0),
    "opset21": conv_case(opset=21, pads=[1, 1, 1, 1]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(w, case):
    rng = np.random.default_rng(abs(hash(case)) % (2**32))
    m, inputs = CASES[case](rng)
    compare_with_onnxruntime(w, m, inputs)


def test_constant_and_shape_chain_reshape(w):
    """Reshape target computed in the graph as PyTorch exports `x.view(x.size(0), -1)`."""
    rng = np.random.default_rng(1)
    nodes = [
        N("Shape", ["x"], ["s"]),
        N("Constant", [], ["i0"], value=helper.make_tensor("i0", 7, [], [0])),
        N("Gather", ["s", "i0"], ["n"], axis=0),
        N("Unsqueeze", ["n", "ax"], ["n1"]),
        N("Constant", [], ["m1"], value_ints=[-1]),
        N("Concat", ["n1", "m1"], ["shape"], axis=0),
        N("Reshape", ["x", "shape"], ["y"]),
    ]
    m = model(nodes, [("x", ["batch", 4, 3, 3])], [("y", None)], {"ax": np.array([0], np.int64)}, opset=13)
    compare_with_onnxruntime(w, m, {"x": rand(rng, 3, 4, 3, 3)})


def test_graph_input_that_is_also_an_initializer(w):
    rng = np.random.default_rng(2)
    m = model([N("Add", ["x", "c"], ["y"])], [("x", [2, 3]), ("c", [2, 3])], [("y", None)], {"c": rand(rng, 2, 3)}, opset=11)
    compare_with_onnxruntime(w, m, {"x": rand(rng, 2, 3)})


def test_typed_initializer_fields(w):
    """Initializers stored in float_data / int64_data instead of raw_data."""
    rng = np.random.default_rng(3)
    wt = rand(rng, 3, 2, 1, 1)
    m = model([N("Conv", ["x", "w"], ["c"]), N("Reshape", ["c", "s"], ["y"])], [("x", [1, 2, 4, 4])], [("y", None)], opset=13)
    m.graph.initializer.extend([
        helper.make_tensor("w", 1, wt.shape, wt.flatten().tolist()),
        helper.make_tensor("s", 7, [2], [1, -1]),
    ])
    compare_with_onnxruntime(w, m, {"x": rand(rng, 1, 2, 4, 4)})


def test_cast_through_half_and_back_matches_onnxruntime(w):
    """Cast float32 -> float16 -> float32 (a rounding to half precision) and float32 ->
    float64 -> float32, then a Conv, against onnxruntime."""
    rng = np.random.default_rng(4)
    nodes = [
        N("Cast", ["x"], ["h"], to=10),     # FLOAT16
        N("Cast", ["h"], ["f"], to=1),      # FLOAT
        N("Cast", ["f"], ["d"], to=11),     # DOUBLE
        N("Cast", ["d"], ["g"], to=1),
        N("Conv", ["g", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = model(nodes, [("x", [2, 4, 9, 8])], [("y", None)], {"w": rand(rng, 6, 4, 3, 3)}, 17)
    errors = compare_with_onnxruntime(w, m, {"x": rand(rng, 2, 4, 9, 8) * 100}, tol=1e-5)
    assert max(errors.values()) <= 1e-5


def test_initializers_in_external_data_files_match_onnxruntime(w):
    """Weights saved as ONNX external data (a file beside the model, found relative to it):
    the reference and onnxruntime agree, and a missing data file is a clear error."""
    import onnx

    rng = np.random.default_rng(5)
    m = model([N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], [("x", [1, 4, 9, 8])], [("y", None)],
              {"w": rand(rng, 16, 4, 3, 3), "b": rand(rng, 16)}, 17)
    d = w.tmp / "ext"
    d.mkdir()
    path = d / "model.onnx"
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=0)
    assert (d / "weights.bin").stat().st_size >= (16 * 4 * 9 + 16) * 4
    assert path.stat().st_size < (d / "weights.bin").stat().st_size
    errors = compare_with_onnxruntime(w, path, {"x": rand(rng, 1, 4, 9, 8)}, tol=1e-5)
    assert max(errors.values()) <= 1e-5
    (d / "weights.bin").unlink()
    x = w.tmp / "x.npy"
    np.save(x, rand(rng, 1, 4, 9, 8))
    proc = w("run", path, "--input", x, "--output", w.tmp / "y.npy", check=False)
    assert proc.returncode == 1 and "weights.bin" in proc.stderr, proc.stderr


def _squeeze_excite_model(rng):
    """A MobileNetV3/EfficientNet-style block: Conv, HardSwish, squeeze-excitation (global
    pool, two 1x1 Convs, Sigmoid, Mul) and a SiLU (x * Sigmoid(x))."""
    inits = {
        "w1": rand(rng, 16, 3, 3, 3), "b1": rand(rng, 16), "w2": rand(rng, 4, 16, 1, 1), "b2": rand(rng, 4),
        "w3": rand(rng, 16, 4, 1, 1), "b3": rand(rng, 16), "w4": rand(rng, 8, 16, 3, 3), "b4": rand(rng, 8),
    }
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        N("HardSwish", ["c1"], ["h1"]),
        N("GlobalAveragePool", ["h1"], ["g"]),
        N("Conv", ["g", "w2", "b2"], ["s1"]),
        N("Relu", ["s1"], ["s2"]),
        N("Conv", ["s2", "w3", "b3"], ["s3"]),
        N("Sigmoid", ["s3"], ["s4"]),
        N("Mul", ["h1", "s4"], ["se"]),
        N("Conv", ["se", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1]),
        N("Sigmoid", ["c4"], ["sig"]),
        N("Mul", ["c4", "sig"], ["y"]),
    ]
    return model(nodes, [("x", [2, 3, 16, 16])], [("y", None)], inits, 17)


def test_squeeze_excitation_and_hard_swish_run_float_and_int8_on_pocl(w):
    import onnx

    rng = np.random.default_rng(3)
    m = _squeeze_excite_model(rng)
    x = rand(rng, 2, 3, 16, 16)
    compare_with_onnxruntime(w, m, {"x": x}, tol=1e-4)
    path = w.tmp / "model.onnx"
    onnx.save(m, path)
    np.save(w.tmp / "x.npy", x)
    np.save(w.tmp / "calib.npy", rand(rng, 32, 3, 16, 16))
    w("compile", path, "--precision", "f32", "-o", w.tmp / "f32.weft")
    w("run", w.tmp / "f32.weft", "--device", "pocl", "--input", w.tmp / "x.npy", "--output", w.tmp / "f32.npy")
    from conftest import ort_run, rel_error

    want = ort_run(path, {"x": x})["y"]
    assert rel_error(np.load(w.tmp / "f32.npy"), want) <= 1e-4
    w("compile", path, "--calib", w.tmp / "calib.npy", "-o", w.tmp / "q.weft")
    w("run", w.tmp / "q.weft", "--input", w.tmp / "x.npy", "--output", w.tmp / "ref.npy")
    w("run", w.tmp / "q.weft", "--device", "pocl", "--input", w.tmp / "x.npy", "--output", w.tmp / "pocl.npy")
    ref, pocl = np.load(w.tmp / "ref.npy"), np.load(w.tmp / "pocl.npy")
    assert np.array_equal(ref, pocl), "int8 on PoCL is bit-exact with the integer reference"
    assert rel_error(pocl, want) < 0.1
