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

// f32 NCHW -> u8 NC4HW4: clamp(round_half_even(x / scale) + zp); channels past C hold zp.
__kernel void quantize(__global const float* restrict x, __global uchar* restrict out,
                       int C, int CB, int H, int W, float scale, int zp)
{
    const int xw = get_global_id(0);
    const int y = get_global_id(1);
    const int z = get_global_id(2);      // n * CB * 4 + c
    const int n = z / (CB * 4);
    const int c = z - n * CB * 4;
    uchar q = (uchar)zp;
    if (c < C) {
        float v = rint(x[(((size_t)n * C + c) * H + y) * W + xw] / scale);
        if (isnan(v)) v = 0.0f;
        v = clamp(v + (float)zp, 0.0f, 255.0f);
        q = (uchar)v;
    }
    out[NC4HW4(n, c, y, xw, CB, H, W)] = q;
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
