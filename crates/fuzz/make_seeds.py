"""Writes the fuzz targets' seed inputs (small valid examples of each format) into seeds/.

    .venv/bin/python crates/fuzz/make_seeds.py [--weft target/release/weft]
"""

import argparse
import io
import pathlib
import struct
import subprocess
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
import tritonclient.grpc.service_pb2 as pb

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def tiny_onnx():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def image(fmt):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 28), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", default=str(ROOT / "target" / "release" / "weft"))
    a = ap.parse_args()
    model = tiny_onnx()
    (HERE / "seeds/onnx_import/tiny_conv.onnx").write_bytes(model.SerializeToString())
    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d) / "tiny.onnx"
        onnx.save(model, src)
        out = HERE / "seeds/package_load/tiny_f32.weft"
        subprocess.run([a.weft, "compile", src, "--precision", "f32", "-o", out], check=True, capture_output=True)
        # the package_body target appends the checksum itself
        (HERE / "seeds/package_body/tiny_f32.body").write_bytes(out.read_bytes()[:-32])
    (HERE / "seeds/image_decode/noise.png").write_bytes(image("PNG"))
    (HERE / "seeds/image_decode/noise.jpg").write_bytes(image("JPEG"))
    r = pb.ModelInferRequest(model_name="fashion")
    t = r.inputs.add()
    t.name, t.datatype = "input", "FP32"
    t.shape.extend([1, 1, 28, 28])
    r.raw_input_contents.append(np.zeros(784, np.float32).tobytes())
    (HERE / "seeds/infer_request/fp32.bin").write_bytes(r.SerializeToString())
    r = pb.ModelInferRequest(model_name="fashion")
    t = r.inputs.add()
    t.name, t.datatype = "input", "BYTES"
    t.shape.extend([1])
    png = image("PNG")
    r.raw_input_contents.append(struct.pack("<I", len(png)) + png)
    (HERE / "seeds/infer_request/png_bytes.bin").write_bytes(r.SerializeToString())


if __name__ == "__main__":
    main()
