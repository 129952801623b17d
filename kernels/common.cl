// weft kernels: shared definitions and target hooks. OpenCL C 1.2.
//
// Compile-time parameters (set with -D by the runtime's planner):
//   TM  output channels per work-item (the int8 multiply array's lane count); must be 16
//   TP  output pixels per work-item along a row
// Target hooks (exactly one or none is defined; none means portable OpenCL C):
//   WEFT_DOT_VNNI  PoCL's CPU device on an AVX512-VNNI host: the clang builtin for vpdpbusd
//   WEFT_DOT_KHR   devices with cl_khr_integer_dot_product

#ifndef TM
#define TM 16
#endif
#ifndef TP
#define TP 8
#endif
#if TM != 16
#error "TM must be 16: one int16 accumulator vector per output pixel"
#endif

// dot4acc16(acc, x, w): for each of 16 lanes, acc[j] += sum over b of
// u8(x byte b) * s8(w[j] byte b). x holds 4 activations (one per input channel of a
// channel block), w[j] the 4 matching weights of output channel j.
#if defined(WEFT_DOT_VNNI)
__attribute__((target("avx512vnni")))
static inline int16 dot4acc16(int16 acc, int x, int16 w) {
    return __builtin_ia32_vpdpbusd512(acc, (int16)(x), w);
}
#elif defined(WEFT_DOT_KHR)
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
static inline int16 dot4acc16(int16 acc, int x, int16 w) {
    uint ux = as_uint(x);
    int16 r;
    r.s0 = acc.s0 + dot_4x8packed_us_int(ux, as_uint(w.s0));
    r.s1 = acc.s1 + dot_4x8packed_us_int(ux, as_uint(w.s1));
    r.s2 = acc.s2 + dot_4x8packed_us_int(ux, as_uint(w.s2));
    r.s3 = acc.s3 + dot_4x8packed_us_int(ux, as_uint(w.s3));
    r.s4 = acc.s4 + dot_4x8packed_us_int(ux, as_uint(w.s4));
    r.s5 = acc.s5 + dot_4x8packed_us_int(ux, as_uint(w.s5));
    r.s6 = acc.s6 + dot_4x8packed_us_int(ux, as_uint(w.s6));
    r.s7 = acc.s7 + dot_4x8packed_us_int(ux, as_uint(w.s7));
    r.s8 = acc.s8 + dot_4x8packed_us_int(ux, as_uint(w.s8));
    r.s9 = acc.s9 + dot_4x8packed_us_int(ux, as_uint(w.s9));
    r.sa = acc.sa + dot_4x8packed_us_int(ux, as_uint(w.sa));
    r.sb = acc.sb + dot_4x8packed_us_int(ux, as_uint(w.sb));
    r.sc = acc.sc + dot_4x8packed_us_int(ux, as_uint(w.sc));
    r.sd = acc.sd + dot_4x8packed_us_int(ux, as_uint(w.sd));
    r.se = acc.se + dot_4x8packed_us_int(ux, as_uint(w.se));
    r.sf = acc.sf + dot_4x8packed_us_int(ux, as_uint(w.sf));
    return r;
}
#else
static inline int16 dot4acc16(int16 acc, int x, int16 w) {
    int x0 = x & 0xff;
    int x1 = (x >> 8) & 0xff;
    int x2 = (x >> 16) & 0xff;
    int x3 = (x >> 24) & 0xff;
    int16 w0 = (w << 24) >> 24;
    int16 w1 = (w << 16) >> 24;
    int16 w2 = (w << 8) >> 24;
    int16 w3 = w >> 24;
    return acc + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3;
}
#endif

// Requantization (weft_core::quant): clamp(zp + ((v + 2^(s-1)) >> s)).
static inline uchar weft_requant(long v, int shift, int zp, int lo, int hi) {
    long r = (v + (1L << (shift - 1))) >> shift;
    long q = (long)zp + r;
    q = q < (long)lo ? (long)lo : q;
    q = q > (long)hi ? (long)hi : q;
    return (uchar)q;
}

// Index of byte (n, c, y, x) in an NC4HW4 u8 tensor with CB channel blocks.
#define NC4HW4(n, c, y, x, CB, H, W) (((((n) * (CB) + ((c) >> 2)) * (H) + (y)) * (W) + (x)) * 4 + ((c) & 3))
