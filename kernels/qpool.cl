// Pooling on u8 NC4HW4 tensors; one output byte per work-item.

// Max pooling; padded cells never win. Average pooling (is_avg): zp + div_round(sum(x -
// zp), count), rounding half away from zero, count including padding up to the declared
// end padding when count_include_pad. One work-item per output word (4 channels at once).
__kernel void qpool(__global const uchar* restrict x, __global uchar* restrict out,
                    int CB, int H, int W, int OH, int OW, int KH, int KW, int SY, int SX, int DY, int DX,
                    int PT, int PL, int PB, int PR, int is_avg, int include_pad, int zp)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int z = get_global_id(2);     // n * CB + cb
    __global const uchar* plane = x + (size_t)z * H * W * 4;
    const int y0 = oy * SY - PT;
    const int x0 = ox * SX - PL;
    uchar4 result;
    if (!is_avg) {
        uchar4 best = (uchar4)(0);
        for (int ky = 0; ky < KH; ky++) {
            const int iy = y0 + ky * DY;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; kx++) {
                const int ix = x0 + kx * DX;
                if (ix >= 0 && ix < W) best = max(best, vload4(iy * W + ix, plane));
            }
        }
        result = best;
    } else {
        const int y_end = min(y0 + KH, H + PB);
        const int x_end = min(x0 + KW, W + PR);
        const int padded = (y_end - y0) * (x_end - x0);
        const int ya = max(y0, 0), yb = min(y_end, H);
        const int xa = max(x0, 0), xb = min(x_end, W);
        int4 sum = (int4)(0);
        for (int iy = ya; iy < yb; iy++)
            for (int ix = xa; ix < xb; ix++)
                sum += convert_int4(vload4(iy * W + ix, plane)) - zp;
        int count = include_pad ? padded : max(yb - ya, 0) * max(xb - xa, 0);
        if (count < 1) count = 1;
        const int4 avg = select(-((-sum + count / 2) / count), (sum + count / 2) / count, sum >= 0);
        result = convert_uchar4(clamp(zp + avg, (int4)(0), (int4)(255)));
    }
    vstore4(result, ((size_t)z * OH + oy) * OW + ox, out);
}

// Max pooling, 16 output pixels of a row at a time (a work-item walks its row in steps of the
// launch's width; the planner launches one per row): for each window cell, the 16 input
// words (every SX-th: one or two vector loads, or a gather past stride 2) go through one
// byte-wise max; cells outside the input count as 0, which never wins over a real u8 (the
// same result as skipping them). A tail shorter than 16 stores only its pixels. Arguments as
// qpool's (PB, PR, is_avg and include_pad unused), then the input buffer's words.
__kernel void qmaxpool(__global const uint* restrict x, __global uint* restrict out,
                       int CB, int H, int W, int OH, int OW, int KH, int KW, int SY, int SX, int DY, int DX,
                       int PT, int PL, int PB, int PR, int is_avg, int include_pad, int in_words)
{
    const int oy = get_global_id(1);
    const int z = get_global_id(2);     // n * CB + cb
    const long plane = (long)z * H * W;
    const int16 lane = LANES16;
    for (int ox0 = get_global_id(0) * 16; ox0 < OW; ox0 += get_global_size(0) * 16) {
        const int16 col0 = (ox0 + lane) * SX - PL;
        // byte-wise max of 16 words, as four uchar16 (OpenCL vectors stop at 16 elements)
        uchar16 b0 = (uchar16)(0), b1 = (uchar16)(0), b2 = (uchar16)(0), b3 = (uchar16)(0);
        for (int ky = 0; ky < KH; ky++) {
            const int iy = oy * SY - PT + ky * DY;
            if (iy < 0 || iy >= H) continue;
            const long row = plane + (long)iy * W;
            for (int kx = 0; kx < KW; kx++) {
                const uint16 v = row_words16(x, row, col0 + kx * DX, W, SX, in_words, 0u);
                b0 = max(b0, as_uchar16(v.s0123));
                b1 = max(b1, as_uchar16(v.s4567));
                b2 = max(b2, as_uchar16(v.s89ab));
                b3 = max(b3, as_uchar16(v.scdef));
            }
        }
        __global uint* o = out + ((size_t)z * OH + oy) * OW + ox0;
        const uint16 words = (uint16)(as_uint4(b0), as_uint4(b1), as_uint4(b2), as_uint4(b3));
        store_words16(o, words, OW - ox0);
    }
}

// Mean over H and W, requantized: clamp(zp_out + rshift_round(sum(x - zp_x) * mult, shift)).
// Output NC4HW4 with H = W = 1. One work-item per channel block (4 channels).
__kernel void qmean(__global const uchar* restrict x, __global uchar* restrict out,
                    int CB, int H, int W, int x_zp, int mult, int shift, int out_zp, int lo, int hi)
{
    const int z = get_global_id(0);     // n * CB + cb
    __global const uint* plane = (__global const uint*)x + (size_t)z * H * W;
    // 4 words (16 bytes, 4 per channel) per step into 32-bit lanes, widened every 2^22 steps
    // (at most 2^22 * 255 per lane: no overflow), then the lanes of each channel added
    const int HW = H * W;
    long4 sum = (long4)(0);
    int i = 0;
    while (i + 4 <= HW) {
        const int end = i + 4 * min((HW - i) / 4, 1 << 22);
        uint16 part = (uint16)(0);
        for (; i < end; i += 4) part += convert_uint16(as_uchar16(vload4(0, plane + i)));
        sum += convert_long4(part.s0123) + convert_long4(part.s4567) + convert_long4(part.s89ab)
               + convert_long4(part.scdef);
    }
    for (; i < HW; i++) sum += convert_long4(as_uchar4(plane[i]));
    const long4 centred = sum - (long)x_zp * (long)H * (long)W;
    uchar r[4];
    r[0] = weft_requant(centred.s0 * (long)mult, shift, out_zp, lo, hi);
    r[1] = weft_requant(centred.s1 * (long)mult, shift, out_zp, lo, hi);
    r[2] = weft_requant(centred.s2 * (long)mult, shift, out_zp, lo, hi);
    r[3] = weft_requant(centred.s3 * (long)mult, shift, out_zp, lo, hi);
    vstore4((uchar4)(r[0], r[1], r[2], r[3]), z, out);
}
