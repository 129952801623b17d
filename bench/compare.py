"""weft against onnxruntime on the same models, side by side, alternating runs.

    .venv/bin/python bench/compare.py [--models resnet50,mobilenetv2,...] [--rounds 5] [--iterations 10]

Writes bench/RESULTS.md (machine, commit, command, medians and spread, ratios, GOP/s, and
the nodes each int8 plan leaves on the host). Models: `resnet50` and `resnet152` are weft's
zoo (`weft zoo`); `mobilenetv2`, `densenet121` and `vgg16` are torchvision's layouts built
with the onnx helper API (tests/foreign_models.py), seeded weights. weft quantizes each with
`weft compile --calib`, onnxruntime with `quantize_static` (QDQ, per-channel s8 weights, u8
activations, MinMax) on the same calibration batch. Both use the machine's cores (PoCL's CPU
device: all of them; onnxruntime: intra_op_num_threads = cores). Float rows (weft f32 and
f16, onnxruntime fp32) are measured for the models in --float (default resnet50).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
MODELS = ("resnet50", "resnet152", "mobilenetv2", "densenet121", "vgg16")


# RESULTS.md past this line is not rewritten by this script.
MARKER = "<!-- compare.py writes the part above this line -->"


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


class Reader(CalibrationDataReader):
    def __init__(self, batch):
        self.items = iter([{"input": batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self.items, None)


def write_model(weft, name, path):
    """The float ONNX model `name` at `path` (input `input`, 1x3x224x224 images)."""
    if name.startswith("resnet"):
        sh(weft, "zoo", name, "--seed", "0", "-o", path)
        return
    import onnx

    import foreign_models

    build = {"mobilenetv2": foreign_models.mobilenet_v2, "densenet121": foreign_models.densenet121,
             "vgg16": foreign_models.vgg16}[name]
    onnx.save(build(seed=0), path)


def prepare(weft, work, name, calib_n, floats):
    """The model, onnxruntime's int8 copy and weft's packages (int8, and f16/f32 when
    `floats`), made once in `work`."""
    onnx_path = work / f"{name}.onnx"
    if not onnx_path.exists():
        write_model(weft, name, onnx_path)
    calib = np.random.default_rng(0).standard_normal((calib_n, 3, 224, 224)).astype(np.float32)
    np.save(work / "calib.npy", calib)
    pkgs = {}
    for precision in ("int8", "f16", "f32") if floats else ("int8",):
        p = work / f"{name}_{precision}.weft"
        if not p.exists():
            args = ["compile", onnx_path, "--precision", precision, "-o", p]
            if precision == "int8":
                args += ["--calib", work / "calib.npy"]
            sh(weft, *args)
        pkgs[precision] = p
    q = work / f"{name}_ort_int8.onnx"
    if not q.exists():
        pre = work / f"{name}_pre.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(str(pre), str(q), Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx_path, q, pkgs


def macs_of(weft, onnx_path):
    return json.loads(sh(weft, "inspect", onnx_path, "--json").stdout)["macs"]


def host_nodes(weft, pkg, device, work):
    """The nodes the int8 plan runs on the host (from a profiled run), but the graph's
    output edges (the dequantize of each output)."""
    x = work / "x1.npy"
    np.save(x, np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32))
    prof = sh(weft, "run", pkg, "--device", device, "--profile", "--input", x, "--output", work / "y1.npy").stdout
    rows = [l.split() for l in prof.splitlines()]
    ops = [r[1].strip("()") for r in rows if len(r) > 2 and r[2] == "host" and r[0] != "on"]
    return [op for op in ops if op != "Dequantize"]


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_times(sess, batch, iterations, warmup):
    x = np.random.default_rng(7).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        sess.run(None, {name: x})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def ort_times_fresh(model, threads, batch, iterations, warmup):
    """onnxruntime timings from a fresh process (a new session), as weft's come from a fresh
    `weft bench` process: each round draws both sides' memory placement anew."""
    r = sh(sys.executable, __file__, "--ort-worker", model, "--threads", threads, "--batch", batch,
           "--iterations", iterations, "--warmup", warmup)
    return json.loads(r.stdout.strip().splitlines()[-1])


