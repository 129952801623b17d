"""int8 packages on PoCL: exactly the bytes the integer reference writes, for zoo models
at batch 1 and 8; f32 and f16 packages within a stated tolerance of the f32 reference;
profiling; program binaries; the kernels' portable path compiles for a SPIR target (so no
CPU-only construct leaks into the FPGA path)."""

import json
import platform
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper


def compile_int8(w, name, size, seed=0):
    model = w.tmp / f"{name}.onnx"
    w("zoo", name, "--seed", str(seed), "-o", model)
    calib = w.tmp / "calib.npy"
    np.save(calib, np.random.default_rng(seed).standard_normal((8, 3, size, size)).astype(np.float32))
    pkg = w.tmp / f"{name}.weft"
    w("compile", model, "--calib", calib, "-o", pkg)
    return pkg


def same_bytes(w, pkg, x, *extra, output_name=None):
    xin = w.tmp / "x.npy"
    np.save(xin, x)
    outs = {}
    for device in ("reference", "pocl"):
        out = w.tmp / f"y_{device}.npy"
        args = ["run", pkg, "--input", xin, "--output", out, "--device", device]
        if output_name:
            args += ["--output-name", output_name]
        w(*args, *(extra if device == "pocl" else ()))
        outs[device] = out.read_bytes()
    assert outs["reference"] == outs["pocl"]
    return np.load(w.tmp / "y_pocl.npy")


@pytest.mark.parametrize("name,size,batch", [("resnet8", 32, 5), ("resnet20", 32, 3), ("resnet18", 224, 2), ("resnet50", 224, 1), ("resnet50", 224, 8)])
def test_zoo_int8_on_pocl_is_bit_exact(w, name, size, batch):
    pkg = compile_int8(w, name, size)
    x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
    for out in ("logits", "features"):
        y = same_bytes(w, pkg, x, output_name=out)
        assert y.shape[0] == batch and np.isfinite(y).all()


# Largest abs error as a fraction of the largest reference output (whole networks).
FLOAT_TOLERANCE = {"f32": 1e-4, "f16": 1e-2}


@pytest.mark.parametrize("precision", ["f32", "f16"])
@pytest.mark.parametrize("name,size,batch", [("resnet20", 32, 4), ("resnet50", 224, 1)])
def test_zoo_float_on_pocl_within_tolerance(w, precision, name, size, batch):
    model = w.tmp / f"{name}.onnx"
    w("zoo", name, "-o", model)
    pkg = w.tmp / f"{name}_{precision}.weft"
    w("compile", model, "--precision", precision, "-o", pkg)
    xin = w.tmp / "x.npy"
    np.save(xin, np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32))
    ys = {}
    for device in ("reference", "pocl"):
        out = w.tmp / f"y_{device}.npy"
        log = w("run", pkg, "--input", xin, "--output", out, "--device", device, "--profile").stdout
        ys[device] = np.load(out)
        if device == "pocl":
            assert f"fconv_{precision}" in log and "qconv" not in log, log
    want, got = ys["reference"], ys["pocl"]
    assert got.shape == want.shape == (batch, 1000 if name == "resnet50" else 10)
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{name} {precision} batch {batch}: max abs error / max |ref| = {err:.2e}")
    assert err <= FLOAT_TOLERANCE[precision]


def test_portable_hook_is_bit_exact_too(w):
    pkg = compile_int8(w, "resnet18", 224, seed=3)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    same_bytes(w, pkg, x, "--portable-kernels")


def pocl_hooks(w):
    devices = json.loads(w("devices", "--json").stdout)
    pocl = [d for d in devices if "Portable Computing Language" in d["platform"]]
    assert pocl, devices
    return pocl[0]["int8_hooks"]


def test_every_hook_the_device_builds_is_bit_exact(w, monkeypatch):
    hooks = pocl_hooks(w)
    assert hooks[-1] == "portable"
    if platform.machine() == "x86_64":
        # every x86-64 host CI runs on has AVX2: the hook chosen where AVX512-VNNI is missing
        assert "avx2" in hooks, hooks
    cases = [(compile_int8(w, "resnet18", 224, seed=3), (1, 3, 224, 224)), (compile_int8(w, "resnet8", 32, seed=4), (5, 3, 32, 32))]
    for hook in hooks:
        monkeypatch.setenv("WEFT_DOT_HOOK", hook)
        options = w("program", "source", "--device", "pocl").stdout.splitlines()[0]
        define = {"portable": None, "avx2": "WEFT_DOT_AVX2", "avx512-vnni": "WEFT_DOT_VNNI", "cl_khr_integer_dot_product": "WEFT_DOT_KHR"}[hook]
        assert (define in options) if define else ("WEFT_DOT" not in options), (hook, options)
        for pkg, shape in cases:
            same_bytes(w, pkg, np.random.default_rng(len(hook)).standard_normal(shape).astype(np.float32))


