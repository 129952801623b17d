// Integer convolution (and fully connected layer) of one layer: one work-item computes 16
// output channels of one output pixel (a 16 x 4 multiply array: 16 channels x 4 input
// channels per step), over the layer's W_KH x W_KW positions and W_CBG channel blocks (the
// pipelined loops). Weights packed as qconv's with TM = 16, groups one after another:
// [W_G][ceil(W_MG/16)][W_KH * W_KW][W_CBG][16] words; biases folded with the input zero point
// (cells in the padding read W_PAD, the zero point in 4 bytes); per-channel multiplier,
// shift and addend (and residual multiplier when W_RES) by absolute output channel.
// Global (pixels rounded up to W_WG, 1, N * W_G * ceil(W_MG/16)).
__kernel __attribute__((reqd_work_group_size(W_WG, 1, 1)))
void W_NAME(__global const uint* restrict x, __global const int* restrict w, __global const int* restrict bias,
            __global const int* restrict mult, __global const int* restrict shift,
            __global const long* restrict radd, __global const uchar* res, __global const long* restrict rmult,
            __global uchar* out)
{
    const int MB = (W_MG + 15) / 16;
    const int p = get_global_id(0);
    const int z = get_global_id(2);
    if (p >= W_OH * W_OW) return;            // work-items rounding the launch up to W_WG
    const int n = z / (W_G * MB);
    const int g = (z / MB) % W_G;
    const int mb = z % MB;
    const int oy = p / W_OW;
    const int ox = p - oy * W_OW;
    int acc[16];
    #pragma unroll
    for (int j = 0; j < 16; j++) acc[j] = 0;
    __global const int* wp = w + (size_t)(g * MB + mb) * (W_KH * W_KW * W_CBG * 16);
    __global const uint* xg = x + ((size_t)n * W_CB + (size_t)g * W_CBG) * (W_H * W_W);
    for (int ky = 0; ky < W_KH; ky++) {
        for (int kx = 0; kx < W_KW; kx++) {
            const int iy = oy * W_SY - W_PT + ky * W_DY;
            const int ix = ox * W_SX - W_PL + kx * W_DX;
            const int inside = iy >= 0 && iy < W_H && ix >= 0 && ix < W_W;
            const int cell = inside ? iy * W_W + ix : 0;
            for (int cb = 0; cb < W_CBG; cb++) {
                const uint xw = inside ? xg[(size_t)cb * (W_H * W_W) + cell] : (uint)W_PAD;
                #pragma unroll
                for (int j = 0; j < 16; j++) acc[j] += wdot4(xw, wp[j]);
                wp += 16;
            }
        }
    }
    const int OCB = (W_M + 3) / 4;
    #pragma unroll
    for (int j = 0; j < 16; j++) {
        const int ml = mb * 16 + j;
        if (ml < W_MG) {
            const int m = g * W_MG + ml;
            const size_t at = WIDX(n, m, oy, ox, OCB, W_OH, W_OW);
            long v = (long)(acc[j] + bias[m]) * (long)mult[m];
#if W_RES
            v += (long)res[at] * rmult[m];
#endif
            out[at] = wrequant(v, radd[m], shift[m], W_LO, W_HI);
        }
    }
}