def weft_times(weft, pkg, device, batch, iterations, warmup):
    r = sh(weft, "bench", pkg, "--device", device, "--batch", batch, "--iterations", iterations, "--warmup", warmup, "--json")
    return json.loads(r.stdout.strip().splitlines()[-1])["times_ms"]


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    vnni = "avx512_vnni" in flags
    zen5 = "avx512_vp2intersect" in flags and "AMD" in model
    try:
        pocl = sh("dpkg-query", "-W", "-f", "${Version}", "pocl-opencl-icd").stdout
    except Exception:
        pocl = "?"
    return f"{os.cpu_count()} cores, {model}, AVX512-VNNI {'yes' if vnni else 'no'}{' (full-width AVX-512: avx512_vp2intersect, Zen 5)' if zen5 else ''}; PoCL {pocl}; onnxruntime {ort.__version__}; Python {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default=str(ROOT / "target" / "release" / "weft"))
    ap.add_argument("--work", default=str(ROOT / "target" / "compare"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=30, help="untimed runs before each configuration's timed runs, every round")
    ap.add_argument("--calib", type=int, default=8, help="calibration images (seeded normal noise)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--device", default="pocl")
    ap.add_argument("--models", default="resnet50", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--float", default="resnet50", help="models that also get f32/f16 rows (comma-separated)")
    ap.add_argument("--ort-worker", help=argparse.SUPPRESS)  # internal: time one onnxruntime model
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        print(json.dumps(ort_times(ort_session(a.ort_worker, a.threads), a.batch, a.iterations, a.warmup)))
        return
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count()
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    floats = {m.strip() for m in a.float.split(",") if m.strip()}
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model '{m}' (one of {', '.join(MODELS)})")
    prepared, configs = {}, []
    for m in models:
        onnx_path, ort_q, pkgs = prepare(a.weft, work, m, a.calib, m in floats)
        prepared[m] = {"ort fp32": onnx_path, "ort int8": ort_q, "pkgs": pkgs, "macs": macs_of(a.weft, onnx_path),
                       "host": host_nodes(a.weft, pkgs["int8"], a.device, work)}
        configs += [(m, "weft int8", 1), (m, "ort int8", 1)]
        if m in floats:
            configs += [(m, "weft f32", 1), (m, "ort fp32", 1), (m, "weft f16", 1)]
        configs += [(m, "weft int8", 8), (m, "ort int8", 8)]
    times = {c: [] for c in configs}
    for r in range(a.rounds):
        for m, name, batch in configs:
            if name.startswith("weft"):
                t = weft_times(a.weft, prepared[m]["pkgs"][name.split()[1]], a.device, batch, a.iterations, a.warmup)
            else:
                t = ort_times_fresh(prepared[m][name], threads, batch, a.iterations, a.warmup)
            times[(m, name, batch)].extend(t)
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{m} {n} b{b} {statistics.median(times[(m, n, b)]):.1f} ms"
                                                      for m, n, b in configs), flush=True)

    def med(c):
        return statistics.median(times[c])

    sections, summary = [], []
    for m in models:
        macs = prepared[m]["macs"]
        rows = []
        for mm, name, batch in configs:
            if mm != m:
                continue
            t = times[(m, name, batch)]
            md = med((m, name, batch))
            gops = 2 * macs * batch / (md / 1e3) / 1e9
            rows.append(f"| {name} | {batch} | {md:.2f} | {min(t):.2f}-{max(t):.2f} | {batch / (md / 1e3):.1f} | {gops:.0f} |")
        lat = med((m, "weft int8", 1)) / med((m, "ort int8", 1))
        thr = med((m, "ort int8", 8)) / med((m, "weft int8", 8))
        host = prepared[m]["host"]
        host_text = "none" if not host else ", ".join(f"{host.count(op)} {op}" for op in sorted(set(host)))
        ratios = f"int8 batch-1 latency **{lat:.3f}x**, batch-8 throughput **{thr:.3f}x**"
        if m in floats:
            ratios += f", f32 batch-1 latency {med((m, 'weft f32', 1)) / med((m, 'ort fp32', 1)):.2f}x"
        summary.append(f"| {m} | {lat:.3f}x | {thr:.3f}x | {len(host)} |")
        sections.append(f"""### {m} ({macs / 1e9:.3f} G multiply-accumulates per image)

| configuration | batch | median ms | min-max ms | images/s | GOP/s |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Ratios (weft / onnxruntime): {ratios}. Nodes of the int8 plan on the host (besides the
outputs' dequantize): {host_text}.
""")
    try:
        commit = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").stdout.strip()
        if sh("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no").stdout.strip():
            commit += " (with uncommitted changes)"
    except Exception:
        commit = "?"
    float_arg = f"--float {','.join(sorted(floats))}" if floats else '--float ""'
    cmd = (f"{pathlib.Path(sys.executable).name} bench/compare.py --models {','.join(models)} {float_arg} "
           f"--rounds {a.rounds} --iterations {a.iterations} --warmup {a.warmup}")
    text = f"""# weft against onnxruntime, side by side

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}, weft at commit {commit}.
Command: `{cmd}` (release build of weft; {a.rounds} rounds alternating the configurations,
{a.iterations} timed runs each after {a.warmup} untimed warm-up runs, so {a.rounds * a.iterations} runs per row;
each configuration runs in a fresh process every round, `weft bench` for weft and a new
onnxruntime session in a child Python for onnxruntime, so that both sides draw their memory
placement anew each round; the warm-up runs bring both to a steady state, weights in cache,
as a server would be).

Models: weft's zoo ResNets (`weft zoo NAME --seed 0`) and torchvision's MobileNetV2,
DenseNet-121 and VGG-16 layouts built with the onnx helper API (tests/foreign_models.py,
seeded weights), 224x224 inputs. weft int8: `weft compile --calib` (MinMax over {a.calib}
seeded images; per-channel s8 weights, u8 activations, integer-only requantization), run by
`weft bench --device {a.device}`. onnxruntime int8: `quantize_static` on the same ONNX file
and images (QDQ, per-channel, QInt8 weights, QUInt8 activations), CPU provider,
{threads} intra-op threads. GOP/s counts 2 operations per multiply-accumulate.

| model | int8 batch-1 latency (below 1: weft faster) | int8 batch-8 throughput (above 1: weft faster) | host nodes |
| --- | --- | --- | --- |
{chr(10).join(summary)}

{chr(10).join(sections)}"""
    # keep what follows the marker (sections written by hand or by bench/startup.sh)
    out = pathlib.Path(a.out)
    if out.exists() and MARKER in out.read_text():
        text += "\n" + MARKER + out.read_text().split(MARKER, 1)[1]
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