def test_a_hook_the_device_cannot_build_is_ignored(w, monkeypatch):
    monkeypatch.setenv("WEFT_DOT_HOOK", "no-such-hook")
    proc = w("program", "source", "--device", "pocl")
    assert "no-such-hook" in proc.stderr and "cannot build" in proc.stderr
    default = pocl_hooks(w)[0]
    monkeypatch.delenv("WEFT_DOT_HOOK")
    assert w("program", "source", "--device", "pocl").stdout.splitlines()[0] == proc.stdout.splitlines()[0], default


def test_profile_prints_per_layer_table(w):
    pkg = compile_int8(w, "resnet8", 32)
    x = w.tmp / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 32), np.float32))
    out = w("run", pkg, "--device", "pocl", "--profile", "--input", x, "--output", w.tmp / "y.npy").stdout
    lines = [l for l in out.splitlines() if l.split() and l.split()[0] in ("conv1", "layer1.0.conv1", "total")]
    assert len(lines) >= 3, out
    assert "qconv" in out and "GOP/s" in out


def test_program_binary_saved_and_loaded(w):
    pkg = compile_int8(w, "resnet8", 32)
    binary = w.tmp / "program.bin"
    w("program", "build", "--device", "pocl", "-o", binary)
    assert binary.stat().st_size > 1000
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    same_bytes(w, pkg, x, "--program-binary", binary)
    binary.write_bytes(b"garbage")
    xin = w.tmp / "x.npy"
    proc = w("run", pkg, "--device", "pocl", "--program-binary", binary, "--input", xin, "--output", w.tmp / "z.npy", check=False)
    assert proc.returncode == 1 and "program binary" in proc.stderr


def test_devices_lists_pocl(w):
    out = w("devices").stdout
    assert "Portable Computing Language" in out and "int8 hook" in out
    # --json: the same devices, each with the --device value that selects it
    listed = json.loads(w("devices", "--json").stdout)
    pocl = next(d for d in listed if d["platform"] == "Portable Computing Language")
    assert pocl["compute_units"] >= 1 and pocl["int8_hook"] and pocl["device"] in out
    pkg = compile_int8(w, "resnet8", 32)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    by_name = w.run_model(pkg, {"input": x}, extra=["--device", pocl["device"]])
    assert by_name.tobytes() == w.run_model(pkg, {"input": x}, extra=["--device", "pocl"]).tobytes()


