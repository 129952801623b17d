"""`weft serve` with real clients: tritonclient (KServe v2), TensorFlow Serving's own stubs
sending exactly the Brainwave request, perf_analyzer, gRPC health and reflection; bad
input; batching; keys; TLS; data collection; graceful shutdown."""

import concurrent.futures as cf
import gzip
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from server_util import Server, encode, fashion_test_images

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def r8pkg(weft, tmp_path_factory):
    d = tmp_path_factory.mktemp("r8")
    subprocess.run([weft, "zoo", "resnet8", "--seed", "2", "-o", d / "r8.onnx"], check=True, capture_output=True)
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    subprocess.run([weft, "compile", d / "r8.onnx", "--calib", d / "calib.npy", "-o", d / "r8.weft"], check=True, capture_output=True)
    return d / "r8.weft"


@pytest.fixture(scope="module")
def server(weft, r8pkg):
    """The default model plus resnet8, with API keys (two, for rotation)."""
    default = pathlib.Path(__file__).resolve().parent.parent / "models" / "fashion" / "fashion_resnet.weft"
    s = Server(weft, "--model", f"fashion={default}", "--model", f"r8={r8pkg}", "--api-key", KEY, "--api-key", "old-key", "--max-batch", "8", "--max-queue-delay-us", "20000")
    yield s
    code, err = s.stop()
    assert code == 0, err


def client(s):
    return tc.InferenceServerClient(s.url)


H = {"authorization": f"Bearer {KEY}"}


def test_liveness_metadata_and_config(server):
    c = client(server)
    assert c.is_server_live(headers=H) and c.is_server_ready(headers=H)
    assert c.is_model_ready("fashion", headers=H) and c.is_model_ready("r8", headers=H)
    meta = c.get_server_metadata(headers=H)
    assert meta.name == "weft" and "model_configuration" in meta.extensions
    mm = c.get_model_metadata("r8", headers=H)
    assert mm.inputs[0].name == "input" and list(mm.inputs[0].shape) == [-1, 3, 32, 32]
    assert {o.name for o in mm.outputs} == {"logits", "features"}
    cfg = c.get_model_config("fashion", headers=H).config
    assert cfg.max_batch_size == 8 and list(cfg.input[0].dims) == [1, 28, 28]
    assert "Trouser" in cfg.parameters["labels"].string_value
    stats = c.get_inference_statistics("r8", headers=H)
    assert stats.model_stats[0].name == "r8"


def test_fp32_infer_matches_weft_run(server, weft, r8pkg, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client(server).infer("r8", [inp], outputs=[tc.InferRequestedOutput("features")], headers=H)
    got = res.as_numpy("features")
    np.save(tmp_path / "x.npy", x)
    subprocess.run([weft, "run", r8pkg, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--output-name", "features"], check=True, capture_output=True)
    assert np.array_equal(got, np.load(tmp_path / "y.npy"))
    assert res.get_response().model_name == "r8"


def test_images_as_bytes_are_classified(server):
    imgs, labels = fashion_test_images(20)
    c = client(server)
    correct = 0
    for img, label in zip(imgs, labels):
        for fmt in ("PNG", "JPEG"):
            data = np.array([encode(img, fmt)], dtype=np.object_)
            inp = tc.InferInput("input", [1], "BYTES")
            inp.set_data_from_numpy(data)
            probs = c.infer("fashion", [inp], headers=H).as_numpy("logits")
            correct += int(probs.argmax() == label)
    print("correct", correct, "of", 2 * len(labels))
    assert correct >= 0.85 * 2 * len(labels)


def test_brainwave_request_with_tensorflow_serving_stubs(server):
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    imgs, labels = fashion_test_images(6, seed=1)
    ch = grpc.insecure_channel(server.url)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    correct = 0
    for img, label in zip(imgs, labels):
        req = predict_pb2.PredictRequest()  # no model_spec, as the Brainwave client sends it
        req.inputs["Placeholder:0"].CopyFrom(tf.make_tensor_proto([encode(img, "JPEG")], shape=[1]))
        metadata = [("authorization", f"Bearer {KEY}"), ("x-ms-aml-grpc-service-route", "/api/v1/service/fashion")]
        resp, call = stub.Predict.with_call(req, timeout=30, metadata=metadata)
        logits = tf.make_ndarray(resp.outputs["logits"])
        assert logits.shape == (1, 5)
        assert np.array_equal(tf.make_ndarray(resp.outputs["output_alias"]), logits)
        assert any(k == "request_id" for k, _ in call.initial_metadata())
        correct += int(logits.argmax() == label)
    assert correct >= 5
    # the other accepted key forms, and the rotated key
    for auth in (f"bearer {KEY}", KEY, "Bearer old-key"):
        stub.Predict(req, timeout=30, metadata=[("authorization", auth)])
    meta = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]), metadata=[("authorization", KEY)])
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert "input" in sig.inputs and "logits" in sig.outputs and sig.method_name == "tensorflow/serving/predict"


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    ch = grpc.insecure_channel(server.url)
    h = health_pb2_grpc.HealthStub(ch)
    assert h.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert h.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == health_pb2.HealthCheckResponse.SERVING
    db = ProtoReflectionDescriptorDatabase(ch)
    services = set(db.get_services())
    assert {"inference.GRPCInferenceService", "tensorflow.serving.PredictionService", "grpc.health.v1.Health"} <= services


