"""Writes int_ops.json: golden vectors for weft's integer ops, computed here with an
independent numpy implementation of the arithmetic documented in weft-core's quant.rs.
A change to the integer arithmetic (the specification the OpenCL kernels match) breaks
crates/reference/tests/golden.rs.

Run: python tests/golden/make_golden.py  (numpy only; deterministic)
"""

import json
import pathlib

import numpy as np

rng = np.random.default_rng(2024)


def rshift_round(v, s):
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def window(n, k, s, d, pb, pe):
    return (n + pb + pe - ((k - 1) * d + 1)) // s + 1


def qconv(x, w, bias, mult, shift, zp_x, stride, dil, pads, group, out_zp, clamp, res=None):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    t, l, b, r = pads
    xp = np.full((n, c, h + t + b, wd + l + r), zp_x, np.int64)
    xp[:, :, t:t + h, l:l + wd] = x
    oh, ow = window(h, kh, stride[0], dil[0], t, b), window(wd, kw, stride[1], dil[1], l, r)
    out = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for mo in range(m):
        gi = mo // mg
        for oy in range(oh):
            for ox in range(ow):
                patch = xp[:, gi * cg:(gi + 1) * cg,
                           oy * stride[0]: oy * stride[0] + (kh - 1) * dil[0] + 1: dil[0],
                           ox * stride[1]: ox * stride[1] + (kw - 1) * dil[1] + 1: dil[1]]
                acc = ((patch - zp_x) * w[mo].astype(np.int64)).sum(axis=(1, 2, 3)) + bias[mo]
                v = acc * np.int64(mult[mo])
                if res is not None:
                    rt, rzp, rmult = res
                    v = v + (rt[:, mo, oy, ox].astype(np.int64) - rzp) * np.int64(rmult[mo])
                out[:, mo, oy, ox] = out_zp + rshift_round(v, shift[mo])
    return np.clip(out, clamp[0], clamp[1]).astype(np.uint8)


def tensor(name, dtype, arr):
    return {"name": name, "dtype": dtype, "shape": list(arr.shape), "data": np.asarray(arr).astype(np.int64).ravel().tolist()}


def conv_attrs(stride, dil, pads, group):
    return {"kernel_shape": None, "strides": list(stride), "dilations": list(dil), "padding": {"Explicit": list(pads)}, "group": group, "activation": None}


cases = []


