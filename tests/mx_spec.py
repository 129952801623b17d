"""The OCP Microscaling (MX v1.0) conversion written independently of weft with numpy and
ml_dtypes' element types (float8_e4m3fn, float8_e5m2, float6_e3m2fn, float6_e2m3fn,
float4_e2m1fn and the E8M0 scale type float8_e8m0fnu), to check `weft mx` against.

Rules (as docs/MX.md states them): blocks of 32 along one axis, the last one partial; a
block with a NaN or an infinity gets the NaN scale; otherwise the shared exponent is
floor(log2(amax)) - emax_elem clamped to [-127, 127] (-127 for an all-zero block); elements
are V / 2^e rounded to nearest even by ml_dtypes, saturated to the largest normal; MXINT8
elements are round-half-even(V / 2^e * 64) clipped to [-127, 127].
"""

import ml_dtypes
import numpy as np

BLOCK = 32

# name: (element type or None for MXINT8, emax_elem, largest normal)
FORMATS = {
    "mxint8": (None, 0, 127 / 64),
    "mxfp8_e4m3": (ml_dtypes.float8_e4m3fn, 8, 448.0),
    "mxfp8_e5m2": (ml_dtypes.float8_e5m2, 15, 57344.0),
    "mxfp6_e3m2": (ml_dtypes.float6_e3m2fn, 4, 28.0),
    "mxfp6_e2m3": (ml_dtypes.float6_e2m3fn, 2, 7.5),
    "mxfp4_e2m1": (ml_dtypes.float4_e2m1fn, 2, 6.0),
}


def element_values(fmt):
    """Every finite value of the element format, sorted, without duplicates."""
    dtype, _, _ = FORMATS[fmt]
    if dtype is None:
        return np.arange(-127, 128) / 64.0
    bits = np.arange(256, dtype=np.uint8)
    width = 8 if fmt.startswith("mxfp8") else (6 if fmt.startswith("mxfp6") else 4)
    vals = bits[: 1 << width].view(dtype).astype(np.float64)
    return np.unique(vals[np.isfinite(vals)])


def quantize(x, fmt, axis=-1):
    """Returns (dequantized float32, scale codes uint8, element codes uint8) as `weft mx`
    writes them."""
    dtype, emax, maxnorm = FORMATS[fmt]
    x = np.asarray(x, dtype=np.float32)
    axis = axis % x.ndim
    xm = np.moveaxis(x, axis, -1)
    n = xm.shape[-1]
    nb = -(-n // BLOCK)
    padded = np.zeros(xm.shape[:-1] + (nb * BLOCK,), dtype=np.float64)
    padded[..., :n] = xm
    blocks = padded.reshape(xm.shape[:-1] + (nb, BLOCK))
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(blocks), axis=-1)
    bad = ~np.isfinite(amax)
    safe = np.where(bad | (amax == 0), 1.0, amax)
    _, ex = np.frexp(safe)  # safe = m * 2^ex, m in [0.5, 1)
    e = (ex - 1) - emax
    e = np.where(amax == 0, -127, e)
    e = np.clip(e, -127, 127)
    scale = np.ldexp(1.0, e).astype(ml_dtypes.float8_e8m0fnu)
    scale_codes = scale.view(np.uint8).copy()
    scale_codes[bad] = 0xFF
    v = np.where(bad[..., None], 0.0, blocks) / np.ldexp(1.0, e)[..., None]
    v = np.clip(v, -maxnorm, maxnorm)
    if dtype is None:
        i = np.clip(np.round(v * 64), -127, 127) + 0.0  # an integer has no -0
        codes = i.astype(np.int8).view(np.uint8)
        elem = i / 64.0
    else:
        p = v.astype(np.float32).astype(dtype)
        codes = p.view(np.uint8)
        elem = p.astype(np.float64)
    deq = (elem * np.ldexp(1.0, e)[..., None]).astype(np.float32)
    deq[bad] = np.nan
    codes = np.where(bad[..., None], 0, codes).astype(np.uint8)
    shape_m = xm.shape
    deq = deq.reshape(shape_m[:-1] + (nb * BLOCK,))[..., :n]
    codes = codes.reshape(shape_m[:-1] + (nb * BLOCK,))[..., :n]
    return (
        np.moveaxis(deq, -1, axis),
        np.moveaxis(scale_codes, -1, axis),
        np.moveaxis(codes, -1, axis),
    )
