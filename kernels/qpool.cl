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
        result = convert_uchar4(clamp(zp + avg, 0, 255));
    }
    vstore4(result, ((size_t)z * OH + oy) * OW + ox, out);
}

// Mean over H and W, requantized: clamp(zp_out + rshift_round(sum(x - zp_x) * mult, shift)).
// Output NC4HW4 with H = W = 1.
__kernel void qmean(__global const uchar* restrict x, __global uchar* restrict out,
                    int CB, int H, int W, int x_zp, int mult, int shift, int out_zp, int lo, int hi)
{
    const int z = get_global_id(0);     // n * CB * 4 + c
    const int n = z / (CB * 4);
    const int c = z - n * CB * 4;
    long sum = 0;
    for (int y = 0; y < H; y++)
        for (int xw = 0; xw < W; xw++)
            sum += (long)x[NC4HW4(n, c, y, xw, CB, H, W)] - x_zp;
    out[NC4HW4(n, c, 0, 0, CB, 1, 1)] = weft_requant(sum * (long)mult, shift, out_zp, lo, hi);
}
