// Max or average pooling of one layer (W_AVG), one output word (4 channels) per work-item.
// Max: padded cells never win. Average: W_ZP + div_round(sum(x - W_ZP), count), rounding
// half away from zero, count including padding up to the declared end padding when
// W_INCLUDE. Global (W_OH * W_OW rounded up to W_WG, 1, N * W_CB).
__kernel __attribute__((reqd_work_group_size(W_WG, 1, 1)))
void W_NAME(__global const uchar* restrict x, __global uchar* restrict out)
{
    const int p = get_global_id(0);
    if (p >= W_OH * W_OW) return;
    const int z = get_global_id(2);          // n * W_CB + cb
    const int oy = p / W_OW;
    const int ox = p - oy * W_OW;
    __global const uchar* plane = x + (size_t)z * (W_H * W_W * 4);
    const int y0 = oy * W_SY - W_PT;
    const int x0 = ox * W_SX - W_PL;
    int4 acc = (int4)(0);
    int count = 0;
    for (int ky = 0; ky < W_KH; ky++) {
        for (int kx = 0; kx < W_KW; kx++) {
            const int iy = y0 + ky * W_DY;
            const int ix = x0 + kx * W_DX;
            if (iy >= 0 && iy < W_H && ix >= 0 && ix < W_W) {
                const int4 v = convert_int4(vload4(iy * W_W + ix, plane));
                acc = W_AVG ? acc + v - (int4)(W_ZP) : max(acc, v);
                count++;
            }
        }
    }
    uchar4 result;
#if W_AVG
    if (W_INCLUDE) {
        const int y_end = min(y0 + W_KH, W_H + W_PB);
        const int x_end = min(x0 + W_KW, W_W + W_PR);
        count = (y_end - y0) * (x_end - x0);
    }
    if (count < 1) count = 1;
    const int4 avg = select(-((-acc + (int4)(count / 2)) / (int4)(count)), (acc + (int4)(count / 2)) / (int4)(count),
                            acc >= (int4)(0));
    result = convert_uchar4(clamp((int4)(W_ZP) + avg, (int4)(0), (int4)(255)));
#else
    result = convert_uchar4(acc);
#endif
    vstore4(result, (size_t)z * (W_OH * W_OW) + p, out);
}
