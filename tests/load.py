"""Load for a running `weft serve` (loopback): N concurrent tritonclient clients send a fixed
number of requests, mixing raw FP32 tensors and PNG images as BYTES, and the report gives
throughput, p50/p99 latency, errors by status and the server's resident memory before and
after.

    .venv/bin/python tests/load.py --url 127.0.0.1:50051 --model fashion --requests 2000 --concurrency 32 [--pid PID]

Used by tests/test_reliability.py for the short CI version.
"""

import argparse
import io
import json
import threading
import time
from collections import Counter

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def png(seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def run(url, model, requests, concurrency, pid=None, headers=None, input_shape=None):
    client0 = tc.InferenceServerClient(url)
    meta = client0.get_model_metadata(model, headers=headers or {})
    inp = meta.inputs[0]
    shape = input_shape or [1] + [int(d) for d in inp.shape[1:]]
    tensor = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    images = [png(i) for i in range(8)]
    before = rss_kib(pid) if pid else None
    latencies, statuses = [], Counter()
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(wid):
        c = tc.InferenceServerClient(url)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if i % 2 == 0:
                x = tc.InferInput(inp.name, shape, "FP32")
                x.set_data_from_numpy(tensor)
            else:
                x = tc.InferInput(inp.name, [1], "BYTES")
                x.set_data_from_numpy(np.array([images[i % len(images)]], dtype=np.object_))
            t = time.perf_counter()
            try:
                c.infer(model, [x], headers=headers or {})
                status = "OK"
            except InferenceServerException as e:
                status = str(e.status())
            dt = (time.perf_counter() - t) * 1e3
            with lock:
                latencies.append(dt)
                statuses[status] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = rss_kib(pid) if pid else None
    lat = np.array(latencies)
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "seconds": wall,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "statuses": dict(statuses),
        "rss_before_kib": before,
        "rss_after_kib": after,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="127.0.0.1:50051")
    ap.add_argument("--model", default="fashion")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--pid", type=int, help="server process id, for its resident memory")
    ap.add_argument("--api-key")
    a = ap.parse_args()
    headers = {"authorization": f"Bearer {a.api_key}"} if a.api_key else None
    print(json.dumps(run(a.url, a.model, a.requests, a.concurrency, a.pid, headers), indent=2))


if __name__ == "__main__":
    main()