def test_an_unwritable_cache_moves_to_the_temporary_directory(w, tmp_path):
    """PoCL finds no device when its kernel cache cannot be created (a read-only root, a
    root-owned volume): weft then moves both caches under TMPDIR, says so, and PoCL runs."""
    import os
    env = {**os.environ, "WEFT_CACHE_DIR": "/dev/null/weft", "XDG_CACHE_HOME": "/dev/null/cache",
           "TMPDIR": str(tmp_path)}
    env.pop("POCL_CACHE_DIR", None)
    proc = subprocess.run([w.binary, "devices"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "Portable Computing Language" in proc.stdout, proc.stderr
    assert "/dev/null/weft is not writable" in proc.stderr and str(tmp_path) in proc.stderr
    pkg = compile_int8(w, "resnet8", 32)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    run = subprocess.run([w.binary, "run", pkg, "--device", "pocl", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    # a cold kernel build says what takes the time; the cached one after it does not
    assert "compiling the OpenCL kernels" in run.stderr and "compiled the kernels in" in run.stderr, run.stderr
    again = subprocess.run([w.binary, "run", pkg, "--device", "pocl", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "compiling the OpenCL kernels" not in again.stderr, again.stderr
    assert any((tmp_path / d).is_dir() for d in os.listdir(tmp_path) if d.startswith("weft-cache-"))


def test_bad_devices_and_float_packages_are_clear_errors(w):
    model = w.tmp / "r8.onnx"
    w("zoo", "resnet8", "-o", model)
    x = w.tmp / "x.npy"
    np.save(x, np.zeros((1, 3, 32, 32), np.float32))
    proc = w("run", model, "--device", "cuda", "--input", x, "--output", w.tmp / "y.npy", check=False)
    assert proc.returncode == 1 and "compile" in proc.stderr
    pkg = w.tmp / "f.weft"
    w("compile", model, "--precision", "f32", "-o", pkg)
    proc = w("run", pkg, "--device", "opencl:nothing-like-this", "--input", x, "--output", w.tmp / "y.npy", check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr


def test_portable_kernels_compile_for_spir(w, tmp_path):
    clang = shutil.which("clang")
    assert clang, "clang is required for the SPIR portability check (scripts/setup.sh installs it)"
    src = w("program", "source", "--device", "pocl", "--portable-kernels").stdout
    assert "WEFT_DOT_VNNI" in src  # the hook exists in the source...
    assert "fconv" in src and "vload_half" in src  # ...and the float kernels
    options = src.splitlines()[0]
    assert "WEFT_DOT" not in options  # ...but the portable build defines none
    path = tmp_path / "weft.cl"
    path.write_text(src)
    proc = subprocess.run([clang, "-cl-std=CL1.2", "-target", "spir64", "-Xclang", "-finclude-default-header",
                           "-D", "TM=16", "-D", "TP=8", "-Werror", "-c", "-emit-llvm", str(path), "-o", str(tmp_path / "weft.bc")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # FPGA-shaped: no printf, no dynamic local memory, a fixed vector width.
    assert "printf" not in src and "__local" not in src
    assert "#if TM % 4 != 0" in src


def test_fpga_model_estimates_the_int8_plan(w):
    pkg = compile_int8(w, "resnet18", 224)
    totals = {}
    for board in ("arria10-gx1150", "alveo-u250", "custom:dsp=3000,mhz=300,gbps=19.2"):
        out = w("bench", pkg, "--fpga-model", board).stdout
        assert "an estimate, not a measurement" in out
        rows = [l for l in out.splitlines() if l.split() and l.split()[-1] in ("compute", "memory")]
        assert len(rows) == 21  # 20 convolutions and the classifier
        totals[board] = float(out.split("total (model): ")[1].split(" ms")[0])
    assert totals["alveo-u250"] < totals["arria10-gx1150"]
    for bad in ("virtex-2", "custom:dsp=1000", "custom:dsp=x,mhz=1,gbps=1"):
        proc = w("bench", pkg, "--fpga-model", bad, check=False)
        assert proc.returncode == 1 and "error:" in proc.stderr


def test_fpga_variant_runs_bit_exact_on_every_implementation_and_from_a_binary(w):
    """`--kernels fpga` (one kernel per layer, geometry compiled in) writes the integer
    reference's bytes on PoCL and on Oclgrind, and again from a program binary saved by
    `weft program build --kernels fpga` (the path an FPGA image takes)."""
    pkg = compile_int8(w, "resnet8", 32)
    xin = w.tmp / "x.npy"
    np.save(xin, np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32))
    want = w.tmp / "ref.npy"
    w("run", pkg, "--input", xin, "--output", want, "--device", "reference")
    binary = w.tmp / "r8_fpga.bin"
    w("program", "build", "--kernels", "fpga", "--package", pkg, "--device", "pocl", "-o", binary)
    runs = {"pocl": [], "opencl:Oclgrind": [], "pocl-binary": ["--program-binary", binary]}
    for name, extra in runs.items():
        out = w.tmp / f"y_{name.replace(':', '_')}.npy"
        device = name.removesuffix("-binary")
        w("run", pkg, "--kernels", "fpga", "--device", device, "--input", xin, "--output", out, *extra)
        assert out.read_bytes() == want.read_bytes(), name
    # a generic program binary lacks the package's layer kernels: a clear error
    generic = w.tmp / "generic.bin"
    w("program", "build", "--device", "pocl", "-o", generic)
    proc = w("run", pkg, "--kernels", "fpga", "--device", "pocl", "--program-binary", generic,
             "--input", xin, "--output", w.tmp / "e.npy", check=False)
    assert proc.returncode == 1 and "weft program build --kernels fpga" in proc.stderr, proc.stderr
    # the variant runs int8 packages only
    model = w.tmp / "resnet8.onnx"
    f32 = w.tmp / "f32.weft"
    w("compile", model, "--precision", "f32", "-o", f32)
    proc = w("run", f32, "--kernels", "fpga", "--device", "pocl", "--input", xin, "--output", w.tmp / "e.npy", check=False)
    assert proc.returncode == 1 and "int8" in proc.stderr


@pytest.mark.parametrize("vendor,board,tool", [("intel", "arria10-gx1150", "aoc"), ("intel", "stratix10-gx2800", "aoc"),
                                               ("xilinx", "alveo-u250", "v++")])
def test_program_fpga_writes_a_build_directory(w, tmp_path, vendor, board, tool):
    """`weft program fpga`: the specialised source (accepted by clang's SPIR front end as
    OpenCL C 1.2, one reqd_work_group_size kernel per layer), build.sh with the vendor's
    commands, plan.json with the layers, their macros and the board's estimate, a README."""
    import json

    pkg = compile_int8(w, "resnet20", 32)
    out = tmp_path / "build"
    w("program", "fpga", pkg, "--vendor", vendor, "--board", board, "-o", out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "build.sh", "plan.json", "weft_fpga.cl"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["vendor"] == vendor and plan["board"] == board and plan["work_group"] == 16
    kernels = [l["kernel"] for l in plan["layers"]]
    assert len(kernels) == len(set(kernels))
    templates = {l["template"] for l in plan["layers"]}
    assert {"wconv", "wmean"} <= templates
    # the residual adds are fused into the convolutions that close each block
    assert sum(l["defines"].get("W_RES", 0) for l in plan["layers"]) == 9
    # resnet20: 19 3x3 convolutions, 2 projection shortcuts and the classifier, each with
    # the model's estimate
    convs = [l for l in plan["layers"] if l["template"] == "wconv"]
    assert len(convs) == 22 and all(l["estimate"]["time_us"] > 0 for l in convs)
    assert plan["estimate"]["total_us"] > 0 and "not a measurement" in plan["estimate"]["note"]
    src = (out / "weft_fpga.cl").read_text()
    for k in kernels:
        assert f"#define W_NAME {k}\n" in src
    assert src.count("reqd_work_group_size(W_WG, 1, 1)") == len(kernels)
    for banned in ("__builtin", "#pragma OPENCL EXTENSION", "printf", "__local"):
        assert banned not in src
    clang = shutil.which("clang")
    assert clang, "clang is required for the SPIR check (scripts/setup.sh installs it)"
    proc = subprocess.run([clang, "-cl-std=CL1.2", "-target", "spir64", "-Xclang", "-finclude-default-header",
                           "-Werror", "-c", "-emit-llvm", str(out / "weft_fpga.cl"), "-o", str(tmp_path / "f.bc")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    script = (out / "build.sh").read_text()
    assert tool in script and plan["platform"] in script
    assert subprocess.run(["bash", "-n", str(out / "build.sh")]).returncode == 0
    assert "--program-binary" in (out / "README.md").read_text()
    # mismatched and unknown boards are refused before anything is written
    other = "alveo-u250" if vendor == "intel" else "arria10-gx1150"
    for bad in (["--board", other], ["--board", "virtex-2"], ["--board", "custom:dsp=100,mhz=200,gbps=10"]):
        proc = w("program", "fpga", pkg, "--vendor", vendor, *bad, "-o", tmp_path / "bad", check=False)
        assert proc.returncode == 1 and "error:" in proc.stderr
        assert not (tmp_path / "bad").exists()
    # a custom board with the vendor's platform name
    w("program", "fpga", pkg, "--vendor", vendor, "--board", "custom:dsp=900,mhz=240,gbps=12",
      "--platform", "my_board", "-o", tmp_path / "custom")
    assert "my_board" in (tmp_path / "custom" / "build.sh").read_text()


def test_pocl_threads_bind_to_the_binarys_spinning_condition_waits(w):
    """The `weft` binary exports its pthread_cond_wait/signal/broadcast (spinwait.rs) and
    PoCL's threads call them: a PoCL run counts waits through them (most ending while they
    spin), a reference run none; WEFT_SPIN_US=0 keeps the binding and ends the spinning."""
    import os
    import re

    nm = subprocess.run(["nm", "-D", "--defined-only", str(w.binary)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    assert {"pthread_cond_wait", "pthread_cond_signal", "pthread_cond_broadcast"} <= exported
    pkg = compile_int8(w, "resnet8", 32)
    xin = w.tmp / "x.npy"
    np.save(xin, np.zeros((1, 3, 32, 32), np.float32))

    def counts(device, spin_us):
        env = dict(os.environ, WEFT_SPIN_STATS="1", WEFT_SPIN_US=spin_us)
        proc = subprocess.run([str(w.binary), "run", str(pkg), "--device", device, "--input", str(xin),
                               "--output", str(w.tmp / "y.npy")], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        m = re.search(r"weft spinwait: (\d+) condition waits, (\d+) ended while spinning, (\d+) signals", proc.stderr)
        assert m, proc.stderr
        return tuple(map(int, m.groups()))

    assert counts("reference", "20")[0] == 0
    waits, spun, signals = counts("pocl", "20")
    assert waits > 0 and signals > 0 and spun > 0, (waits, spun, signals)
    waits, spun, _ = counts("pocl", "0")
    assert waits > 0 and spun == 0


def test_explicit_zero_padding_folds_into_the_kernels(w):
    """ResNet-18 with its stem's padding written as separate Pad nodes (as tf2onnx writes
    Keras' ZeroPadding2D before the 7x7 convolution and the max pooling) compiles to the same
    int8 plan as the zoo model: no Pad, Quantize or Dequantize left to run on the host, and
    the same bytes on PoCL as the reference and as the zoo model."""
    import onnx
    from onnx import helper, numpy_helper

    zoo = w.tmp / "r18.onnx"
    w("zoo", "resnet18", "--seed", "2", "-o", zoo)
    m = onnx.load(zoo)
    nodes = []
    for n in m.graph.node:
        pads = next((a for a in n.attribute if a.name == "pads"), None)
        if (n.name == "conv1" or n.op_type == "MaxPool") and pads is not None and any(pads.ints):
            p = list(pads.ints)
            m.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, p[0], p[1], 0, 0, p[2], p[3]], np.int64), f"{n.name}_pads"))
            nodes.append(helper.make_node("Pad", [n.input[0], f"{n.name}_pads"], [f"{n.name}_padded"], name=f"{n.name}_zeropad"))
            n.input[0] = f"{n.name}_padded"
            pads.ints[:] = [0, 0, 0, 0]
        nodes.append(n)
    m.graph.ClearField("node")
    m.graph.node.extend(nodes)
    padded = w.tmp / "r18_padded.onnx"
    onnx.save(m, padded)
    assert sum(n.op_type == "Pad" for n in onnx.load(padded).graph.node) == 2
    calib = w.tmp / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32))
    for src in (zoo, padded):
        w("compile", src, "--calib", calib, "-o", src.with_suffix(".weft"))
    ops = {o["op"] for o in json.loads(w("inspect", padded.with_suffix(".weft"), "--json").stdout)["ops"]}
    assert not ops & {"Pad", "Quantize", "Dequantize"} - {o["op"] for o in json.loads(w("inspect", zoo.with_suffix(".weft"), "--json").stdout)["ops"]}, ops
    assert "Pad" not in ops
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    got = same_bytes(w, padded.with_suffix(".weft"), x)
    want = same_bytes(w, zoo.with_suffix(".weft"), x)
    assert got.tobytes() == want.tobytes()
    # a reflecting pad cannot fold: it runs on the host, and the profile names it there
    for n in m.graph.node:
        if n.op_type == "Pad" and n.name == "conv1_zeropad":
            n.attribute.append(helper.make_attribute("mode", "reflect"))
    reflect = w.tmp / "r18_reflect.onnx"
    onnx.save(m, reflect)
    w("compile", reflect, "--calib", calib, "-o", reflect.with_suffix(".weft"))
    same_bytes(w, reflect.with_suffix(".weft"), x[:1])
    np.save(w.tmp / "x1.npy", x[:1])
    prof = w("run", reflect.with_suffix(".weft"), "--device", "pocl", "--profile", "--input", w.tmp / "x1.npy",
             "--output", w.tmp / "y1.npy").stdout
    rows = [l.split() for l in prof.splitlines()]
    assert ["conv1_zeropad", "(Pad)", "host", "[1,", "3,", "230,", "230]"] in [r[:7] for r in rows], prof
    assert any(r[:3] == ["on", "the", "host"] for r in rows), prof
    assert not any(r[:2] == ["maxpool_zeropad", "(Pad)"] for r in rows), prof


def foreign_int8(w, onnx_model, size, calib, batch, min_cos):
    """Compiles a float ONNX model to int8 on `calib` seeded images, checks a batch bit-exact
    on PoCL against the reference and close to onnxruntime's float answers (cosine at least
    `min_cos`), and returns the rows of a profiled batch-1 run and the host rows' ops."""
    import onnx

    from conftest import ort_run

    model = w.tmp / "model.onnx"
    onnx.save(onnx_model, model)
    rng = np.random.default_rng(0)
    np.save(w.tmp / "calib.npy", rng.standard_normal((calib, 3, size, size)).astype(np.float32))
    pkg = w.tmp / "model.weft"
    w("compile", model, "--calib", w.tmp / "calib.npy", "-o", pkg)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    got = same_bytes(w, pkg, x)
    want = ort_run(model, {"input": x})["output"]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > min_cos, cos
    np.save(w.tmp / "x1.npy", x[:1])
    prof = w("run", pkg, "--device", "pocl", "--profile", "--input", w.tmp / "x1.npy", "--output", w.tmp / "y1.npy").stdout
    rows = [l.split() for l in prof.splitlines()]
    host = [(r[0], r[1]) for r in rows if len(r) > 2 and r[2] == "host" and r[0] != "on"]
    return rows, host, prof


def test_mobilenet_v2_int8_runs_every_convolution_on_the_device(w):
    """torchvision's MobileNetV2 layout (depthwise 3x3 convolutions, ReLU6, inverted
    residuals; a narrow, small-input copy to keep the test short) compiles to int8, runs
    bit-exact on PoCL, with every depthwise layer in `qdwconv` and no node on the host but
    the output's dequantize; its answers follow onnxruntime's float ones."""
    from foreign_models import mobilenet_v2

    rows, host, prof = foreign_int8(w, mobilenet_v2(seed=3, size=64, num_classes=10, width=0.5), 64, 16, 3, 0.95)
    assert sum("qdwconv" in r for r in rows) == 17, prof
    assert host == [("output.dequantize", "(Dequantize)")], prof


def test_densenet_runs_on_the_device(w):
    """torchvision's DenseNet-121 layout (a small input to keep the test short) runs on the
    device in int8, bit-exact on PoCL: its pre-activation BatchNorm + ReLU pairs, which no
    convolution before them can absorb, as depthwise kernels, and its Concats as `qconcat`
    copies (each layer's join chained onto the previous layer's: two inputs each); nothing
    on the host but the output's dequantize."""
    from foreign_models import densenet121

    rows, host, prof = foreign_int8(w, densenet121(seed=1, size=32, num_classes=10), 32, 8, 2, 0.9)
    assert host == [("output.dequantize", "(Dequantize)")], prof
    assert sum("qdwconv" in r for r in rows) == 62, prof
    # 58 joins of two inputs each (the first of every block joins two feature maps too)
    assert sum("qconcat" in r for r in rows) == 2 * 58, prof


def test_batch_is_the_dimension_the_graph_leaves_free(w):
    """A second operand given as a graph input with a fixed first dimension (a bias, a
    weight) does not take part in the batch; a free non-batch dimension other than 1 and
    an empty batch are refused by name instead of planned wrongly."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g", [x, b], [y])
    model = w.tmp / "addb.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), model)
    pkg = w.tmp / "addb.weft"
    w("compile", model, "--precision", "f32", "-o", pkg)
    rng = np.random.default_rng(3)
    xs, bs = rng.standard_normal((3, 4, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    np.save(w.tmp / "x.npy", xs)
    np.save(w.tmp / "b.npy", bs)
    out = w.tmp / "y.npy"
    w("run", pkg, "--device", "pocl", "--input", f"x={w.tmp / 'x.npy'}", "--input", f"b={w.tmp / 'b.npy'}", "--output", out)
    np.testing.assert_allclose(np.load(out), np.maximum(xs + bs, 0), rtol=1e-6)
    np.save(w.tmp / "x0.npy", np.zeros((0, 4, 5), np.float32))
    proc = w("run", pkg, "--device", "pocl", "--input", f"x={w.tmp / 'x0.npy'}", "--input", f"b={w.tmp / 'b.npy'}", "--output", out, check=False)
    assert proc.returncode == 1 and "empty tensors" in proc.stderr and "not supported" in proc.stderr, proc.stderr
