// Residual-free integer add of one layer, every constant compiled in: out = clamp(zp +
// rshift_round((a - W_AZP) * W_MA + (b - W_BZP) * W_MBV, W_SHIFT)), one byte per work-item
// over an image's W_BYTES bytes (padding channels included). Global (W_BYTES rounded up
// to W_WG, 1, N).
__kernel __attribute__((reqd_work_group_size(W_WG, 1, 1)))
void W_NAME(__global const uchar* restrict a, __global const uchar* restrict b, __global uchar* restrict out)
{
    const int i = get_global_id(0);
    if (i >= W_BYTES) return;
    const size_t at = (size_t)get_global_id(2) * W_BYTES + i;
    const long v = (long)((int)a[at] - W_AZP) * (long)W_MA + (long)((int)b[at] - W_BZP) * (long)W_MBV;
    out[at] = wrequant(v, (long)W_ZP << W_SHIFT | (1L << (W_SHIFT - 1)), W_SHIFT, W_LO, W_HI);
}