def code_of(fn):
    try:
        fn()
    except InferenceServerException as e:
        return e.status()
    except grpc.RpcError as e:
        return str(e.code())
    return "OK"


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server):
    c = client(server)

    def infer(model, inputs, headers=H):
        return lambda: c.infer(model, inputs, headers=headers)

    def tensor(name, shape, dt, arr):
        i = tc.InferInput(name, shape, dt)
        i.set_data_from_numpy(arr)
        return i

    good = tensor("input", [1, 3, 32, 32], "FP32", np.zeros((1, 3, 32, 32), np.float32))
    corrupt = tensor("input", [1], "BYTES", np.array([b"\xff\xd8\xff\xe0 not really a jpeg"], dtype=np.object_))
    cases = {
        "corrupt image": (infer("fashion", [corrupt]), "StatusCode.INVALID_ARGUMENT"),
        "wrong dtype": (infer("r8", [tensor("input", [1, 3, 32, 32], "INT32", np.zeros((1, 3, 32, 32), np.int32))]), "StatusCode.INVALID_ARGUMENT"),
        "wrong shape": (infer("r8", [tensor("input", [1, 3, 31, 32], "FP32", np.zeros((1, 3, 31, 32), np.float32))]), "StatusCode.INVALID_ARGUMENT"),
        "too large a batch": (infer("r8", [tensor("input", [9, 3, 32, 32], "FP32", np.zeros((9, 3, 32, 32), np.float32))]), "StatusCode.INVALID_ARGUMENT"),
        "no inputs": (infer("r8", []), "StatusCode.INVALID_ARGUMENT"),
        "unknown input": (infer("r8", [tensor("image", [1, 3, 32, 32], "FP32", np.zeros((1, 3, 32, 32), np.float32))]), "StatusCode.INVALID_ARGUMENT"),
        "unknown model": (infer("nope", [good]), "StatusCode.NOT_FOUND"),
        "missing key": (infer("r8", [good], headers={}), "StatusCode.UNAUTHENTICATED"),
        "wrong key": (infer("r8", [good], headers={"authorization": "Bearer wrong"}), "StatusCode.UNAUTHENTICATED"),
    }
    for name, (fn, want) in cases.items():
        assert code_of(fn) == want, name
    assert code_of(infer("r8", [good])) == "OK"
    assert server.metric('weft_requests_total{model="r8",protocol="kserve",status="InvalidArgument"}') >= 4


