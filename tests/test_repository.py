"""`weft serve --model-repository`: Triton's layout, version policies, hot reload by polling
(a new version takes over and a broken one is refused while clients see no failure), and
Triton's repository API (index, load, unload) through tritonclient over gRPC and HTTP."""

import json
import pathlib
import shutil
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tc
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from server_util import Server

FASHION = pathlib.Path(__file__).resolve().parent.parent / "models" / "fashion" / "fashion_resnet.weft"


def add_version(repo, name, version, package=FASHION):
    d = repo / name / str(version)
    d.mkdir(parents=True)
    shutil.copy(package, d / "model.weft")


class Loop:
    """Clients inferring `model` (no version: the newest ready one) until stopped."""

    def __init__(self, url, model, threads=2):
        self.url, self.model, self.stop_flag = url, model, threading.Event()
        self.ok, self.failures, self.versions = 0, [], set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        c = tc.InferenceServerClient(self.url)
        x = tc.InferInput("input", [1, 1, 28, 28], "FP32")
        x.set_data_from_numpy(np.random.default_rng(0).random((1, 1, 28, 28), np.float32))
        while not self.stop_flag.is_set():
            try:
                r = c.infer(self.model, [x])
                with self.lock:
                    self.ok += 1
                    self.versions.add(r.get_response().model_version)
            except InferenceServerException as e:
                with self.lock:
                    self.failures.append(str(e))
                if len(self.failures) > 100:
                    return

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        return self


