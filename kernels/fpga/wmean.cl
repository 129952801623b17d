// Global average pooling of one layer, requantized, one channel block (4 channels) per
// work-item: clamp(W_OZP + rshift_round(sum(x - W_XZP) * W_MULT, W_SHIFT)). Global (N * W_CB
// rounded up to W_WG, 1, 1); `count` is N * W_CB.
__kernel __attribute__((reqd_work_group_size(W_WG, 1, 1)))
void W_NAME(__global const uchar* restrict x, __global uchar* restrict out, int count)
{
    const int z = get_global_id(0);          // n * W_CB + cb
    if (z >= count) return;
    __global const uchar* plane = x + (size_t)z * (W_HW * 4);
    long s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int i = 0; i < W_HW; i++) {
        const uchar4 v = vload4(i, plane);
        s0 += v.s0;
        s1 += v.s1;
        s2 += v.s2;
        s3 += v.s3;
    }
    const long centre = (long)W_XZP * W_HW;
    const long add = ((long)W_OZP << W_SHIFT) + (1L << (W_SHIFT - 1));
    vstore4((uchar4)(wrequant((s0 - centre) * W_MULT, add, W_SHIFT, W_LO, W_HI),
                     wrequant((s1 - centre) * W_MULT, add, W_SHIFT, W_LO, W_HI),
                     wrequant((s2 - centre) * W_MULT, add, W_SHIFT, W_LO, W_HI),
                     wrequant((s3 - centre) * W_MULT, add, W_SHIFT, W_LO, W_HI)),
            z, out);
}
