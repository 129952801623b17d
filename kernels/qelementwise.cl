// Elementwise int8 kernels on NC4HW4 u8 tensors, and the float edges.

// out = clamp(zp + rshift_round((a - zp_a) * ma + (b - zp_b) * mb, shift)), one byte per
// work-item over the whole buffer (padding channels included).
__kernel void qadd(__global const uchar* restrict a, __global const uchar* restrict b, __global uchar* restrict out,
                   int a_zp, int b_zp, int ma, int mb, int shift, int out_zp, int lo, int hi)
{
    const size_t i = get_global_id(0);
    const long v = (long)((int)a[i] - a_zp) * (long)ma + (long)((int)b[i] - b_zp) * (long)mb;
    out[i] = weft_requant(v, shift, out_zp, lo, hi);
}

// f32 NCHW -> u8 NC4HW4: clamp(round_half_even(x / scale) + zp); NaN counts as 0; channels
// past C hold zp. One work-item per row of one channel block, 16 pixels at a time: four 16-float
// loads, one 16-word store (a tail shorter than 16 goes pixel by pixel).
static inline uint quantize_one(float x, float scale, int zp)
{
    float v = rint(x / scale);
    if (isnan(v)) v = 0.0f;
    return (uint)clamp(v + (float)zp, 0.0f, 255.0f);
}

__kernel void quantize(__global const float* restrict x, __global uchar* restrict out,
                       int C, int CB, int H, int W, float scale, int zp)
{
    const int y = get_global_id(1);
    const int z = get_global_id(2);      // n * CB + cb
    const int n = z / CB;
    const int cb = z - n * CB;
    __global uint* o = (__global uint*)out + ((size_t)z * H + y) * W;
    int x0 = 0;
    for (; x0 + 16 <= W; x0 += 16) {
        uint16 word = (uint16)(0);
        for (int b = 0; b < 4; b++) {
            const int c = cb * 4 + b;
            uint16 q = (uint16)((uint)zp);
            if (c < C) {
                float16 v = rint(vload16(0, x + (((size_t)n * C + c) * H + y) * W + x0) / scale);
                v = select(v, (float16)(0.0f), isnan(v));
                q = convert_uint16(clamp(v + (float)zp, 0.0f, 255.0f));
            }
            word |= q << (uint)(8 * b);
        }
        vstore16(word, 0, o + x0);
    }
    for (int xw = x0; xw < W; xw++) {
        uint word = 0;
        for (int b = 0; b < 4; b++) {
            const int c = cb * 4 + b;
            const uint q = c < C ? quantize_one(x[(((size_t)n * C + c) * H + y) * W + xw], scale, zp) : (uint)zp;
            word |= q << (8 * b);
        }
        o[xw] = word;
    }
}

// u8 NC4HW4 -> f32 NCHW: (q - zp) * scale, valid channels only.
__kernel void dequantize(__global const uchar* restrict q, __global float* restrict out,
                         int C, int CB, int H, int W, float scale, int zp)
{
    const int xw = get_global_id(0);
    const int y = get_global_id(1);
    const int z = get_global_id(2);      // n * C + c
    const int n = z / C;
    const int c = z - n * C;
    out[(((size_t)n * C + c) * H + y) * W + xw] = (float)((int)q[NC4HW4(n, c, y, xw, CB, H, W)] - zp) * scale;
}

// One input of a channel concatenation: its C channels requantized into the output's
// channels [off, off + C), `clamp(zp_y + rshift_round((x - zp_x) * mult, shift), 0, 255)`
// (the identity for mult 2^30, shift 30). One work-item per pixel and output channel block
// of the slice; the blocks the slice shares with its neighbours get only its own bytes, and
// the last input also writes the output's padding channels (zp_y). Global
// `(H * W, blocks of the slice, N)`.
__kernel void qconcat(__global const uchar* restrict x, __global uchar* restrict out,
                      int C, int CB, int OC, int OCB, int HW, int off, int zp_x, int mult, int shift,
                      int zp_y, int last)
{
    const int p = get_global_id(0);
    const int ob = get_global_id(1) + off / 4;
    const int n = get_global_id(2);
    if (p >= HW) return;
    __global uchar* o = out + (((size_t)n * OCB + ob) * HW + p) * 4;
    const int ic0 = ob * 4 - off;
    if ((off & 3) == 0 && ic0 + 4 <= C) {
        // a whole word of this input's channels: 4 lanes at once
        const long4 v = convert_long4(vload4(0, x + (((size_t)n * CB + (ic0 >> 2)) * HW + p) * 4)) - zp_x;
        const long4 a = v * mult;
        const long4 r = zp_y + (shift > 0 ? (a + (1L << (shift - 1))) >> shift : a);
        vstore4(convert_uchar4(clamp(r, (long4)(0), (long4)(255))), 0, o);
        return;
    }
    #pragma unroll
    for (int b = 0; b < 4; b++) {
        const int ic = ob * 4 + b - off;
        if (ic >= 0 && ic < C) {
            const long v = (long)x[(((size_t)n * CB + (ic >> 2)) * HW + p) * 4 + (ic & 3)] - zp_x;
            const long a = v * mult;
            const long r = zp_y + (shift > 0 ? (a + (1L << (shift - 1))) >> shift : a);
            o[b] = (uchar)clamp(r, 0L, 255L);
        } else if (last && ob * 4 + b >= OC) {
            o[b] = (uchar)zp_y;
        }
    }
}
