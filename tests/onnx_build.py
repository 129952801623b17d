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