def wait_for(what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if what():
            return True
        time.sleep(0.2)
    return False


def test_poll_mode_switches_versions_without_a_failed_request(weft, tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "fashion", 1)
    (repo / "fashion" / "config.pbtxt").write_text(
        '# all of it for weft\nname: "fashion"\nmax_batch_size: 4\n'
        'dynamic_batching { max_queue_delay_microseconds: 300 default_queue_policy { max_queue_size: 16 } }\n'
        'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
        'optimization { input_pinned_memory { enable: true } }\n')
    s = Server(weft, "--model-repository", repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.5", "--quiet")
    try:
        c = tc.InferenceServerClient(s.url)
        cfg = c.get_model_config("fashion").config
        assert cfg.max_batch_size == 4 and cfg.dynamic_batching.max_queue_delay_microseconds == 300
        assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 16
        assert [g.count for g in cfg.instance_group] == [2]
        loop = Loop(s.url, "fashion")
        time.sleep(0.5)
        add_version(repo, "fashion", 2)
        assert wait_for(lambda: list(c.get_model_metadata("fashion").versions) == ["2"]), c.get_model_metadata("fashion")
        time.sleep(0.5)
        # a broken version 3 is refused with its reason; version 2 keeps serving
        (repo / "fashion" / "3").mkdir()
        (repo / "fashion" / "3" / "model.weft").write_bytes(b"not a package")
        index = lambda: {(m.version, m.state): m.reason for m in c.get_model_repository_index().models}  # noqa: E731
        assert wait_for(lambda: "not a weft package" in index().get(("3", "UNAVAILABLE"), "")), index()
        assert ("2", "READY") in index() and ("1", "UNAVAILABLE") in index()
        time.sleep(1.0)
        loop.stop()
        assert loop.failures == [], loop.failures[:3]
        assert loop.ok > 20 and loop.versions == {"1", "2"}, (loop.ok, loop.versions)
        assert c.is_model_ready("fashion", "2") and not c.is_model_ready("fashion", "3")
        # explicit loading is refused in poll mode
        with pytest.raises(InferenceServerException) as e:
            c.unload_model("fashion")
        assert "explicit" in e.value.message()
        # the model directory removed: the model goes
        shutil.rmtree(repo / "fashion")
        assert not c.get_model_repository_index().models

        def gone():
            try:
                c.get_model_metadata("fashion")
                return False
            except InferenceServerException as e:
                return e.status() == "StatusCode.NOT_FOUND"

        assert wait_for(gone)
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_explicit_mode_loads_and_unloads_under_load(weft, tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        add_version(repo, name, 1)
    add_version(repo, "b", 2)
    (repo / "b" / "config.json").write_text('{"version_policy": {"all": {}}}')
    (repo / "empty").mkdir()
    s = Server(weft, "--model-repository", repo, "--model-control-mode", "explicit", "--load-model", "a", "--quiet")
    try:
        g = tc.InferenceServerClient(s.url)
        h = th.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        assert g.is_server_ready() and h.is_server_ready()
        assert "model_repository" in h.get_server_metadata()["extensions"]
        index = {(m["name"], m["version"]): m["state"] for m in h.get_model_repository_index()}
        assert index == {("a", "1"): "READY", ("b", "1"): "UNAVAILABLE", ("b", "2"): "UNAVAILABLE", ("empty", ""): "UNAVAILABLE"}
        loop = Loop(s.url, "a")
        for _ in range(2):
            h.load_model("b")
            assert h.is_model_ready("b", "1") and h.is_model_ready("b", "2")
            assert sorted(h.get_model_metadata("b")["versions"]) == ["1", "2"]
            x = th.InferInput("input", [1, 1, 28, 28], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
            assert h.infer("b", [x], model_version="1").get_response()["model_version"] == "1"
            assert h.infer("b", [x]).get_response()["model_version"] == "2"
            stats = g.get_inference_statistics("b").model_stats
            assert sorted(m.version for m in stats) == ["1", "2"]
            g.unload_model("b")
            assert not h.is_model_ready("b")
        # a load with a config (over gRPC, then REST) reloads the served model with those
        # settings while the loop on it sees no failure
        reload_loop = Loop(s.url, "a")
        g.load_model("a", config=json.dumps({"max_batch_size": 2, "instance_group": [{"count": 2}]}))
        cfg = g.get_model_config("a").config
        assert cfg.max_batch_size == 2 and [i.count for i in cfg.instance_group] == [2]
        h.load_model("a", config=json.dumps({"max_batch_size": 3}))
        assert h.get_model_config("a")["max_batch_size"] == 3
        for bad in ('{"max_batch_size": ', '{"version_policy": {"newest": {}}}'):
            with pytest.raises(InferenceServerException) as e:
                g.load_model("a", config=bad)
            assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "config" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            g.load_model("a", files={"file:1/model.weft": b"x"})
        assert "cannot carry model files" in e.value.message()
        reload_loop.stop()
        loop.stop()
        assert loop.failures == [] and loop.ok > 10, loop.failures[:3]
        assert reload_loop.failures == [] and reload_loop.ok > 5, reload_loop.failures[:3]
        with pytest.raises(InferenceServerException) as e:
            h.load_model("empty")
        assert e.value.status() == "400" and "no version directory" in e.value.message()
        with pytest.raises(InferenceServerException) as e:
            g.load_model("missing")
        assert e.value.status() == "StatusCode.NOT_FOUND"
        req = urllib.request.Request(f"http://127.0.0.1:{s.http_port}/v2/repository/index", data=b'{"ready": true}', method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert [m["name"] for m in json.loads(r.read())] == ["a"]
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_model_flags_still_work_beside_a_repository(weft, tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "r", 7)
    s = Server(weft, "--model", f"m={FASHION}", "--model-repository", repo, "--quiet")
    try:
        c = tc.InferenceServerClient(s.url)
        assert c.is_model_ready("m", "1") and c.is_model_ready("r", "7")
        assert list(c.get_model_metadata("r").versions) == ["7"]
    finally:
        code, err = s.stop()
    assert code == 0, err
    proc = subprocess.run([weft, "serve", "--model-repository", tmp_path / "nope", "--port", "0", "--http-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not a directory" in proc.stderr
    proc = subprocess.run([weft, "serve", "--model-control-mode", "poll", "--port", "0", "--http-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--model-repository" in proc.stderr
