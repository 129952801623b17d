// weft's FPGA kernel variant: shared definitions. OpenCL C 1.2, plain C only (no vendor
// builtins, no extensions), so that an FPGA OpenCL compiler (Intel's aoc, AMD's v++) takes
// it as written and an emulator (PoCL, Oclgrind) runs the same source.
//
// Every layer gets its own kernel, instantiated from one of the templates beside this file
// (wconv.cl, wadd.cl, wpool.cl, wmean.cl) with the layer's geometry and constants as
// macros (W_*): loops have compile-time bounds, each kernel has a required work-group size
// (W_WG x 1 x 1), and private arrays are indexed only by unrolled loop counters (registers).
// The runtime writes `#define W_... value` before each instance and `#undef` after it; the
// same source is what `weft program fpga` hands to aoc or v++.

// One int8 multiply step: 4 u8 activations (one NC4HW4 word: 4 channels of one pixel)
// against the 4 s8 weights of one output channel (one packed weight word): 4 DSP
// multiplies and their sum.
static inline int wdot4(uint x, int w)
{
    const uchar4 a = as_uchar4(x);
    const char4 b = as_char4(w);
    return (int)a.s0 * (int)b.s0 + (int)a.s1 * (int)b.s1 + (int)a.s2 * (int)b.s2 + (int)a.s3 * (int)b.s3;
}

// Requantization (weft_core::quant), folded as in qconv.cl: clamp((v + add) >> shift) where
// the planner's add holds zp_out * 2^shift + 2^(shift-1) (and - zp_r * rmult).
static inline uchar wrequant(long v, long add, int shift, int lo, int hi)
{
    long q = (v + add) >> shift;
    q = q < (long)lo ? (long)lo : q;
    q = q > (long)hi ? (long)hi : q;
    return (uchar)q;
}

// Index of byte (n, c, y, x) in an NC4HW4 u8 tensor with CB channel blocks of H x W.
#define WIDX(n, c, y, x, CB, H, W) (((((size_t)(n) * (CB) + ((c) >> 2)) * (H) + (y)) * (W) + (x)) * 4 + ((c) & 3))
