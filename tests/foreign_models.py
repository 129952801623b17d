"""ResNet ONNX models built with the onnx helper API the way other tools export them,
independently of weft's own exporter:

- `pytorch_style_resnet`: as torch.onnx.export writes torchvision ResNets (opset 17,
  BatchNorm folded into Conv weights and biases, `/layer1/layer1.0/conv1/Conv` node
  names, `onnx::Conv_N` initializers, Flatten + Gemm head, symbolic batch).
- `keras_style_resnet`: as tf2onnx writes Keras models (NHWC input with a leading
  Transpose, SAME padding, ReduceMean over H and W for global pooling, MatMul + Add
  dense head, Softmax).
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnx_build import ir_version

N = helper.make_node


class _Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.counter = 100

    def init(self, arr, name=None):
        if name is None:
            self.counter += 1
            name = f"onnx::Conv_{self.counter}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def conv(self, scope, x, cin, cout, k, stride, pad, gain=1.0):
        """A Conv with BatchNorm already folded: He-scaled weights and a small bias."""
        w = self.rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.sqrt(2.0 / (cin * k * k)) * gain
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        out = f"{scope}/Conv_output_0"
        self.nodes.append(
            N("Conv", [x, self.init(w), self.init(b)], [out], name=f"{scope}/Conv",
              kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, dilations=[1, 1], group=1)
        )
        return out

    def relu(self, scope, x):
        out = f"{scope}/Relu_output_0"
        self.nodes.append(N("Relu", [x], [out], name=f"{scope}/Relu"))
        return out


def pytorch_style_resnet(depth=50, seed=0, num_classes=1000, size=224):
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    bottleneck = depth >= 50
    b = _Builder(seed)
    x = b.conv("/conv1", "input.1", 3, 64, 7, 2, 3)
    x = b.relu("/relu", x)
    b.nodes.append(N("MaxPool", [x], ["/maxpool/MaxPool_output_0"], name="/maxpool/MaxPool",
                     kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=0, dilations=[1, 1]))
    x = "/maxpool/MaxPool_output_0"
    cin = 64
    for stage, (n, width) in enumerate(zip(blocks, [64, 128, 256, 512])):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            s = f"/layer{stage + 1}/layer{stage + 1}.{i}"
            cout = width * 4 if bottleneck else width
            if bottleneck:
                y = b.relu(f"{s}/relu", b.conv(f"{s}/conv1", x, cin, width, 1, 1, 0))
                y = b.relu(f"{s}/relu_1", b.conv(f"{s}/conv2", y, width, width, 3, stride, 1))
                y = b.conv(f"{s}/conv3", y, width, cout, 1, 1, 0, gain=0.5)
            else:
                y = b.relu(f"{s}/relu", b.conv(f"{s}/conv1", x, cin, width, 3, stride, 1))
                y = b.conv(f"{s}/conv2", y, width, width, 3, 1, 1, gain=0.5)
            short = x if stride == 1 and cin == cout else b.conv(f"{s}/downsample/downsample.0", x, cin, cout, 1, stride, 0)
            b.nodes.append(N("Add", [y, short], [f"{s}/Add_output_0"], name=f"{s}/Add"))
            x = b.relu(f"{s}/relu_2", f"{s}/Add_output_0")
            cin = cout
    b.nodes.append(N("GlobalAveragePool", [x], ["/avgpool/GlobalAveragePool_output_0"], name="/avgpool/GlobalAveragePool"))
    b.nodes.append(N("Flatten", ["/avgpool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten", axis=1))
    fc_w = b.init(b.rng.standard_normal((num_classes, cin)).astype(np.float32) / np.sqrt(cin), "fc.weight")
    fc_b = b.init(np.zeros(num_classes, np.float32), "fc.bias")
    b.nodes.append(N("Gemm", ["/Flatten_output_0", fc_w, fc_b], ["495"], name="/fc/Gemm", alpha=1.0, beta=1.0, transB=1))
    g = helper.make_graph(
        b.nodes, "main_graph",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch_size", 3, size, size])],
        [helper.make_tensor_value_info("495", TensorProto.FLOAT, ["batch_size", num_classes])],
        b.inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch", producer_version="2.1.0")
    m.ir_version = ir_version(17)
    return m


def keras_style_resnet(seed=0, size=32, num_classes=10):
    b = _Builder(seed)
    b.nodes.append(N("Transpose", ["input_1"], ["model/conv1/Conv2D__6:0"], name="model/conv1/Conv2D__6", perm=[0, 3, 1, 2]))
    x = "model/conv1/Conv2D__6:0"
    b.inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 2, 2], np.int64), "pads"))
    b.nodes.append(N("Pad", [x, "pads"], ["pad_out"], name="zero_padding2d"))
    x = "pad_out"

    def conv_same(name, x, cin, cout, k, stride, gain=1.0):
        w = b.rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.sqrt(2.0 / (cin * k * k)) * gain
        bias = (b.rng.standard_normal(cout) * 0.05).astype(np.float32)
        out = f"{name}:0"
        b.nodes.append(N("Conv", [x, b.init(w, f"{name}/kernel"), b.init(bias, f"{name}/bias")], [out], name=name,
                         auto_pad="SAME_UPPER", strides=[stride, stride], kernel_shape=[k, k]))
        return out

    x = conv_same("model/conv1/Conv2D", x, 3, 16, 3, 2)
    b.nodes.append(N("Relu", [x], ["relu1:0"], name="model/relu1"))
    x = "relu1:0"
    b.nodes.append(N("MaxPool", [x], ["pool:0"], name="model/pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID"))
    x = "pool:0"
    y = conv_same("model/block/conv_a", x, 16, 16, 3, 1)
    b.nodes.append(N("Relu", [y], ["block_relu:0"], name="model/block/relu"))
    y = conv_same("model/block/conv_b", "block_relu:0", 16, 16, 3, 1, gain=0.5)
    b.nodes.append(N("Add", [y, x], ["block_add:0"], name="model/block/add"))
    b.nodes.append(N("Relu", ["block_add:0"], ["block_out:0"], name="model/block/out"))
    b.nodes.append(N("Transpose", ["block_out:0"], ["nhwc:0"], name="model/to_nhwc", perm=[0, 2, 3, 1]))
    b.nodes.append(N("ReduceMean", ["nhwc:0"], ["gap:0"], name="model/global_average_pooling2d/Mean", axes=[1, 2], keepdims=0))
    dense = b.rng.standard_normal((16, num_classes)).astype(np.float32) / 4.0
    b.nodes.append(N("MatMul", ["gap:0", b.init(dense, "model/dense/MatMul/ReadVariableOp:0")], ["mm:0"], name="model/dense/MatMul"))
    b.nodes.append(N("Add", ["mm:0", b.init(np.linspace(-0.1, 0.1, num_classes), "model/dense/BiasAdd/ReadVariableOp:0")], ["logits:0"], name="model/dense/BiasAdd"))
    b.nodes.append(N("Softmax", ["logits:0"], ["dense"], name="model/dense/Softmax", axis=-1))
    g = helper.make_graph(
        b.nodes, "tf2onnx",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__12", size, size, 3])],
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__13", num_classes])],
        b.inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx", producer_version="1.16.1")
    m.ir_version = ir_version(13)
    return m
