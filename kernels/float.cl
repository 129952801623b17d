// Float kernels: f32 and f16 packages. Activations are plain row-major NCHW (so every
// reshape is a view) in the storage type FT; arithmetic is f32 throughout. The runtime
// includes this file twice: with WEFT_HALF 0 (kernels named *_f32, float storage) and
// WEFT_HALF 1 (kernels named *_f16, IEEE half storage through vload_half/vstore_half_rte,
// which OpenCL 1.2 has without cl_khr_fp16). Weights and biases are f32 in both.

#if WEFT_HALF
#define FT half
#define FNAME(n) n##_f16
#define FLD(p, i) vload_half((size_t)(i), (p))
#define FST(p, i, v) vstore_half_rte((v), (size_t)(i), (p))
#else
#define FT float
#define FNAME(n) n##_f32
#define FLD(p, i) ((p)[i])
#define FST(p, i, v) ((p)[i] = (v))
#endif

// Convolution with fused bias and clamp (ReLU is lo = 0). Weights packed as
// [ceil(M/16)][CG*KH*KW][16] floats: 16 output channels for one input channel at one
// kernel position. One work-item computes 16 output channels (a float16) x TP pixels of a row.
// Padding cells read 0. A fully connected layer is a convolution with KH = H, KW = W.
__kernel void FNAME(fconv)(
    __global const FT* restrict x,
    __global const float* restrict w,
    __global const float* restrict bias,
    __global FT* restrict out,
    int C, int H, int W,           // input channels (whole tensor) and size
    int c0, int CG,                // first input channel and channel count of this group
    int M, int m0, int MT,         // channels in this group, first output channel, all output channels
    int OH, int OW,
    int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL,
    float lo, float hi)
{
    const int oxb = get_global_id(0);
    const int oy = get_global_id(1);
    const int z = get_global_id(2);
    const int MB = (M + 15) / 16;
    const int n = z / MB;
    const int mb = z - n * MB;
    const int ox0 = oxb * TP;

    float16 acc[TP];
    #pragma unroll
    for (int p = 0; p < TP; p++) acc[p] = (float16)(0.0f);

    __global const float* wp = w + (size_t)mb * CG * KH * KW * 16;
    for (int c = 0; c < CG; c++) {
        __global const FT* plane = x + ((size_t)n * C + c0 + c) * H * W;
        for (int ky = 0; ky < KH; ky++) {
            const int iy = oy * SY - PT + ky * DY;
            const int row_ok = iy >= 0 && iy < H;
            for (int kx = 0; kx < KW; kx++) {
                const float16 wv = vload16(0, wp);
                wp += 16;
                #pragma unroll
                for (int p = 0; p < TP; p++) {
                    const int ix = (ox0 + p) * SX - PL + kx * DX;
                    const float xv = (row_ok && ix >= 0 && ix < W) ? FLD(plane, iy * W + ix) : 0.0f;
                    acc[p] = mad((float16)(xv), wv, acc[p]);
                }
            }
        }
    }

    #pragma unroll
    for (int p = 0; p < TP; p++) {
        const int ox = ox0 + p;
        if (ox >= OW) break;
        float lanes[16];
        vstore16(acc[p], 0, lanes);
        #pragma unroll
        for (int j = 0; j < 16; j++) {
            const int ml = mb * 16 + j;
            if (ml < M) {
                const int m = m0 + ml;
                const float v = clamp(lanes[j] + bias[m], lo, hi);
                FST(out, (((size_t)n * MT + m) * OH + oy) * OW + ox, v);
            }
        }
    }
}

// out = clamp(a + b, lo, hi) over equal shapes; one element per work-item.
__kernel void FNAME(fadd)(__global const FT* restrict a, __global const FT* restrict b, __global FT* restrict out,
                          float lo, float hi)
{
    const size_t i = get_global_id(0);
    FST(out, i, clamp(FLD(a, i) + FLD(b, i), lo, hi));
}

// out = clamp(x, lo, hi) (ReLU, Clip); one element per work-item. NaN stays NaN.
__kernel void FNAME(fclamp)(__global const FT* restrict x, __global FT* restrict out, float lo, float hi)
{
    const size_t i = get_global_id(0);
    const float v = FLD(x, i);
    FST(out, i, isnan(v) ? v : clamp(v, lo, hi));
}

// Max or average pooling over NCHW planes; one output element per work-item. Average:
// the count includes padding up to the declared end padding when include_pad.
__kernel void FNAME(fpool)(__global const FT* restrict x, __global FT* restrict out,
                           int H, int W, int OH, int OW, int KH, int KW, int SY, int SX, int DY, int DX,
                           int PT, int PL, int PB, int PR, int is_avg, int include_pad)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int z = get_global_id(2);     // n * C + c
    __global const FT* plane = x + (size_t)z * H * W;
    const int y0 = oy * SY - PT;
    const int x0 = ox * SX - PL;
    float result;
    if (!is_avg) {
        float best = -INFINITY;
        for (int ky = 0; ky < KH; ky++) {
            const int iy = y0 + ky * DY;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; kx++) {
                const int ix = x0 + kx * DX;
                if (ix >= 0 && ix < W) best = fmax(best, FLD(plane, iy * W + ix));
            }
        }
        result = best;
    } else {
        const int y_end = min(y0 + KH, H + PB);
        const int x_end = min(x0 + KW, W + PR);
        const int padded = (y_end - y0) * (x_end - x0);
        const int ya = max(y0, 0), yb = min(y_end, H);
        const int xa = max(x0, 0), xb = min(x_end, W);
        float sum = 0.0f;
        for (int iy = ya; iy < yb; iy++)
            for (int ix = xa; ix < xb; ix++)
                sum += FLD(plane, iy * W + ix);
        const int count = include_pad ? padded : max(yb - ya, 0) * max(xb - xa, 0);
        result = count > 0 ? sum / (float)count : 0.0f;
    }
    FST(out, ((size_t)z * OH + oy) * OW + ox, result);
}

// Mean of each of the global size's planes of HW elements (global average pooling).
__kernel void FNAME(fmean)(__global const FT* restrict x, __global FT* restrict out, int HW)
{
    const int z = get_global_id(0);     // n * C + c
    __global const FT* plane = x + (size_t)z * HW;
    float sum = 0.0f;
    for (int i = 0; i < HW; i++) sum += FLD(plane, i);
    FST(out, z, sum / (float)HW);
}

#undef FT
#undef FNAME
#undef FLD
#undef FST