def test_oversized_message_and_queue_full(weft, r8pkg):
    s = Server(weft, r8pkg, "--max-message-bytes", "100000", "--queue-depth", "1", "--max-batch", "1", "--max-queue-delay-us", "0", "--quiet")
    try:
        c = client(s)
        big = tc.InferInput("input", [16, 3, 32, 32], "FP32")
        big.set_data_from_numpy(np.zeros((16, 3, 32, 32), np.float32))
        assert code_of(lambda: c.infer("r8", [big])) == "StatusCode.RESOURCE_EXHAUSTED"
        one = tc.InferInput("input", [1, 3, 32, 32], "FP32")
        one.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
        with cf.ThreadPoolExecutor(32) as ex:
            codes = list(ex.map(lambda _: code_of(lambda: tc.InferenceServerClient(s.url).infer("r8", [one])), range(200)))
        assert set(codes) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, set(codes)
        assert "OK" in codes
        assert code_of(lambda: c.infer("r8", [one])) == "OK"
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_a_full_queue_is_refused_while_the_device_is_busy(weft, r8pkg):
    """Queue depth 1, batches of 1, and the first batch held in the device for 3 s (the
    fault hook): the first request occupies the device, the second waits in the queue, a
    third is refused with RESOURCE_EXHAUSTED (it fails if the queue never fills), and the
    first two are answered."""
    s = Server(weft, r8pkg, "--queue-depth", "1", "--max-batch", "1", "--max-queue-delay-us", "0", "--quiet",
               env={"WEFT_INJECT_FAULTS": "hang@1:3000"})
    try:
        one = tc.InferInput("input", [1, 3, 32, 32], "FP32")
        one.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
        send = lambda: code_of(lambda: tc.InferenceServerClient(s.url).infer("r8", [one]))  # noqa: E731
        with cf.ThreadPoolExecutor(2) as ex:
            busy = ex.submit(send)
            time.sleep(1.0)        # the worker has taken it and is held in the device
            queued = ex.submit(send)
            time.sleep(0.5)        # it sits in the queue (depth 1)
            assert send() == "StatusCode.RESOURCE_EXHAUSTED"
            assert busy.result() == "OK" and queued.result() == "OK"
        assert s.metric('weft_requests_total{model="r8",protocol="kserve",status="ResourceExhausted"}') >= 1
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_concurrent_requests_are_batched_with_identical_results(weft, r8pkg):
    s = Server(weft, r8pkg, "--max-batch", "8", "--max-queue-delay-us", "50000", "--quiet")
    try:
        xs = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(24)]

        def one(x):
            inp = tc.InferInput("input", [1, 3, 32, 32], "FP32")
            inp.set_data_from_numpy(x)
            return tc.InferenceServerClient(s.url).infer("r8", [inp]).as_numpy("logits")

        alone = [one(x) for x in xs[:4]]
        with cf.ThreadPoolExecutor(12) as ex:
            together = list(ex.map(one, xs))
        for a, t in zip(alone, together):
            assert np.array_equal(a, t)
        batches = s.metric('weft_batch_size_count{model="r8"}')
        singles = s.metric('weft_batch_size_bucket{le="1.0",model="r8"}')
        print("batches", batches, "of size 1:", singles)
        assert batches - singles >= 1, "no batch larger than 1 was formed"
        assert s.metric('weft_requests_total{model="r8",protocol="kserve",status="Ok"}') == 28
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_perf_analyzer_grpc_and_http(weft, r8pkg, tmp_path):
    pa = os.environ.get("PERF_ANALYZER", shutil.which("perf_analyzer") or "")
    assert pa and os.path.exists(pa), "perf_analyzer is required (scripts/setup.sh installs it into .venv-perf)"
    s = Server(weft, r8pkg, "--max-batch", "8", "--quiet")
    try:
        out = tmp_path / "pa.csv"
        env = {**os.environ}
        proc = subprocess.run([pa, "-m", "r8", "-u", s.url, "-i", "grpc", "--concurrency-range", "1:8:7", "--measurement-interval", "2000",
                               # the test checks the wire and the counters, not the machine's steadiness: a
                               # busy machine's latency may not settle within perf_analyzer's default 10%
                               "--stability-percentage", "100", "--max-trials", "20", "-f", str(out)],
                              capture_output=True, text=True, env=env, timeout=600)
        print(proc.stdout[-3000:])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Throughput" in proc.stdout and "error" not in proc.stdout.lower().replace("stderr", "")
        assert s.metric('weft_requests_total{model="r8",protocol="kserve",status="Ok"}') > 10
        assert s.metric('weft_requests_total{model="r8",protocol="kserve",status="InvalidArgument"}') == 0
        # the same over KServe's REST API
        proc = subprocess.run([pa, "-m", "r8", "-u", f"127.0.0.1:{s.http_port}", "-i", "http", "--concurrency-range", "2",
                               "--measurement-interval", "2000", "--stability-percentage", "100", "--max-trials", "20"],
                              capture_output=True, text=True, env=env, timeout=600)
        print(proc.stdout[-2000:])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Throughput" in proc.stdout and "error" not in proc.stdout.lower().replace("stderr", "")
        assert s.metric('weft_requests_total{model="r8",protocol="kserve-rest",status="Ok"}') > 10
        assert s.metric('weft_requests_total{model="r8",protocol="kserve-rest",status="InvalidArgument"}') == 0
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_tls_and_data_collection(weft, r8pkg, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    collect = tmp_path / "collected"
    s = Server(weft, r8pkg, "--tls-cert", cert, "--tls-key", key, "--collect-dir", collect, "--collect-rate", "1",
               "--http-header-timeout", "1", "--quiet")
    try:
        # the HTTP side speaks TLS with the same certificate: REST, probes and metrics
        import ssl
        import tritonclient.http as th
        hc = th.InferenceServerClient(f"localhost:{s.http_port}", ssl=True,
                                      ssl_context_factory=lambda: ssl.create_default_context(cafile=str(cert)))
        hi = th.InferInput("input", [1, 3, 32, 32], "FP32")
        hi.set_data_from_numpy(np.ones((1, 3, 32, 32), np.float32))
        assert hc.infer("r8", [hi]).as_numpy("logits").shape == (1, 10)
        assert s.http("/readyz")[0] == 200 and "weft_requests_total" in s.http("/metrics")[1]
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/readyz", timeout=5)
        # a client that never finishes its headers (or its handshake) is cut off after
        # --http-header-timeout, and the server keeps answering others
        ctx = ssl.create_default_context(cafile=str(cert))
        for handshake in (False, True):
            raw = socket.create_connection(("127.0.0.1", s.http_port), timeout=10)
            conn = ctx.wrap_socket(raw, server_hostname="localhost") if handshake else raw
            if handshake:
                conn.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # no blank line: headers never end
            started = time.time()
            try:
                got = conn.recv(1024)  # the server closes the connection
            except (ConnectionResetError, ssl.SSLError):
                got = b""
            assert time.time() - started < 8 and b"200 OK" not in got, got
            conn.close()
        assert s.http("/readyz")[0] == 200
        c = tc.InferenceServerClient(s.url, ssl=True, root_certificates=str(cert))
        inp = tc.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(np.ones((1, 3, 32, 32), np.float32))
        assert c.infer("r8", [inp]).as_numpy("logits").shape == (1, 10)
        plain = tc.InferenceServerClient(s.url)
        assert code_of(lambda: plain.infer("r8", [inp])) != "OK"
        files = sorted(p.name for p in (collect / "r8").iterdir())
        assert any(f.endswith("_input.npy") for f in files) and any(f.endswith("_logits.npy") for f in files)
        assert np.load(collect / "r8" / next(f for f in files if f.endswith("_input.npy"))).shape == (1, 3, 32, 32)
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_bad_flags_are_refused(weft, tmp_path):
    for args in (["--max-batch", "0"], ["--collect-dir", str(tmp_path), "--collect-rate", "2"], ["nope.weft"], ["--model", "x"], ["--tls-cert", "c.pem"], ["--log-level", "loud"], ["--log-format", "xml"]):
        proc = subprocess.run([weft, "serve", *args, "--port", "0", "--http-port", "0"], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "panicked" not in proc.stderr, (args, proc.stderr)


def test_fp16_and_uint8_request_tensors(server, weft, r8pkg, tmp_path):
    """FP16 request tensors are the floats they hold (the answer equals `weft run` on the
    same values as float32); UINT8 tensors are pixels normalised with the package's spec
    (the answer equals that of the same pixels sent as a PNG)."""
    c = client(server)
    x16 = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float16)
    inp = tc.InferInput("input", list(x16.shape), "FP16")
    inp.set_data_from_numpy(x16)
    got = c.infer("r8", [inp], outputs=[tc.InferRequestedOutput("logits")], headers=H).as_numpy("logits")
    np.save(tmp_path / "x.npy", x16.astype(np.float32))
    subprocess.run([weft, "run", r8pkg, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"], check=True, capture_output=True)
    assert np.array_equal(got, np.load(tmp_path / "y.npy"))
    imgs, _ = fashion_test_images(3, seed=7)
    for img in imgs:
        px = tc.InferInput("input", [1, 1, 28, 28], "UINT8")
        px.set_data_from_numpy(img.reshape(1, 1, 28, 28))
        by_pixels = c.infer("fashion", [px], headers=H).as_numpy("logits")
        png = tc.InferInput("input", [1], "BYTES")
        png.set_data_from_numpy(np.array([encode(img)], dtype=np.object_))
        by_png = c.infer("fashion", [png], headers=H).as_numpy("logits")
        assert np.array_equal(by_pixels, by_png)


def test_weft_client_prints_the_answer(server, weft, tmp_path):
    """`weft client` against a running server: an image (the top classes by name), a .npy
    tensor, a wrong key, and a closed port (an error naming the address after --timeout,
    without sitting out the readiness wait --wait-s)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    dress = root / "models" / "fashion" / "samples" / "13_dress.png"
    out = subprocess.run([weft, "client", "--url", server.url, "--model", "fashion", "--image", dress, "--api-key", KEY],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Dress" in out.stdout.splitlines()[0] + out.stdout, out.stdout
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    out = subprocess.run([weft, "client", "--url", server.url, "--model", "r8", "--input", tmp_path / "x.npy", "--api-key", KEY],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    out = subprocess.run([weft, "client", "--url", server.url, "--model", "fashion", "--image", dress, "--api-key", "wrong"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "error:" in out.stderr
    start = time.monotonic()
    out = subprocess.run([weft, "client", "--url", "127.0.0.1:1", "--timeout", "2", "--wait-s", "600", "--image", dress],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "nothing answers at 127.0.0.1:1" in out.stderr and "--timeout" in out.stderr, out.stderr
    assert time.monotonic() - start < 120  # it gives up, rather than waiting --wait-s


def test_weft_bench_reports_consistent_timings(weft, r8pkg):
    import json

    out = subprocess.run([weft, "bench", r8pkg, "--device", "pocl", "--batch", "2", "--iterations", "5", "--warmup", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["batch"] == 2 and len(r["times_ms"]) == 5 and all(t > 0 for t in r["times_ms"])
    assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert sorted(r["times_ms"])[2] == r["median_ms"]
    assert abs(r["images_per_s"] - 2 / (r["median_ms"] / 1e3)) < 1e-6 * r["images_per_s"]
    assert r["macs"] > 0 and r["gops"] > 0


def test_the_readmes_demo_script_answers_with_the_dress(weft):
    """`bash scripts/demo.sh` (the README's main command) with WEFT_DEMO_EXIT=1: it serves the
    embedded model and its demo call names the sample's class."""
    from server_util import free_port

    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, WEFT_DEMO_EXIT="1", WEFT_PORT=str(free_port()), WEFT_HTTP_PORT=str(free_port()))
    out = subprocess.run(["bash", root / "scripts" / "demo.sh"], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "Dress" in out.stdout, out.stdout


def test_metrics_parse_as_openmetrics(server):
    """/metrics is OpenMetrics text that the Prometheus Python client's parser reads, with
    the request counter and latency histograms per model."""
    import urllib.request

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    assert client(server).is_model_ready("r8", headers=H)
    inp = tc.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    client(server).infer("r8", [inp], headers=H)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["weft_requests"].type == "counter"
    ok = [s for s in families["weft_requests"].samples if s.labels.get("model") == "r8" and s.labels.get("status") == "Ok"]
    assert ok and ok[0].value >= 1
    assert families["weft_request_seconds"].type == "histogram"
    assert {"weft_queue_seconds", "weft_compute_seconds", "weft_batch_size", "weft_in_flight_requests"} <= set(families)


def test_http_endpoints_and_statuses(server):
    """The HTTP side answers HTTP/1.1 with the right status for each path and method."""
    import http.client

    assert server.http("/healthz") == (200, "ok\n")
    # readiness names the device each model version runs on; so do ModelConfig and /metrics
    code, body = server.http("/readyz")
    lines = body.splitlines()
    assert code == 200 and lines[0] == "ready", body
    devices = dict(l.split(": ", 1) for l in lines[1:])
    assert set(devices) == {"fashion 1", "r8 1"} and all("Portable Computing Language" in d for d in devices.values()), body
    cfg = client(server).get_model_config("r8", headers=H).config
    assert cfg.parameters["device"].string_value == devices["r8 1"]
    assert f'weft_device_info{{model="r8",version="1",device="{devices["r8 1"]}"}} 1' in server.http("/metrics")[1]
    assert server.http("/nope")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    # the connection stays usable (keep-alive) for the next request
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert r.status == 200 and b"weft_in_flight_requests" in r.read()
    conn.request("POST", "/healthz", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()


def http_client(s):
    import tritonclient.http as th

    return th.InferenceServerClient(f"127.0.0.1:{s.http_port}")


def test_rest_metadata_health_config_and_stats(server):
    """KServe v2 over HTTP/REST, read by tritonclient.http: the same facts as over gRPC."""
    from tritonclient.utils import InferenceServerException as HttpError

    c = http_client(server)
    assert c.is_server_live(headers=H) and c.is_server_ready(headers=H)
    assert c.is_model_ready("fashion", headers=H) and c.is_model_ready("r8", model_version="1", headers=H)
    assert not c.is_model_ready("r8", model_version="7", headers=H)
    meta = c.get_server_metadata(headers=H)
    assert meta["name"] == "weft" and set(meta["extensions"]) == {"model_configuration", "statistics", "binary_tensor_data"}
    mm = c.get_model_metadata("r8", headers=H)
    g = client(server).get_model_metadata("r8", headers=H)
    assert mm["inputs"] == [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in g.inputs]
    assert mm["outputs"] == [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape)} for o in g.outputs]
    assert mm["platform"] == g.platform and mm["versions"] == ["1"]
    cfg = c.get_model_config("fashion", headers=H)
    assert cfg["max_batch_size"] == 8 and cfg["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}
    assert "Trouser" in cfg["parameters"]["labels"]["string_value"]
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 20000
    stats = c.get_inference_statistics("r8", headers=H)["model_stats"]
    assert [s["name"] for s in stats] == ["r8"] and "success" in stats[0]["inference_stats"]
    assert {s["name"] for s in c.get_inference_statistics(headers=H)["model_stats"]} == {"fashion", "r8"}
    for call, status in ((lambda: http_client(server).get_server_metadata(), "401"),
                         (lambda: c.get_model_metadata("nope", headers=H), "404"),
                         (lambda: c.get_model_config("r8", model_version="2", headers=H), "404")):
        with pytest.raises(HttpError) as e:
            call()
        assert e.value.status() == status, (status, e.value)


def test_rest_infer_gives_the_grpc_answer_bytes(server):
    """The same request over gRPC and over REST (binary tensors, JSON tensors, images as
    BYTES, FP16 and UINT8) gives the same output bytes."""
    import tritonclient.http as th

    c = http_client(server)
    # tritonclient.http writes Inference-Header-Content-Length into the headers dict it is
    # given: each call gets its own
    hh = lambda: dict(H)  # noqa: E731
    x = np.random.default_rng(11).standard_normal((3, 3, 32, 32)).astype(np.float32)
    gi = tc.InferInput("input", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    want = client(server).infer("r8", [gi], headers=H)
    for binary_in in (True, False):
        for binary_out in (True, False):
            hi = th.InferInput("input", list(x.shape), "FP32")
            hi.set_data_from_numpy(x, binary_data=binary_in)
            outs = [th.InferRequestedOutput(n, binary_data=binary_out) for n in ("logits", "features")]
            got = c.infer("r8", [hi], outputs=outs, headers=hh(), request_id="abc")
            for n in ("logits", "features"):
                a, b = want.as_numpy(n), got.as_numpy(n)
                assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes(), (n, binary_in, binary_out)
            assert got.get_response()["id"] == "abc" and got.get_response()["model_version"] == "1"
    # compressed requests and responses, as tritonclient sends and asks for them
    for request_coding in (None, "gzip", "deflate"):
        for response_coding in (None, "gzip", "deflate"):
            got = c.infer("r8", [hi], headers=hh(), request_compression_algorithm=request_coding,
                          response_compression_algorithm=response_coding)
            assert got.as_numpy("features").tobytes() == want.as_numpy("features").tobytes(), (request_coding, response_coding)
    # no outputs named: all of them, as binary data (tritonclient asks binary_data_output)
    got = c.infer("r8", [hi], headers=hh(), model_version="1")
    assert got.as_numpy("logits").tobytes() == want.as_numpy("logits").tobytes()
    # images as BYTES, FP16 and UINT8 tensors
    imgs, _ = fashion_test_images(2)
    data = np.array([encode(i, "PNG") for i in imgs], dtype=np.object_)
    u8 = np.stack([np.asarray(i, np.uint8)[None] for i in imgs])
    for dt, arr in (("BYTES", data), ("FP16", (u8 / 255.0).astype(np.float16)), ("UINT8", u8)):
        gi = tc.InferInput("input", list(arr.shape), dt)
        gi.set_data_from_numpy(arr)
        a = client(server).infer("fashion", [gi], headers=H).as_numpy("logits")
        # encoded images are not UTF-8, so JSON cannot carry them: BYTES go as binary data
        for binary in (True,) if dt == "BYTES" else (True, False):
            hi = th.InferInput("input", list(arr.shape), dt)
            hi.set_data_from_numpy(arr, binary_data=binary)
            b = c.infer("fashion", [hi], headers=hh()).as_numpy("logits")
            assert a.tobytes() == b.tobytes(), (dt, binary)


def test_rest_bad_requests_get_http_statuses_and_the_server_keeps_serving(server):
    import urllib.request

    def post(path, body, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=body, method="POST",
                                     headers={"authorization": f"Bearer {KEY}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    ok = b'{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"FP32","data":[' + b",".join([b"0"] * 3072) + b"]}]}"
    status, body, headers = post("/v2/models/r8/infer", ok)
    assert status == 200 and json.loads(body)["outputs"][0]["shape"][0] == 1 and headers["request-id"]
    cases = [
        ("/v2/models/r8/infer", b"not json", {}, 400),
        ("/v2/models/r8/infer", b'{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"FP32","data":[1,2]}]}', {}, 400),
        ("/v2/models/r8/infer", b'{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":["not an image"]}]}', {}, 400),
        ("/v2/models/r8/infer", ok, {"Inference-Header-Content-Length": "999999"}, 400),
        ("/v2/models/r8/infer", ok, {"Inference-Header-Content-Length": "x"}, 400),
        ("/v2/models/r8/infer", ok, {"Content-Encoding": "gzip"}, 400),
        ("/v2/models/r8/infer", ok, {"Content-Encoding": "br"}, 400),
        # a gzip bomb: 80 MB of zeros in 80 kB, past the server's 64 MiB message limit once inflated
        ("/v2/models/r8/infer", gzip.compress(b"\0" * (80 << 20)), {"Content-Encoding": "gzip"}, 400),
        ("/v2/models/nope/infer", ok, {}, 404),
        ("/v2/models/r8/versions/3/infer", ok, {}, 404),
        ("/v2/models/r8/infer", ok, {"authorization": "Bearer wrong"}, 401),
    ]
    for path, body, headers, want in cases:
        status, text, h = post(path, body, headers)
        assert status == want, (path, headers, status, text)
        assert "error" in json.loads(text) and h["request-id"], text
        if len(body) > 50_000 and headers.get("Content-Encoding") == "gzip":
            assert "decompresses to more than the server's limit" in json.loads(text)["error"]
    assert post("/v2/models/r8/infer", ok)[0] == 200


def test_statistics_report_each_phase_and_batch_sizes(server):
    """ModelStatistics: non-zero compute_input, compute_infer and compute_output, counted once
    per successful request, and batch_stats whose executions add up to execution_count; the
    REST API reports the same."""
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with cf.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: client(server).infer("r8", [inp], headers=H), range(24)))
    s = client(server).get_inference_statistics("r8", headers=H, as_json=True)["model_stats"][0]
    i = s["inference_stats"]
    success = int(i["success"]["count"])
    assert success >= 24
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(i[phase]["count"]) == success and int(i[phase]["ns"]) > 0, (phase, i[phase])
    batches = s["batch_stats"]
    assert batches and all(1 <= int(b["batch_size"]) <= 8 * 2 for b in batches), batches
    assert sum(int(b["compute_infer"]["count"]) for b in batches) == int(s["execution_count"])
    assert all(int(b["compute_infer"]["ns"]) > 0 and int(b["compute_input"]["ns"]) > 0 for b in batches)
    rest = http_client(server).get_inference_statistics("r8", headers=dict(H))["model_stats"][0]
    assert int(rest["inference_stats"]["compute_infer"]["count"]) >= success
    assert {b["batch_size"] for b in rest["batch_stats"]} >= {int(b["batch_size"]) for b in batches}


def several_inputs_feeds(rng, n):
    return {"image": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
            "bias": rng.standard_normal((n, 4)).astype(np.float32),
            "offset": rng.integers(0, 256, (n, 4)).astype(np.int64)}


def test_several_inputs_and_typed_outputs(weft, tmp_path):
    """A model with FP32 and INT64 inputs and FP32, FP16, UINT8 and INT8 outputs, over gRPC, REST
    (JSON and binary) and TF Serving's Predict: onnxruntime's answers in the model's own
    types; concurrent requests batched together each get their own rows; a missing input, a
    wrong datatype and disagreeing batch sizes are refused by name."""
    import onnx
    import onnxruntime as ort
    import tritonclient.http as th
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    import onnx_build

    onnx.save(onnx_build.several_inputs_and_types(), tmp_path / "several.onnx")
    subprocess.run([weft, "compile", tmp_path / "several.onnx", "--precision", "f32", "-o", tmp_path / "several.weft"], check=True, capture_output=True)
    ref = ort.InferenceSession(str(tmp_path / "several.onnx"))
    s = Server(weft, "--model", f"several={tmp_path / 'several.weft'}", "--max-batch", "8", "--max-queue-delay-us", "50000")
    try:
        c, hc = tc.InferenceServerClient(s.url), th.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        meta = c.get_model_metadata("several", as_json=True)
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
            ("image", "FP32", ["-1", "3", "8", "8"]), ("bias", "FP32", ["-1", "4"]), ("offset", "INT64", ["-1", "4"])]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("sum", "FP32"), ("half", "FP16"), ("code", "UINT8"), ("signed", "INT8")]
        types = {i["name"]: i["data_type"] for i in c.get_model_config("several", as_json=True)["config"]["input"]}
        assert types == {"image": "TYPE_FP32", "bias": "TYPE_FP32", "offset": "TYPE_INT64"}

        def grpc_inputs(x, order=("offset", "image", "bias")):
            out = []
            for k in order:  # any order: inputs are matched by name
                i = tc.InferInput(k, list(x[k].shape), "INT64" if k == "offset" else "FP32")
                i.set_data_from_numpy(x[k])
                out.append(i)
            return out

        def check(got, x):
            want = dict(zip(["sum", "half", "code", "signed"], ref.run(None, x)))
            assert got("half").dtype == np.float16 and got("code").dtype == np.uint8 and got("signed").dtype == np.int8
            assert np.array_equal(got("signed"), want["signed"])
            assert np.allclose(got("sum"), want["sum"], atol=1e-5)
            assert np.allclose(got("half").astype(np.float32), want["half"].astype(np.float32), atol=2e-3)
            assert np.array_equal(got("code"), want["code"])

        rng = np.random.default_rng(7)
        x = several_inputs_feeds(rng, 3)
        r = c.infer("several", grpc_inputs(x))
        check(r.as_numpy, x)
        # REST, binary and JSON tensors: the gRPC answer's bytes
        for binary in (True, False):
            ins = []
            for k in ("image", "bias", "offset"):
                i = th.InferInput(k, list(x[k].shape), "INT64" if k == "offset" else "FP32")
                i.set_data_from_numpy(x[k], binary_data=binary)
                ins.append(i)
            outs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("sum", "half", "code", "signed")]
            hr = hc.infer("several", ins, outputs=outs)
            for n in ("sum", "half", "code", "signed"):
                assert hr.as_numpy(n).dtype == r.as_numpy(n).dtype
                assert hr.as_numpy(n).tobytes() == r.as_numpy(n).tobytes(), (binary, n)
        # concurrent requests of different sizes, batched together, each get their own rows
        xs = [several_inputs_feeds(rng, n) for n in (1, 2, 3, 1, 2)]
        with cf.ThreadPoolExecutor(5) as pool:
            rs = list(pool.map(lambda xi: tc.InferenceServerClient(s.url).infer("several", grpc_inputs(xi)), xs))
        for xi, ri in zip(xs, rs):
            check(ri.as_numpy, xi)
        # TF Serving's Predict, each input under its own key, outputs in their own types
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(s.url))
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "several"
        for k, v in x.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        resp = stub.Predict(req, timeout=30)
        check(lambda n: tf.make_ndarray(resp.outputs[n]), x)
        # refused by name, and the server keeps serving
        bad_cases = {
            "input 'bias' is missing": grpc_inputs(x, ("offset", "image")) + [grpc_inputs(x, ("offset",))[0]],
            "takes 3 inputs": grpc_inputs(x, ("offset", "image")),
        }
        wrong = grpc_inputs(x, ("image", "bias"))
        f = tc.InferInput("offset", [3, 4], "FP32")
        f.set_data_from_numpy(x["offset"].astype(np.float32))
        bad_cases["datatype FP32 is not accepted for input 'offset' (INT64)"] = wrong + [f]
        y = several_inputs_feeds(rng, 2)
        bad_cases["inputs disagree on the batch size"] = grpc_inputs(x, ("image", "bias")) + grpc_inputs(y, ("offset",))
        for want, inputs in bad_cases.items():
            with pytest.raises(InferenceServerException) as e:
                c.infer("several", inputs)
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and want in e.value.message(), (want, e.value.message())
        check(c.infer("several", grpc_inputs(x)).as_numpy, x)
        # weft client, one --input NAME=X.npy per input; an INT64 .npy goes as INT64
        for k, v in x.items():
            np.save(tmp_path / f"{k}.npy", v)
        out = subprocess.run([weft, "client", "--url", s.url, "--output-name", "code",
                              *[a for k in x for a in ("--input", f"{k}={tmp_path / (k + '.npy')}")]],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "output 'code' [3, 4]" in out.stdout, out.stderr
        out = subprocess.run([weft, "client", "--url", s.url, "--input", tmp_path / "image.npy"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "give --input NAME=X.npy for each" in out.stderr
    finally:
        code, err = s.stop()
    assert code == 0, err


def logits_of(url, model, x):
    """One FP32 request on a fresh connection: the model's logits."""
    i = tc.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return tc.InferenceServerClient(url).infer(model, [i]).as_numpy("logits")


def test_instances_share_one_queue(weft):
    """--instance-count 3: three engines and worker threads take batches from one queue;
    concurrent requests all answer with the single-request bytes, and the statistics add up."""
    default = pathlib.Path(__file__).resolve().parent.parent / "models" / "fashion" / "fashion_resnet.weft"
    s = Server(weft, "--model", f"fashion={default}", "--instance-count", "3", "--max-batch", "4", "--quiet")
    try:
        c = client(s)
        cfg = c.get_model_config("fashion").config
        assert [g.count for g in cfg.instance_group] == [3]
        threads = {pathlib.Path(f"/proc/{s.proc.pid}/task/{t}/comm").read_text().strip()
                   for t in os.listdir(f"/proc/{s.proc.pid}/task")}
        assert {"weft-fashion-0", "weft-fashion-1", "weft-fashion-2"} <= threads, threads
        xs = [np.random.default_rng(i).standard_normal((1, 1, 28, 28)).astype(np.float32) for i in range(12)]
        infer = lambda x: logits_of(s.url, "fashion", x)  # noqa: E731

        alone = [infer(x) for x in xs]
        with cf.ThreadPoolExecutor(12) as pool:
            together = list(pool.map(infer, xs * 4))
        for k, got in enumerate(together):
            assert got.tobytes() == alone[k % 12].tobytes()
        st = c.get_inference_statistics("fashion").model_stats[0]
        assert st.inference_stats.success.count == 60
        assert sum(b.compute_infer.count for b in st.batch_stats) == st.execution_count
        assert sum(b.batch_size * b.compute_infer.count for b in st.batch_stats) == 60
        with pytest.raises(subprocess.CalledProcessError):
            subprocess.run([weft, "serve", "--instance-count", "0"], check=True, capture_output=True, timeout=30)
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_fixed_batch_models_compile_and_serve_without_joining(weft, tmp_path):
    """A model exported with its batch dimension fixed at 1 calibrates in batches of 1 (the
    last filled up), warns below 32 samples, and is served one request per batch: concurrent
    requests all answer, a batch of 2 is refused by name, and no device failure is counted."""
    import onnx
    subprocess.run([weft, "zoo", "resnet8", "--seed", "1", "-o", tmp_path / "r8.onnx"], check=True, capture_output=True)
    m = onnx.load(tmp_path / "r8.onnx")
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    onnx.save(m, tmp_path / "r8_b1.onnx")
    rng = np.random.default_rng(0)
    for n in (37, 5):
        np.save(tmp_path / f"cal{n}.npy", rng.standard_normal((n, 3, 32, 32)).astype(np.float32))
    out = subprocess.run([weft, "compile", tmp_path / "r8_b1.onnx", "--calib", tmp_path / "cal37.npy", "-o", tmp_path / "b1.weft"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "fixed at 1" in out.stderr and "warning" not in out.stderr, out.stderr
    few = subprocess.run([weft, "compile", tmp_path / "r8_b1.onnx", "--calib", tmp_path / "cal5.npy", "-o", tmp_path / "b1s.weft"],
                         capture_output=True, text=True)
    assert few.returncode == 0 and "5 calibration sample(s); 32 or more" in few.stderr, few.stderr
    s = Server(weft, "--model", f"b1={tmp_path / 'b1.weft'}", "--max-batch", "8", "--max-queue-delay-us", "20000")
    try:
        xs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(16)]
        infer = lambda x: logits_of(s.url, "b1", x)  # noqa: E731

        alone = [infer(x) for x in xs]
        with cf.ThreadPoolExecutor(8) as pool:
            together = list(pool.map(infer, xs))
        assert all(a.tobytes() == b.tobytes() for a, b in zip(alone, together))
        with pytest.raises(InferenceServerException) as e:
            infer(np.zeros((2, 3, 32, 32), np.float32))
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "fixed at 1" in e.value.message()
        assert tc.InferenceServerClient(s.url).get_model_config("b1").config.max_batch_size == 1
        assert s.metric("weft_device_failures_total") == 0
    finally:
        code, err = s.stop()
    assert code == 0, err
