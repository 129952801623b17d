"""onnxruntime's static quantization (the peer's int8 models) for tests and benchmarks."""

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


class _Reader(CalibrationDataReader):
    def __init__(self, name, batches):
        self.it = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def quantize(src, dst, calib, fmt="qdq", input_name="input", tmp=None, reduce_range=False):
    """Per-channel int8 weights, uint8 activations, calibrated on `calib` [N, ...].

    `reduce_range` quantizes the weights to 7 bits. onnxruntime's own int8 convolutions on
    x86 CPUs without VNNI multiply u8 by s8 pairwise into 16 bits and saturate there
    (VPMADDUBSW); with 7-bit weights no pair can overflow, so its answers are the exact
    integer arithmetic the model specifies on every machine, which is what a comparison
    with weft needs."""
    pre = str(dst) + ".pre.onnx"
    quant_pre_process(str(src), pre, skip_symbolic_shape=True)
    quantize_static(
        pre, str(dst), _Reader(input_name, [calib[i:i + 1] for i in range(len(calib))]),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )


def output_step(path, output):
    """The quantization step (scale) of a graph output produced by DequantizeLinear."""
    m = onnx.load(path)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if output in n.output and n.op_type == "DequantizeLinear":
            return float(inits[n.input[1]])
    raise KeyError(output)
