"""ResNet ONNX models built with the onnx helper API the way other tools export them,
independently of weft's own exporter:

- `pytorch_style_resnet`: as torch.onnx.export writes torchvision ResNets (opset 17,
  BatchNorm folded into Conv weights and biases, `/layer1/layer1.0/conv1/Conv` node
  names, `onnx::Conv_N` initializers, Flatten + Gemm head, symbolic batch).
- `keras_style_resnet`: as tf2onnx writes Keras models (NHWC input with a leading
  Transpose, SAME padding, ReduceMean over H and W for global pooling, MatMul + Add
  dense head, Softmax).
- `mobilenet_v2`: torchvision's MobileNetV2 as torch.onnx.export writes it (opset 17,
  BatchNorm folded, ReLU6 as Clip with min/max inputs, depthwise 3x3 convolutions as Conv
  with `group` = channels, inverted residual blocks, GlobalAveragePool + Flatten + Gemm).
- `vgg16`: torchvision's VGG-16 (13 3x3 convolutions with ReLU, five 2x2 max poolings,
  Flatten and three Gemm layers).
- `densenet121`: torchvision's DenseNet-121 as exported (pre-activation BatchNormalization
  and ReLU before each 1x1 convolution, the BatchNorm after it folded, Concat of every
  layer's 32 new channels, transitions with 2x2 average pooling).
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

    def conv_g(self, scope, x, cin, cout, k, stride, group, gain=1.0):
        """A grouped Conv with folded BatchNorm ("same" padding for odd k)."""
        w = self.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
        w *= np.sqrt(2.0 / (cin // group * k * k)) * gain
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        out = f"{scope}/Conv_output_0"
        self.nodes.append(
            N("Conv", [x, self.init(w), self.init(b)], [out], name=f"{scope}/Conv",
              kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=group)
        )
        return out

    def relu6(self, scope, x):
        out = f"{scope}/Clip_output_0"
        lo, hi = self.init(np.float32(0.0), f"{scope}/Constant_output_0"), self.init(np.float32(6.0), f"{scope}/Constant_1_output_0")
        self.nodes.append(N("Clip", [x, lo, hi], [out], name=f"{scope}/Clip"))
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
    return _torch_head(b, x, cin, num_classes, size, "/avgpool/GlobalAveragePool", "fc", "/fc/Gemm",
                       ("input.1", "495", "batch_size"), "2.1.0")


def _torch_head(b, x, cin, num_classes, size, pool, fc, gemm, io, version):
    """GlobalAveragePool + Flatten + Gemm (as torchvision classifiers export), then the
    model: `io` the input, output and batch dimension names."""
    b.nodes.append(N("GlobalAveragePool", [x], [f"{pool}_output_0"], name=pool))
    b.nodes.append(N("Flatten", [f"{pool}_output_0"], ["/Flatten_output_0"], name="/Flatten", axis=1))
    fc_w = b.init(b.rng.standard_normal((num_classes, cin)).astype(np.float32) / np.sqrt(cin), f"{fc}.weight")
    fc_b = b.init(np.zeros(num_classes, np.float32), f"{fc}.bias")
    inp, out, batch = io
    b.nodes.append(N("Gemm", ["/Flatten_output_0", fc_w, fc_b], [out], name=gemm, alpha=1.0, beta=1.0, transB=1))
    return _model(b, size, num_classes, io, version)


def _model(b, size, num_classes, io, version):
    """The builder's nodes as an opset-17 model with a symbolic batch, as torch.onnx writes."""
    inp, out, batch = io
    g = helper.make_graph(
        b.nodes, "main_graph",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, num_classes])],
        b.inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch", producer_version=version)
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


