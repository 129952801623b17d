"""weft against onnxruntime on the same zoo ResNet-50, side by side, alternating runs.

    .venv/bin/python bench/compare.py [--weft target/release/weft] [--rounds 5] [--iterations 10]

Writes bench/RESULTS.md (machine, command, medians and spread, ratios, GOP/s against the
machine's int8 peak). The weights are weft's zoo ResNet-50 exported by `weft zoo`; weft
quantizes it with `weft compile --calib`, onnxruntime with `quantize_static` (QDQ,
per-channel s8 weights, u8 activations, MinMax) on the same calibration batch. Both use the
machine's cores (PoCL's CPU device: all of them; onnxruntime: intra_op_num_threads = cores).
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
MACS_R50 = 4_089_184_256  # per 224x224 image (weft inspect)


# RESULTS.md past this line is not rewritten by this script.
MARKER = "<!-- compare.py writes the part above this line -->"


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


class Reader(CalibrationDataReader):
    def __init__(self, batch):
        self.items = iter([{"input": batch[i:i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self.items, None)


def prepare(weft, work, calib_n):
    onnx_path = work / "r50.onnx"
    if not onnx_path.exists():
        sh(weft, "zoo", "resnet50", "--seed", "0", "-o", onnx_path)
    calib = np.random.default_rng(0).standard_normal((calib_n, 3, 224, 224)).astype(np.float32)
    np.save(work / "calib.npy", calib)
    pkgs = {}
    for precision in ("int8", "f16", "f32"):
        p = work / f"r50_{precision}.weft"
        if not p.exists():
            args = ["compile", onnx_path, "--precision", precision, "-o", p]
            if precision == "int8":
                args += ["--calib", work / "calib.npy"]
            sh(weft, *args)
        pkgs[precision] = p
    q = work / "r50_ort_int8.onnx"
    if not q.exists():
        pre = work / "r50_pre.onnx"
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(str(pre), str(q), Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx_path, q, pkgs


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
    onnx_path, ort_q, pkgs = prepare(a.weft, work, a.calib)
    ort_models = {"ort fp32": onnx_path, "ort int8": ort_q}
    configs = [
        ("weft int8", 1), ("ort int8", 1), ("weft f32", 1), ("ort fp32", 1), ("weft f16", 1),
        ("weft int8", 8), ("ort int8", 8),
    ]
    times = {c: [] for c in configs}
    for r in range(a.rounds):
        for name, batch in configs:
            if name.startswith("weft"):
                t = weft_times(a.weft, pkgs[name.split()[1]], a.device, batch, a.iterations, a.warmup)
            else:
                t = ort_times_fresh(ort_models[name], threads, batch, a.iterations, a.warmup)
            times[(name, batch)].extend(t)
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{n} b{b} {statistics.median(times[(n, b)]):.1f} ms" for n, b in configs), flush=True)

    def med(c):
        return statistics.median(times[c])

    rows = []
    for name, batch in configs:
        t = times[(name, batch)]
        m = med((name, batch))
        gops = 2 * MACS_R50 * batch / (m / 1e3) / 1e9
        rows.append(f"| {name} | {batch} | {m:.2f} | {min(t):.2f}-{max(t):.2f} | {batch / (m / 1e3):.1f} | {gops:.0f} |")
    lat = med(("weft int8", 1)) / med(("ort int8", 1))
    thr = (8 / med(("weft int8", 8))) / (8 / med(("ort int8", 8)))
    f32 = med(("weft f32", 1)) / med(("ort fp32", 1))
    cmd = f"{pathlib.Path(sys.executable).name} bench/compare.py --rounds {a.rounds} --iterations {a.iterations} --warmup {a.warmup}"
    text = f"""# weft against onnxruntime: ResNet-50, side by side

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.
Command: `{cmd}` (release build of weft; {a.rounds} rounds alternating the configurations,
{a.iterations} timed runs each after {a.warmup} untimed warm-up runs, so {a.rounds * a.iterations} runs per row;
each configuration runs in a fresh process every round, `weft bench` for weft and a new
onnxruntime session in a child Python for onnxruntime, so that both sides draw their memory
placement anew each round; the warm-up runs bring both to a steady state, weights in cache,
as a server would be).

Model: weft's zoo ResNet-50 v1.5 (`weft zoo resnet50 --seed 0`), {MACS_R50 / 1e9:.3f} G
multiply-accumulates per 224x224 image. weft int8: `weft compile --calib` (MinMax over {a.calib}
seeded images; per-channel s8 weights, u8 activations, integer-only requantization), run by
`weft bench --device {a.device}`. onnxruntime int8: `quantize_static` on the same ONNX file
and images (QDQ, per-channel, QInt8 weights, QUInt8 activations), CPU provider,
{threads} intra-op threads. GOP/s counts 2 operations per multiply-accumulate. For scale:
the int8 VNNI peak measured on the project's earlier Zen 4 build machine was about 930 GOP/s
on 2 cores; a CPU with full-width AVX-512 (Zen 5 reports `avx512_vp2intersect`) has about
twice that, which is how onnxruntime can exceed 930 below.

| configuration | batch | median ms | min-max ms | images/s | GOP/s |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Ratios (weft / onnxruntime, same run):

- int8 batch-1 latency: **{lat:.3f}x** (below 1 means weft is faster)
- int8 batch-8 throughput: **{thr:.3f}x** (above 1 means weft is faster)
- f32 batch-1 latency: {f32:.2f}x
"""
    # keep what follows the marker (sections written by hand or by bench/startup.sh)
    out = pathlib.Path(a.out)
    if out.exists() and MARKER in out.read_text():
        text += "\n" + MARKER + out.read_text().split(MARKER, 1)[1]
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