def conv_case(name, n, c, h, wd, m, k, stride, dil, pads, group, residual, relu):
    x = rng.integers(0, 256, (n, c, h, wd)).astype(np.int64)
    w = rng.integers(-127, 128, (m, c // group, k, k)).astype(np.int64)
    bias = rng.integers(-5000, 5000, m)
    mult = rng.integers(1 << 30, 1 << 31, m)
    shift = rng.integers(36, 42, m)
    zp_x, out_zp = int(rng.integers(0, 256)), int(rng.integers(0, 64)) if not relu else 0
    clamp = [out_zp, 255] if relu else [0, 255]
    ins = [tensor("x", "U8", x), tensor("w", "I8", w), tensor("b", "I32", bias), tensor("m", "I32", mult), tensor("s", "I32", shift)]
    res = None
    t, l, b, r = pads
    oh, ow = window(h, k, stride[0], dil[0], t, b), window(wd, k, stride[1], dil[1], l, r)
    rzp = None
    if residual:
        rt = rng.integers(0, 256, (n, m, oh, ow)).astype(np.int64)
        rzp = int(rng.integers(0, 256))
        rmult = rng.integers(1 << 35, 1 << 40, m)
        res = (rt, rzp, rmult)
        ins += [tensor("r", "U8", rt), tensor("rm", "I64", rmult)]
    y = qconv(x, w, bias, mult, shift, zp_x, stride, dil, pads, group, out_zp, clamp, res)
    op = {"QConv": {"conv": conv_attrs(stride, dil, pads, group), "x_zero_point": zp_x, "residual_zero_point": rzp, "out": {"zero_point": out_zp, "clamp": clamp}}}
    cases.append({"name": name, "op": op, "inputs": ins, "output": tensor("y", "U8", y)})


conv_case("qconv_3x3_asym_pads_relu", 2, 5, 7, 6, 4, 3, (1, 1), (1, 1), (1, 0, 2, 1), 1, False, True)
conv_case("qconv_1x1_stride2", 1, 6, 9, 9, 7, 1, (2, 2), (1, 1), (0, 0, 0, 0), 1, False, False)
conv_case("qconv_7x7_stride2", 1, 3, 16, 16, 4, 7, (2, 2), (1, 1), (3, 3, 3, 3), 1, False, True)
conv_case("qconv_grouped_dilated", 1, 4, 8, 8, 6, 3, (1, 2), (2, 1), (2, 1, 2, 1), 2, False, False)
conv_case("qconv_residual_relu", 2, 3, 6, 6, 5, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1, True, True)

# QAdd
a, b2 = rng.integers(0, 256, (2, 3, 4, 4)), rng.integers(0, 256, (2, 3, 4, 4))
za, zb, zo = 17, 200, 3
ma, mb, sh = int(rng.integers(1 << 29, 1 << 30)), int(rng.integers(1 << 29, 1 << 30)), 31
v = (a - za) * ma + (b2 - zb) * mb
y = np.clip(zo + rshift_round(v, sh), zo, 255).astype(np.uint8)
cases.append({"name": "qadd_relu", "op": {"QAdd": {"a_zero_point": za, "b_zero_point": zb, "a_multiplier": ma, "b_multiplier": mb, "shift": sh, "out": {"zero_point": zo, "clamp": [zo, 255]}}},
              "inputs": [tensor("a", "U8", a), tensor("b", "U8", b2)], "output": tensor("y", "U8", y)})

# QGemm
x = rng.integers(0, 256, (3, 20)); w = rng.integers(-127, 128, (6, 20)); bias = rng.integers(-3000, 3000, 6)
mult = rng.integers(1 << 30, 1 << 31, 6); shift = rng.integers(36, 40, 6); zx, zo = 9, 128
acc = (x - zx) @ w.T + bias
y = np.clip(zo + rshift_round(acc * mult, shift), 0, 255).astype(np.uint8)
cases.append({"name": "qgemm", "op": {"QGemm": {"x_zero_point": zx, "out": {"zero_point": zo, "clamp": [0, 255]}}},
              "inputs": [tensor("x", "U8", x), tensor("w", "I8", w), tensor("b", "I32", bias), tensor("m", "I32", mult), tensor("s", "I32", shift)],
              "output": tensor("y", "U8", y)})

# QMean (global average pooling, requantized)
x = rng.integers(0, 256, (2, 4, 5, 3)); zx, zo, m, s = 11, 4, int(rng.integers(1 << 30, 1 << 31)), 35
sums = (x - zx).sum(axis=(2, 3), keepdims=True)
y = np.clip(zo + rshift_round(sums * m, s), 0, 255).astype(np.uint8)
cases.append({"name": "qmean_global", "op": {"QMean": {"keepdims": True, "x_zero_point": zx, "multiplier": m, "shift": s, "out": {"zero_point": zo, "clamp": [0, 255]}}},
              "inputs": [tensor("x", "U8", x)], "output": tensor("y", "U8", y)})

# QAveragePool, count_include_pad = 0 (per-window counts, div_round half away from zero)
x = rng.integers(0, 256, (1, 2, 5, 5)); zp = 100
xp = np.pad(x - zp, ((0, 0), (0, 0), (1, 1), (1, 1)))
mask = np.pad(np.ones((5, 5)), 1)
y = np.zeros((1, 2, 3, 3), np.int64)
for oy in range(3):
    for ox in range(3):
        s_ = xp[:, :, oy * 2:oy * 2 + 3, ox * 2:ox * 2 + 3].sum(axis=(2, 3))
        cnt = int(mask[oy * 2:oy * 2 + 3, ox * 2:ox * 2 + 3].sum())
        y[:, :, oy, ox] = zp + np.sign(s_) * ((np.abs(s_) + cnt // 2) // cnt)
pool = {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [1, 1], "padding": {"Explicit": [1, 1, 1, 1]}, "ceil_mode": False, "count_include_pad": False}
cases.append({"name": "qaveragepool_exclude_pad", "op": {"QAveragePool": {"pool": pool, "zero_point": zp}}, "inputs": [tensor("x", "U8", x)], "output": tensor("y", "U8", np.clip(y, 0, 255))})

pathlib.Path(__file__).with_name("int_ops.json").write_text(json.dumps({"generator": "tests/golden/make_golden.py", "cases": cases}, indent=0))
print(f"wrote {len(cases)} cases")