def mobilenet_v2(seed=0, size=224, num_classes=1000, width=1.0):
    """torchvision's MobileNetV2 layout (inverted residuals t, c, n, s), seeded weights."""
    b = _Builder(seed)

    def ch(c):
        return max(8, int(c * width + 4) // 8 * 8)

    x = "input"
    cin = ch(32)
    x = b.relu6("/features/features.0/features.0.2", b.conv_g("/features/features.0/features.0.0", x, 3, cin, 3, 2, 1))
    idx = 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        cout = ch(c)
        for i in range(n):
            scope = f"/features/features.{idx}/conv"
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x
            if t != 1:
                y = b.relu6(f"{scope}/conv.0/conv.0.2", b.conv_g(f"{scope}/conv.0/conv.0.0", y, cin, hidden, 1, 1, 1))
            y = b.relu6(f"{scope}/conv.1/conv.1.2", b.conv_g(f"{scope}/conv.1/conv.1.0", y, hidden, hidden, 3, stride, hidden))
            y = b.conv_g(f"{scope}/conv.2" if t == 1 else f"{scope}/conv.3", y, hidden, cout, 1, 1, 1, gain=0.5)
            if stride == 1 and cin == cout:
                out = f"/features/features.{idx}/Add_output_0"
                b.nodes.append(N("Add", [x, y], [out], name=f"/features/features.{idx}/Add"))
                y = out
            x, cin = y, cout
            idx += 1
    last = ch(1280) if width > 1.0 else 1280
    x = b.relu6(f"/features/features.{idx}/features.{idx}.2", b.conv_g(f"/features/features.{idx}/features.{idx}.0", x, cin, last, 1, 1, 1))
    return _torch_head(b, x, last, num_classes, size, "/GlobalAveragePool", "classifier.1", "/classifier/classifier.1/Gemm",
                       ("input", "output", "batch"), "2.5.1")


def vgg16(seed=0, size=224, num_classes=1000):
    """torchvision's VGG-16 layout, seeded weights (the classifier is 120 M parameters)."""
    b = _Builder(seed)
    x, cin, idx = "input", 3, 0
    for block in [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]:
        for cout in block:
            x = b.relu(f"/features/features.{idx + 1}", b.conv(f"/features/features.{idx}", x, cin, cout, 3, 1, 1))
            cin, idx = cout, idx + 2
        out = f"/features/features.{idx}/MaxPool_output_0"
        b.nodes.append(N("MaxPool", [x], [out], name=f"/features/features.{idx}/MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
        x, idx = out, idx + 1
    b.nodes.append(N("Flatten", [x], ["/Flatten_output_0"], name="/Flatten", axis=1))
    x, k = "/Flatten_output_0", cin * (size // 32) ** 2
    for i, (n_out, last) in enumerate([(4096, False), (4096, False), (num_classes, True)]):
        wt = (b.rng.standard_normal((n_out, k)) * np.sqrt(2.0 / k)).astype(np.float32)
        out = "output" if last else f"/classifier/classifier.{3 * i}/Gemm_output_0"
        b.nodes.append(N("Gemm", [x, b.init(wt, f"classifier.{3 * i}.weight"), b.init(np.zeros(n_out), f"classifier.{3 * i}.bias")],
                         [out], name=f"/classifier/classifier.{3 * i}/Gemm", alpha=1.0, beta=1.0, transB=1))
        x, k = out, n_out
        if not last:
            x = b.relu(f"/classifier/classifier.{3 * i + 1}", x)
    return _model(b, size, num_classes, ("input", "output", "batch"), "2.5.1")


def densenet121(seed=0, size=224, num_classes=1000):
    """torchvision's DenseNet-121 layout (growth 32, blocks 6-12-24-16), seeded weights and
    BatchNorm statistics."""
    b = _Builder(seed)

    def bn(scope, x, c):
        names = []
        for what, v in (("weight", 1.0 + 0.1 * b.rng.standard_normal(c)), ("bias", 0.1 * b.rng.standard_normal(c)),
                        ("running_mean", 0.1 * b.rng.standard_normal(c)), ("running_var", 1.0 + 0.1 * np.abs(b.rng.standard_normal(c)))):
            names.append(b.init(v, f"{scope}.{what}"))
        out = f"{scope}/BatchNormalization_output_0"
        b.nodes.append(N("BatchNormalization", [x, *names], [out], name=f"{scope}/BatchNormalization", epsilon=1e-5))
        return out

    x = b.relu("/features/relu0", b.conv("/features/conv0", "input", 3, 64, 7, 2, 3))
    b.nodes.append(N("MaxPool", [x], ["/features/pool0/MaxPool_output_0"], name="/features/pool0/MaxPool",
                     kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c = "/features/pool0/MaxPool_output_0", 64
    for bi, layers in enumerate([6, 12, 24, 16]):
        feats = [x]
        for li in range(layers):
            scope = f"/features/denseblock{bi + 1}/denselayer{li + 1}"
            cat = feats[0]
            if len(feats) > 1:
                cat = f"{scope}/Concat_output_0"
                b.nodes.append(N("Concat", feats, [cat], name=f"{scope}/Concat", axis=1))
            y = b.relu(f"{scope}/relu1", bn(f"{scope}/norm1", cat, c + 32 * li))
            y = b.relu(f"{scope}/relu2", b.conv(f"{scope}/conv1", y, c + 32 * li, 128, 1, 1, 0))
            feats.append(b.conv(f"{scope}/conv2", y, 128, 32, 3, 1, 1))
        x = f"/features/denseblock{bi + 1}/Concat_output_0"
        b.nodes.append(N("Concat", feats, [x], name=f"/features/denseblock{bi + 1}/Concat", axis=1))
        c += 32 * layers
        if bi < 3:
            scope = f"/features/transition{bi + 1}"
            y = b.conv(f"{scope}/conv", b.relu(f"{scope}/relu", bn(f"{scope}/norm", x, c)), c, c // 2, 1, 1, 0)
            x = f"{scope}/pool/AveragePool_output_0"
            b.nodes.append(N("AveragePool", [y], [x], name=f"{scope}/pool/AveragePool", kernel_shape=[2, 2], strides=[2, 2]))
            c //= 2
    x = b.relu("/features/relu5", bn("/features/norm5", x, c))
    return _torch_head(b, x, c, num_classes, size, "/GlobalAveragePool", "classifier", "/classifier/Gemm",
                       ("input", "output", "batch"), "2.5.1")
