// Integer convolution (u8 x s8 -> i32) with fused bias, requantization, clamp (ReLU) and
// optional residual add. Activations NC4HW4 (4 channels per 32-bit word); weights packed
// as [ceil(M/16)][CB*KH*KW][16] 32-bit words, each word the 4 weights of one output
// channel for one channel block at one kernel position. One work-item computes TM = 16
// output channels x TP output pixels of one row.
//
// Arithmetic: acc = bias'[m] + sum(x * w) where bias' = bias - zp_x * sum(w) and cells in
// the padding read zp_x (pad_word), which equals weft's reference
// bias + sum((x - zp_x) * w). Then clamp(zp_out + rshift_round(acc * mult[m]
// (+ (r - zp_r) * rmult[m]), shift[m])).
__kernel void qconv(
    __global const uint* restrict x,
    __global const int* restrict w,
    __global const int* restrict bias,
    __global const int* restrict mult,
    __global const int* restrict shift,
    __global const uchar* restrict res,
    __global const long* restrict rmult,
    __global uchar* restrict out,
    int CB, int H, int W,          // input channel blocks (whole tensor) and size
    int cb0, int CBG,              // first block and block count of this group
    int M, int m0, int OCB,        // channels in this group, first output channel, output blocks
    int OH, int OW,
    int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL,
    uint pad_word, int out_zp, int lo, int hi, int res_zp, int has_res)
{
    const int oxb = get_global_id(0);
    const int oy = get_global_id(1);
    const int z = get_global_id(2);
    const int MB = (M + TM - 1) / TM;
    const int n = z / MB;
    const int mb = z - n * MB;
    const int ox0 = oxb * TP;

    int16 acc[TP];
    #pragma unroll
    for (int p = 0; p < TP; p++) acc[p] = (int16)(0);

    const int K4 = CBG * KH * KW;
    __global const int* wp = w + (size_t)mb * K4 * TM;
    for (int cb = 0; cb < CBG; cb++) {
        __global const uint* plane = x + ((size_t)n * CB + cb0 + cb) * H * W;
        for (int ky = 0; ky < KH; ky++) {
            const int iy = oy * SY - PT + ky * DY;
            const int row_ok = iy >= 0 && iy < H;
            for (int kx = 0; kx < KW; kx++) {
                const int16 wv = vload16(0, wp);
                wp += TM;
                #pragma unroll
                for (int p = 0; p < TP; p++) {
                    const int ix = (ox0 + p) * SX - PL + kx * DX;
                    const uint xv = (row_ok && ix >= 0 && ix < W) ? plane[iy * W + ix] : pad_word;
                    acc[p] = dot4acc16(acc[p], as_int(xv), wv);
                }
            }
        }
    }

    #pragma unroll
    for (int p = 0; p < TP; p++) {
        const int ox = ox0 + p;
        if (ox >= OW) break;
        int lanes[TM];
        vstore16(acc[p], 0, lanes);
        #pragma unroll
        for (int j = 0; j < TM; j++) {
            const int ml = mb * TM + j;
            if (ml < M) {
                const int m = m0 + ml;
                long v = (long)(lanes[j] + bias[m]) * (long)mult[m];
                const size_t idx = NC4HW4(n, m, oy, ox, OCB, OH, OW);
                if (has_res) v += (long)((int)res[idx] - res_zp) * rmult[m];
                out[idx] = weft_requant(v, shift[m], out_zp, lo, hi);
            }
        }
    }
}
