"""Small helpers for building ONNX models with the onnx Python helper API."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def ir_version(opset):
    return 7 if opset <= 12 else 8 if opset <= 17 else 9 if opset <= 20 else 10


def model(nodes, inputs, outputs, initializers=(), opset=17, name="case"):
    """inputs/outputs: lists of (name, shape) with float32 element type; shape entries may
    be strings for symbolic dims, and an output shape may be None."""
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="weft-tests")
    m.ir_version = ir_version(opset)
    return m


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def several_inputs_and_types():
    """A model with three inputs of two element types and outputs of three: `image` FP32
    [N,3,8,8] through a convolution, plus `bias` FP32 [N,4] and `offset` INT64 [N,4] (cast
    to float); outputs `sum` FP32, `half` FP16 (a cast of sum), `code` UINT8 (a cast of
    offset, so offsets in 0..255 come back exactly) and `signed` INT8 (offset - 128)."""
    from onnx import checker
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Cast", ["offset"], ["of"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["f", "bias"], ["s0"]),
        helper.make_node("Add", ["s0", "of"], ["sum"]),
        helper.make_node("Cast", ["sum"], ["half"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["offset"], ["code"], to=TensorProto.UINT8),
        helper.make_node("Sub", ["offset", "c128"], ["centred"]),
        helper.make_node("Cast", ["centred"], ["signed"], to=TensorProto.INT8),
    ]
    g = helper.make_graph(
        nodes,
        "several",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("offset", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["N", 4]),
         helper.make_tensor_value_info("code", TensorProto.UINT8, ["N", 4]),
         helper.make_tensor_value_info("signed", TensorProto.INT8, ["N", 4])],
        [numpy_helper.from_array(rand(rng, 4, 3, 3, 3, scale=0.3), "w"),
         numpy_helper.from_array(np.array(128, np.int64), "c128")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="weft-tests")
    m.ir_version = ir_version(17)
    checker.check_model(m, full_check=True)
    return m
