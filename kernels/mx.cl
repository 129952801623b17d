// MX layers (OCP MX v1.0 block floating point) in f32 packages of MX precision: the
// arithmetic of crates/core/src/mx.rs and the layer order of crates/reference/src/mx.rs,
// bit for bit. Activations are f32 NCHW like the float kernels'.
//
// mx_act converts a layer's input into blocks of 32 along the channels of each group:
// signed step counts (value = steps * 2^(e + quantum)) channels last, and one exponent per
// block (e + quantum; MX_NAN_EXP for the NaN scale). mx_conv then sums each block exactly
// in integers (path 0: int, path 1: long) or in f32 (path 2: E5M2; the buffers then hold
// the f32 bits of the step counts), scales the sum by its two exponents with ldexp (exact,
// one rounding, as the reference's f64 product), and adds the blocks in f32 in the order
// ky, kx, block.

#pragma OPENCL FP_CONTRACT OFF

#define MX_NAN_EXP INT_MIN
#define MX_BLOCK 32

// floor(log2(|v|)) of a finite non-zero f32 given its magnitude bits.
inline int mx_floor_log2(uint mag)
{
    const int e = (int)(mag >> 23);
    return e == 0 ? (31 - (int)clz(mag)) - 149 : e - 127;
}

// m * 2^shift rounded to an integer, ties to even (m >= 0).
inline long mx_round_shift(long m, int shift)
{
    if (shift >= 0) return m << min(shift, 62);
    const int s = -shift;
    if (s > 62) return 0;
    const long q = m >> s;
    const long rem = m - (q << s);
    const long half_ = 1L << (s - 1);
    return (rem > half_ || (rem == half_ && (q & 1))) ? q + 1 : q;
}

// v / 2^e rounded to the element format, saturating: signed steps of 2^quantum.
inline long mx_steps(float v, int e, int emin, int mbits, int quantum, long max_steps)
{
    const uint bits = as_uint(v);
    const uint mag = bits & 0x7fffffffu;
    if (mag == 0) return 0;
    const int ex = (int)(mag >> 23);
    const long m = ex == 0 ? (long)mag : (long)((mag & 0x7fffffu) | 0x800000u);
    const int q = ex == 0 ? -149 : ex - 150;
    const int lg = mx_floor_log2(mag) - e;
    const int step = max(lg, emin) - mbits;
    const long n = mx_round_shift(m, q - e - step);
    long s = n << clamp(step - quantum, 0, 62);
    s = min(s, max_steps);
    return (bits >> 31) ? -s : s;
}

// One work-item per (image and pixel, block of a group): global (N*HW, G*NBG).
__kernel void mx_act(__global const float* restrict x, __global int* restrict steps, __global int* restrict exps,
                     int C, int HW, int CG, int NBG, int emin, int mbits, int emax, int quantum, uint max_steps,
                     int f32_path)
{
    const int np = get_global_id(0);          // n * HW + p
    const int gb = get_global_id(1);          // g * NBG + b
    const int n = np / HW;
    const int p = np - n * HW;
    const int g = gb / NBG;
    const int b = gb - g * NBG;
    const int c0 = g * CG + b * MX_BLOCK;
    const int len = min(MX_BLOCK, CG - b * MX_BLOCK);
    const int blocks = (C / CG) * NBG;
    __global const float* src = x + ((size_t)n * C + c0) * HW + p;
    __global int* dst = steps + (size_t)np * C + c0;
    float amax = 0.0f;
    int finite = 1;
    for (int k = 0; k < len; k++) {
        const float v = src[(size_t)k * HW];
        finite &= isfinite(v);
        amax = fmax(amax, fabs(v));
    }
    if (!finite) {
        for (int k = 0; k < len; k++) dst[k] = 0;
        exps[(size_t)np * blocks + gb] = MX_NAN_EXP;
        return;
    }
    const int e = amax == 0.0f ? -127 : clamp(mx_floor_log2(as_uint(amax)) - emax, -127, 127);
    for (int k = 0; k < len; k++) {
        const long s = mx_steps(src[(size_t)k * HW], e, emin, mbits, quantum, (long)max_steps);
        dst[k] = f32_path ? as_int((float)s) : (int)s;
    }
    exps[(size_t)np * blocks + gb] = e + quantum;
}

// One output per work-item: global (OW, OH, N*M). Weights [M][KH*KW][CG] steps and
// [M][KH*KW][NBG] exponents; act_kind 0: none, 1: fmin(fmax(v, lo), hi).
__kernel void mx_conv(__global const int* restrict act, __global const int* restrict aexp,
                      __global const int* restrict w, __global const int* restrict wexp,
                      __global const float* restrict bias, __global float* restrict out,
                      int C, int H, int W, int CG, int M, int MG, int OH, int OW,
                      int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL,
                      int path, int act_kind, float lo, float hi)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int z = get_global_id(2);
    const int n = z / M;
    const int m = z - n * M;
    const int g = m / MG;
    const int NBG = (CG + MX_BLOCK - 1) / MX_BLOCK;
    const int blocks = (C / CG) * NBG;
    const int taps = KH * KW;
    float acc = 0.0f;
    for (int ky = 0; ky < KH; ky++) {
        const int iy = oy * SY - PT + ky * DY;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < KW; kx++) {
            const int ix = ox * SX - PL + kx * DX;
            if (ix < 0 || ix >= W) continue;
            const size_t pixel = ((size_t)n * H + iy) * W + ix;
            const int t = ky * KW + kx;
            for (int b = 0; b < NBG; b++) {
                const int len = min(MX_BLOCK, CG - b * MX_BLOCK);
                const int we = wexp[((size_t)m * taps + t) * NBG + b];
                const int xe = aexp[pixel * blocks + g * NBG + b];
                __global const int* wp = w + ((size_t)m * taps + t) * CG + b * MX_BLOCK;
                __global const int* xp = act + pixel * C + g * CG + b * MX_BLOCK;
                float sum;
                if (we == MX_NAN_EXP || xe == MX_NAN_EXP) {
                    sum = NAN;
                } else if (path == 0) {
                    int s = 0;
                    for (int k = 0; k < len; k++) s += wp[k] * xp[k];
                    sum = ldexp((float)s, we + xe);
                } else if (path == 1) {
                    long s = 0;
                    for (int k = 0; k < len; k++) s += (long)wp[k] * (long)xp[k];
                    sum = ldexp((float)s, we + xe);
                } else {
                    float s = 0.0f;
                    for (int k = 0; k < len; k++) s += as_float(wp[k]) * as_float(xp[k]);
                    sum = ldexp(s, we + xe);
                }
                acc += sum;
            }
        }
    }
    float v = acc + bias[m];
    if (act_kind) v = fmin(fmax(v, lo), hi);
    out[(((size_t)n * M + m) * OH + oy) * OW + ox] = v;
}
