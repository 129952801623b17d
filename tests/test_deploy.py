"""Deployers, checked by real tools: AKS manifests by kubernetes-validate (strict), the ACI
container group by the ARM schema, the IoT Edge manifest by its JSON schema, the
Dockerfile by a Dockerfile parser, and the OCI image by skopeo and podman, with a
tritonclient inference against the running container."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
import tritonclient.grpc as tc
import yaml
from dockerfile_parse import DockerfileParser
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from server_util import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = pathlib.Path(os.environ.get("WEFT_SCHEMAS_DIR", ROOT / "tests" / "schemas"))
FASHION = ROOT / "models" / "fashion"
SAMPLE = FASHION / "samples" / "13_dress.png"
K8S_VERSIONS = ["1.30.0", "1.33.0"]


@pytest.fixture
def pkg(tmp_path):
    p = tmp_path / "fashion.weft"
    shutil.copy(FASHION / "fashion_resnet.weft", p)
    return p


def schema(name):
    path = SCHEMAS / name
    assert path.is_file(), f"schema {path} is missing (set WEFT_SCHEMAS_DIR)"
    return json.loads(path.read_text())


def k8s_validate(files, version):
    exe = shutil.which("kubernetes-validate", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("kubernetes-validate")
    assert exe, "kubernetes-validate is required (tests/requirements.txt)"
    proc = subprocess.run([exe, "--strict", "-k", version, *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def objects(out):
    return {f.name: yaml.safe_load(f.read_text()) for f in sorted(out.glob("*.yaml"))}


def test_aks_autoscaled_with_fpga_passes_kubernetes_validate(w, pkg):
    out = w.tmp / "aks"
    r = w("deploy", "aks", pkg, "--image", "example.azurecr.io/weft/fashion:1", "--namespace", "inference",
          "--min-replicas", "2", "--max-replicas", "6", "--target-cpu-percent", "60", "--cpu", "1500m",
          "--memory", "3Gi", "--fpga-resource", "microsoft.com/fpga_catapult=1",
          "--node-selector", "kubernetes.azure.com/accelerator=fpga", "--out", out)
    assert "generated an API key" in r.stdout and "kubectl apply -k" in r.stdout
    docs = objects(out)
    manifests = [out / f for f in docs if f != "kustomization.yaml"]
    for v in K8S_VERSIONS:
        k8s_validate(manifests, v)
    kinds = {d["kind"] for d in docs.values()}
    assert kinds == {"Namespace", "Secret", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "Kustomization"}
    assert sorted(docs["kustomization.yaml"]["resources"]) == sorted(f.name for f in manifests)
    dep = docs["deployment.yaml"]
    assert "replicas" not in dep["spec"]  # left to the autoscaler
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["livenessProbe"]["grpc"]["port"] == 50051 and c["readinessProbe"]["grpc"]["port"] == 50051
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert c["resources"]["limits"]["microsoft.com/fpga_catapult"] == "1"
    assert pod["nodeSelector"] == {"kubernetes.azure.com/accelerator": "fpga"}
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert {p["name"] for p in c["ports"]} == {"grpc", "http"}
    svc = docs["service.yaml"]
    assert [p["appProtocol"] for p in svc["spec"]["ports"]] == ["grpc", "http"]
    assert docs["service-headless.yaml"]["spec"]["clusterIP"] == "None"
    hpa = docs["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    # the key is in the Secret only, and the Secret file is private
    key = docs["secret.yaml"]["stringData"]["api-keys"]
    assert len(key) >= 32 and key not in (out / "deployment.yaml").read_text()
    assert (out / "secret.yaml").stat().st_mode & 0o077 == 0


def test_aks_fixed_replicas_without_auth(w, pkg):
    out = w.tmp / "aks"
    w("deploy", "aks", pkg, "--image", "weft/fashion:1", "--replicas", "3", "--no-auth", "--service-type", "LoadBalancer",
      "--serve-arg=--max-image-pixels=1000000", "--out", out)
    docs = objects(out)
    k8s_validate([out / f for f in docs if f != "kustomization.yaml"], K8S_VERSIONS[-1])
    assert docs["deployment.yaml"]["spec"]["replicas"] == 3
    assert "hpa.yaml" not in docs and "secret.yaml" not in docs
    assert "--max-image-pixels=1000000" in docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["args"]


def aci_validator():
    aci = schema("Microsoft.ContainerInstance.2025-09-01.json")
    common = schema("arm-common-definitions.json")
    # The generated schema types cpu and memoryInGB as integer; ACI takes fractions.
    for d in ("ResourceRequests", "ResourceLimits"):
        for field in ("cpu", "memoryInGB"):
            for alt in aci["definitions"][d]["properties"][field]["oneOf"]:
                if alt.get("type") == "integer":
                    alt["type"] = "number"
    registry = Registry().with_resources([
        (aci["id"].rstrip("#"), Resource.from_contents(aci, default_specification=DRAFT4)),
        ("https://schema.management.azure.com/schemas/common/definitions.json",
         Resource.from_contents(common, default_specification=DRAFT4)),
    ])
    root = {"$ref": aci["id"].rstrip("#") + "#/resourceDefinitions/containerGroups"}
    return jsonschema.Draft4Validator(root, registry=registry)


def test_aci_yaml_validates_against_the_arm_schema(w, pkg, monkeypatch):
    out = w.tmp / "aci"
    monkeypatch.setenv("WEFT_TEST_KEY", "k-123")
    r = w("deploy", "aci", pkg, "--image", "example.azurecr.io/weft/fashion:1", "--cpu", "0.5", "--memory-gb", "1.5",
          "--dns-label", "weft-fashion-demo", "--api-key-env", "WEFT_TEST_KEY", "--port", "50051", "--http-port", "8080",
          "--out", out)
    assert "az container create --resource-group RG --file" in r.stdout
    doc = yaml.safe_load((out / "aci.yaml").read_text())
    errors = sorted(aci_validator().iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message for e in errors[:5])
    c = doc["properties"]["containers"][0]["properties"]
    assert c["environmentVariables"] == [{"name": "WEFT_API_KEYS", "secureValue": "k-123"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["port"] for p in doc["properties"]["ipAddress"]["ports"]} == {50051, 8080}
    assert doc["properties"]["ipAddress"]["dnsNameLabel"] == "weft-fashion-demo"
    assert c["resources"]["requests"] == {"cpu": 0.5, "memoryInGB": 1.5}
    # a whole CPU count is an integer, so even the schema's strict typing holds; without
    # --api-key-env a key is generated (the same rule on every target), and said
    r = w("deploy", "aci", pkg, "--image", "weft/fashion:1", "--cpu", "2", "--memory-gb", "4", "--out", out)
    assert "auth: generated an API key" in r.stdout
    doc = yaml.safe_load((out / "aci.yaml").read_text())
    env = doc["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert env[0]["name"] == "WEFT_API_KEYS" and re.fullmatch(r"[0-9a-f]{48}", env[0]["secureValue"])
    assert doc["properties"]["containers"][0]["properties"]["resources"]["requests"] == {"cpu": 2, "memoryInGB": 4}
    assert not list(aci_validator().iter_errors(doc))


def test_edge_manifest_validates_and_create_options_parse(w, pkg):
    out = w.tmp / "edge"
    w("deploy", "edge", pkg, "--image", "example.azurecr.io/weft/fashion:1", "--device-node", "/dev/fpga0",
      "--device-node", "/dev/dri/renderD128", "--out", out)
    doc = json.loads((out / "deployment.json").read_text())
    jsonschema.Draft4Validator(schema("azure-iot-edge-deployment-2.0.json")).validate(doc)
    agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] == "1.1"
    settings = agent["modules"]["weft"]["settings"]
    keys = sorted(k for k in settings if k.startswith("createOptions"))
    assert keys[0] == "createOptions" and len(keys) >= 2, keys  # long enough to be split
    assert all(len(settings[k]) <= 512 for k in keys)
    opts = json.loads("".join(settings[k] for k in keys))
    assert opts["HostConfig"]["PortBindings"]["50051/tcp"] == [{"HostPort": "50051"}]
    assert [d["PathOnHost"] for d in opts["HostConfig"]["Devices"]] == ["/dev/fpga0", "/dev/dri/renderD128"]
    for m in agent["systemModules"].values():
        json.loads(m["settings"]["createOptions"])
    assert doc["modulesContent"]["$edgeHub"]["properties.desired"]["storeAndForwardConfiguration"]["timeToLiveSecs"] == 7200
    # a key is generated unless one is given; without one, ports are published only when asked
    assert re.fullmatch(r"[0-9a-f]{48}", agent["modules"]["weft"]["env"]["WEFT_API_KEYS"]["value"])
    refused = w("deploy", "edge", pkg, "--image", "weft/fashion:1", "--no-auth", "--out", out, check=False)
    assert refused.returncode != 0 and "--no-publish" in refused.stderr
    r = w("deploy", "edge", pkg, "--image", "weft/fashion:1", "--no-auth", "--no-publish", "--out", out)
    assert "auth: none (--no-auth)" in r.stdout and "not published" in r.stdout
    doc = json.loads((out / "deployment.json").read_text())
    assert "env" not in doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["weft"]
    jsonschema.Draft4Validator(schema("azure-iot-edge-deployment-2.0.json")).validate(doc)


@pytest.mark.parametrize("args,message", [
    (["aks", "--replicas", "1.5"], "--replicas"),
    (["aks", "--fpga-resource", "fpga=1"], "extended resource"),
    (["aks", "--fpga-resource", "microsoft.com/fpga_catapult=0.5"], "whole number"),
    (["aks", "--namespace", "Bad_NS"], "DNS label"),
    (["aks", "--cpu", "two"], "CPU quantity"),
    (["aks", "--min-replicas", "5", "--max-replicas", "2"], "--min-replicas"),
    (["aks", "--node-selector", "novalue"], "KEY=VALUE"),
    (["aci", "--dns-label=-bad-"], "DNS label"),
    (["aci", "--port", "70000"], "--port"),
    (["aci", "--port", "0"], "--port"),
    (["aci", "--http-port", "50051"], "must differ"),
    (["aci", "--cpu", "0.125"], "--cpu"),
    (["aci", "--api-key-env", "WEFT_SURELY_UNSET_VAR"], "not set"),
    (["edge", "--device-node", "fpga0"], "/dev/"),
    (["edge", "--name", "UPPER"], "DNS label"),
])
def test_bad_flags_are_refused_before_anything_is_written(w, pkg, args, message):
    out = w.tmp / "never"
    target, *rest = args
    proc = w("deploy", target, pkg, "--image", "weft/fashion:1", *rest, "--out", out, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert not out.exists()


def test_not_a_package_is_a_clear_error(w):
    bad = w.tmp / "bad.weft"
    bad.write_bytes(b"nonsense")
    proc = w("deploy", "aci", bad, "--image", "weft/x:1", "--out", w.tmp / "o", check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr and "bad.weft" in proc.stderr


def test_dockerfile_parses_and_matches_the_image_layout(w, pkg):
    out = w.tmp / "ctx"
    w("image", "dockerfile", pkg, "--out", out, "--label", "team=vision")
    df = DockerfileParser(path=str(out / "Dockerfile"))
    cmds = [i["instruction"] for i in df.structure if i["instruction"] != "COMMENT"]
    structure = [i for i in df.structure if i["instruction"] != "COMMENT"]
    assert cmds[0] == "FROM" and df.baseimage == "debian:bookworm-slim"
    assert {"RUN", "COPY", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"} <= set(cmds)
    assert df.labels["team"] == "vision" and df.labels["io.weft.model"] == "fashion"
    assert json.loads(structure[cmds.index("ENTRYPOINT")]["value"]) == ["/usr/local/bin/weft", "serve"]
    assert "pocl-opencl-icd" in df.content
    user = structure[cmds.index("USER")]["value"]
    assert user.split(":")[0] != "0" and user != "root"
    assert (out / "weft").stat().st_size > 1_000_000 and (out / "fashion.weft").read_bytes() == pkg.read_bytes()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def infer_dress(url):
    c = tc.InferenceServerClient(url)
    inp = tc.InferInput("input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([SAMPLE.read_bytes()], dtype=np.object_))
    probs = c.infer("fashion", [inp]).as_numpy("logits")
    labels = (FASHION / "labels.txt").read_text().split("\n")
    return labels[int(probs.argmax())]


def podman(*args, check=True):
    proc = subprocess.run(["podman", *map(str, args)], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_image_is_reproducible_inspectable_and_serves_under_podman(w, pkg):
    for tool in ("skopeo", "podman"):
        assert shutil.which(tool), f"{tool} is required (scripts/setup.sh installs it)"
    tag = "weft-test/fashion:ci"
    a, b = w.tmp / "a.tar", w.tmp / "b.tar"
    ra = w("image", "build", pkg, "--tag", tag, "-o", a, timeout=1800)
    rb = w("image", "build", pkg, "--tag", tag, "-o", b, timeout=1800)
    print(ra.stdout.strip(), rb.stdout.strip(), sep="\n")
    assert "base layer cached" in rb.stdout
    digest = re.search(r"manifest (sha256:[0-9a-f]{64})", ra.stdout).group(1)
    assert digest in rb.stdout
    assert sha256(a) == sha256(b)

    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{a}"], capture_output=True, text=True, check=True).stdout)
    assert info["Digest"] == digest and info["Os"] == "linux" and info["Architecture"] == "amd64"
    assert info["Labels"]["io.weft.model"] == "fashion" and info["Labels"]["io.weft.model.precision"] == "int8"
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{a}"], capture_output=True, text=True, check=True).stdout)
    cfg = config["config"]
    assert cfg["User"] == "10001:10001"
    assert set(cfg["ExposedPorts"]) == {"50051/tcp", "8080/tcp"}
    assert cfg["Entrypoint"] == ["/usr/local/bin/weft", "serve"]

    grpc, http = free_port(), free_port()
    name = "weft-test-local"
    podman("rm", "-f", name, check=False)
    try:
        r = w("deploy", "local", pkg, "--runtime", "podman", "--image-archive", a, "--name", name,
              "--port", grpc, "--http-port", http, timeout=600)
        assert f"127.0.0.1:{grpc}" in r.stdout
        # the container runs on PoCL, not on a fallback: the ready line, ModelConfig and the
        # device metric say so
        assert re.search(r"serving fashion 1: .*Portable Computing Language", r.stdout), r.stdout + r.stderr
        cfg = tc.InferenceServerClient(f"127.0.0.1:{grpc}").get_model_config("fashion").config
        assert "Portable Computing Language" in cfg.parameters["device"].string_value
        logs = podman("logs", name).stderr + podman("logs", name).stdout
        assert "reference executor" not in logs, logs[-2000:]
        running = podman("ps", "--filter", f"name={name}", "--format", "{{.Image}} {{.Status}}").stdout
        assert "localhost/weft-test/fashion:ci" in running and "Up" in running
        # the service inside runs as the image's non-root user, on a read-only root
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        assert podman("exec", name, "touch", "/models/x", check=False).returncode != 0
        assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name).stdout.strip() == "true"
        assert infer_dress(f"127.0.0.1:{grpc}") == "Dress"
        # a second deployment under the same name is refused while the first runs
        again = w("deploy", "local", pkg, "--runtime", "podman", "--image", "localhost/" + tag, "--name", name,
                  "--port", free_port(), "--http-port", free_port(), check=False)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = w("deploy", "local", "--down", "--name", name, check=False)
    assert down.returncode == 0, down.stderr
    assert name not in podman("ps", "-a", "--format", "{{.Names}}").stdout
    podman("rmi", "-f", "localhost/" + tag, check=False)


def test_local_process_runtime_serves_and_stops(w, pkg, monkeypatch):
    grpc, http = free_port(), free_port()
    monkeypatch.setenv("WEFT_TEST_LOCAL_KEY", "local-key-1")
    r = w("deploy", "local", pkg, "--runtime", "process", "--name", "weft-proc-test", "--port", grpc,
          "--http-port", http, "--api-key-env", "WEFT_TEST_LOCAL_KEY")
    try:
        assert "ready" in r.stdout
        c = tc.InferenceServerClient(f"127.0.0.1:{grpc}")
        inp = tc.InferInput("input", [1], "BYTES")
        inp.set_data_from_numpy(np.array([SAMPLE.read_bytes()], dtype=np.object_))
        with pytest.raises(Exception):
            c.infer("fashion", [inp])  # no key
        probs = c.infer("fashion", [inp], headers={"authorization": "Bearer local-key-1"}).as_numpy("logits")
        assert probs.shape == (1, 5)
    finally:
        down = w("deploy", "local", "--down", "--name", "weft-proc-test", check=False)
    assert down.returncode == 0, down.stderr
    proc = w("deploy", "local", "--down", "--name", "weft-proc-test", check=False)
    assert proc.returncode == 1 and "no local deployment" in proc.stderr
