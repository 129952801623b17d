"""Starting and stopping `weft serve` for tests (loopback only, free ports)."""

import gzip
import io
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import numpy as np

FASHION_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, *args, env=None):
        self.grpc_port, self.http_port = free_port(), free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.log = open(os.devnull, "w") if env and env.get("QUIET") else None
        # with --tls-cert the HTTP side speaks TLS too
        args = list(args)
        cert = str(args[args.index("--tls-cert") + 1]) if "--tls-cert" in args else None
        self.scheme = "https" if cert else "http"
        self.ssl = ssl.create_default_context(cafile=cert) if cert else None
        cmd = [str(binary), "serve", *map(str, args), "--host", "127.0.0.1", "--port", str(self.grpc_port), "--http-port", str(self.http_port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weft serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("weft serve did not become ready")

    def http(self, path):
        try:
            with urllib.request.urlopen(f"{self.scheme}://127.0.0.1:{self.http_port}{path}", timeout=5, context=self.ssl) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def metric(self, line_prefix):
        """Sum of the values of metric lines starting with `line_prefix`."""
        _, text = self.http("/metrics")
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(line_prefix))

    def stop(self, timeout=60):
        """SIGTERM, then the exit code and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        assert "panicked" not in err, err
        return self.proc.returncode, err


def fashion_test_images(n=20, classes=(0, 1, 2, 3, 4), seed=0):
    """(uint8 images [n, 28, 28], labels) from the Fashion-MNIST test split."""
    with gzip.open(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    idx = np.flatnonzero(np.isin(y, classes))
    pick = np.random.default_rng(seed).choice(idx, n, replace=False)
    return x[pick], y[pick]


def encode(img, fmt="PNG"):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=95) if fmt == "JPEG" else Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()
