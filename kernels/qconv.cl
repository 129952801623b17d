// Integer convolution (u8 x s8 -> i32) with fused bias, requantization, clamp (ReLU) and
// optional residual add, as an implicit GEMM: M = output channels, N = output pixels, K =
// channel blocks x kernel positions. Activations NC4HW4 (4 channels per 32-bit word);
// weights packed as [ceil(M/TM)][KH*KW][CBG][TM] 32-bit words, each word the 4 weights of
// one output channel for one channel block at one kernel position.
//
// One work-item computes TM output channels x 16 consecutive output pixels (of the
// flattened OH*OW plane): 16 pixels are the 16 lanes of an int16 vector, so each kernel
// position and channel block is one 16-word activation load feeding TM 4-way dot products
// (one vpdpbusd each with the VNNI hook; a 16 x 4 multiply array per output channel on an
// FPGA). When the input pixels of the 16 lanes are consecutive words (stride 1 and OW == W)
// the load is one vector load masked by the padding; otherwise each lane is gathered.
//
// Arithmetic: acc = bias'[m] + sum(x * w) where bias' = bias - zp_x * sum(w) and cells in
// the padding read zp_x (pad_word), which equals weft's reference
// bias + sum((x - zp_x) * w). Then clamp(zp_out + rshift_round(acc * mult[m]
// (+ (r - zp_r) * rmult[m]), shift[m])), computed as
// clamp((acc * mult[m] (+ r * rmult[m]) + add[m]) >> shift[m]) with the planner's
// add[m] = zp_out * 2^shift + 2^(shift-1) (- zp_r * rmult[m]): the same value, since adding a
// multiple of 2^shift before an arithmetic shift adds its quotient after, with fewer 64-bit
// operations (the planner only folds shifts and multipliers that keep the sum in 63 bits).

// The 64-bit sums acc * mult + add (+ r * rmult) of 16 lanes, each with its own multiplier,
// addend and residual multiplier (given as their even and odd lanes), as their even (`ve`)
// and odd (`vo`) lanes. The arithmetic runs on the even and odd lanes as two long8 (a
// reinterpretation: lane 2i is the low half of 64-bit lane i), so each product is one
// 32 x 32 -> 64 multiply of sign-extended halves instead of widening 16 lanes.
static inline void weft_sums16(int16 a, long8 mue, long8 muo, long8 ade, long8 ado, int16 r, long8 rme, long8 rmo,
                               int has_res, long8* ve, long8* vo)
{
    const long8 al = as_long8(a);
    *ve = ((al << 32) >> 32) * mue + ade;
    *vo = (al >> 32) * muo + ado;
    if (has_res) {
        const long8 rl = as_long8(r);     // 0..255 in every lane
        *ve += (rl & 0xffffffffL) * rme;
        *vo += (rl >> 32) * rmo;
    }
}

// Requantize 16 lanes (weft_sums16, then each lane's shift and the clamp); the result packs
// back with one shift and or.
static inline int16 weft_requant16c(int16 a, long8 mue, long8 muo, long8 ade, long8 ado, long8 she, long8 sho,
                                    int16 r, long8 rme, long8 rmo, int has_res, long lo, long hi)
{
    long8 ve, vo;
    weft_sums16(a, mue, muo, ade, ado, r, rme, rmo, has_res, &ve, &vo);
    // vector bounds: integer clamp/min/max with scalar bounds on a vector is the
    // `gentype, sgentype` overload, which some implementations get wrong (kernels/README.md)
    ve = clamp(ve >> she, (long8)(lo), (long8)(hi));
    vo = clamp(vo >> sho, (long8)(lo), (long8)(hi));
    return as_int16(ve | (vo << 32));
}

// The same value without 64-bit shifts and clamps, for channels whose shifts are all at least
// 32 (`sn` = shift - 32): the 64-bit sums' high words are floor(sum / 2^32), exactly (the
// planner keeps sums in 63 bits), so the rest is a 32-bit shift and clamp of 16 lanes.
static inline int16 weft_requant16n(int16 a, long8 mue, long8 muo, long8 ade, long8 ado, int16 sn, int16 r,
                                    long8 rme, long8 rmo, int has_res, int16 lo, int16 hi)
{
    long8 ve, vo;
    weft_sums16(a, mue, muo, ade, ado, r, rme, rmo, has_res, &ve, &vo);
    const int16 h = as_int16(as_long8(as_ulong8(ve) >> 32) | (vo & (long8)(-0x100000000L)));
    return clamp(h >> sn, lo, hi);
}

// The buffers both convolution forms take: input, packed weights, per-channel bias,
// multiplier, shift and addend, residual and its multipliers, output.
// The output may be the residual's buffer (the planner updates a dead residual in place:
// every work-item reads the residual words it then writes), so neither is `restrict`.
#define QCONV_BUFFERS                                                                           \
    __global const uint* restrict x, __global const int* restrict w, __global const int* restrict bias, \
    __global const int* restrict mult, __global const int* restrict shift,                      \
    __global const long* restrict radd, __global const uint* res,                               \
    __global const long* restrict rmult, __global uint* out

// The same for 16 lanes of one output channel (16 pixels of `qconv`).
static inline int16 weft_requant16(int16 a, long mult, long add, int shift, int16 r, long rmult,
                                   int has_res, long lo, long hi)
{
    return weft_requant16c(a, (long8)(mult), (long8)(mult), (long8)(add), (long8)(add), (long8)(shift),
                           (long8)(shift), r, (long8)(rmult), (long8)(rmult), has_res, lo, hi);
}

__kernel void qconv(
    QCONV_BUFFERS,
    int CB, int H, int W,          // input channel blocks (whole tensor) and size
    int cb0, int CBG,              // first block and block count of this group
    int M, int m0, int MT,         // channels in this group, first output channel, all output channels
    int OH, int OW,
    int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL,
    uint pad_word, int lo, int hi, int has_res, int in_words, int phased)
{
    const int tile = get_global_id(0);
    const int z = get_global_id(2);
    const int MB = (M + TM - 1) / TM;
    const int n = z / MB;
    const int mb = z - n * MB;
    const int HW = H * W;
    const int OHW = OH * OW;
    const int OCB = (MT + 3) / 4;
    const int p0 = tile * 16;
    if (p0 >= OHW) return;               // a tile padding the launch to whole work-groups
    const int16 lane = LANES16;
    const int16 p = p0 + lane;
    // p / OW without 16 integer divisions: the fraction of (p + 0.5) / OW is at least 0.5 / OW
    // away from an integer and OpenCL's float division errs by at most 2.5 ulp, which is less
    // for p < 2^20 (the planner's limit on output pixels per image)
    const int16 oy = convert_int16(floor((convert_float16(p) + 0.5f) / (float)OW));
    const int16 ox = p - oy * OW;
    // A phased input (a stride-2 layer after qphase) is 4 planes per channel block, H x W
    // each, and the convolution reads it at stride 1.
    const int sy = phased ? 1 : SY, sx = phased ? 1 : SX;
    const int16 iy0 = phased ? oy : oy * SY - PT;
    const int16 ix0 = phased ? ox : ox * SX - PL;
    // the 16 input cells of a kernel position are every step-th word: across rows when the
    // layer keeps the width at stride 1, within a row when the 16 pixels share one (0: gather)
    const int step = (sy == 1 && sx == 1 && OW == W) ? 1 : (oy.s0 == oy.sf && sx <= 2) ? sx : 0;
    const int16 pad = (int16)(as_int(pad_word));
    const size_t plane0 = ((size_t)n * CB * (phased ? 4 : 1) + cb0) * HW;

    int16 acc[TM];
    conv_accumulate(acc, (__global const int*)x, plane0, HW, CBG, H, W, KH, KW, DY, DX, iy0, ix0, step,
                    in_words, pad, w + (size_t)mb * KH * KW * CBG * TM, PT, PL,
                    phased ? (size_t)CB * HW : 0);

    // Epilogue: four output channels (one NC4HW4 word per pixel) at a time. The common case
    // (16 valid pixels, 4-aligned channels owned by this work-item) is vector loads and one
    // vector store; edges and grouped layers go byte by byte through private arrays.
    const int pix_all = p0 + 16 <= OHW;
    __global uchar* ob = (__global uchar*)out;
    __global const uchar* rb = (__global const uchar*)res;
    #pragma unroll
    for (int q = 0; q < TM / 4; q++) {
        const int mlb = mb * TM + q * 4;       // first channel of this word, in the group
        const int mb0 = m0 + mlb;              // its absolute channel
        const size_t base = ((size_t)n * OCB + (mb0 >> 2)) * OHW + p0;
        // whole words when the 4 channels share a word and the work-item owns all of them
        // (those past M being the tensor's padding channels)
        const int fast = pix_all && (mb0 & 3) == 0 && (mlb + 4 <= M || m0 + M >= MT);
        if (mlb >= M) continue;                // a word of this tile past the group's channels
        const uint16 rw = (fast && has_res) ? vload16(0, res + base) : (uint16)(0);
        uint16 word = (uint16)(0);
        #pragma unroll
        for (int b = 0; b < 4; b++) {
            const int ml = mlb + b;
            const int m = m0 + min(ml, M - 1);  // lanes past M compute a throwaway value
            const size_t mbase = ((size_t)n * OCB + (m >> 2)) * OHW + p0;
            int16 r = as_int16((rw >> (uint)(8 * b)) & 0xffu);
            if (!fast && has_res) {
                int tmp[16];
                for (int i = 0; i < 16; i++)
                    tmp[i] = p0 + i < OHW ? (int)rb[(mbase + i) * 4 + (m & 3)] : 0;
                r = vload16(0, tmp);
            }
            const int16 v = weft_requant16(acc[q * 4 + b] + bias[m], (long)mult[m], radd[m], shift[m], r,
                                           has_res ? rmult[m] : 0L, has_res, (long)lo, (long)hi);
            if (fast) {
                word |= as_uint16(v) << (uint)(8 * b);
            } else if (ml < M) {
                int tmp[16];
                vstore16(v, 0, tmp);
                for (int i = 0; i < 16; i++)
                    if (p0 + i < OHW) ob[(mbase + i) * 4 + (m & 3)] = (uchar)tmp[i];
            }
        }
        if (fast) vstore16(word, 0, out + base);
    }
}

// Integer convolution, channel form (one group): a work-item computes QC_R consecutive
// output pixels of the flattened OH*OW plane x 16 * QC_V output channels (QC_V vectors of
// 16 channels; 6 x 64 by default), weights packed with TM = 16 * QC_V
// ([ceil(M/TM)][KH*KW][CB][TM] words). The reduction broadcasts each pixel's activation word
// against vectors of 16 channels' weights, so any stride, dilation and padding is a
// per-pixel address; the epilogue's per-channel multipliers, addends and shifts are vectors
// loaded once per work-item. Same arithmetic as `qconv`; `bias`, `mult`, `shift`, `radd`
// and `rmult` are padded to whole work-items (16 * QC_V channels) by the planner (padding
// channels are computed and land in the tensor's padding bytes, or are not stored). The
// accumulators start at the bias; layers whose shifts are all at least 32 (`narrow`, the
// common case) requantize through the 64-bit sums' high words (weft_requant16n).

// Transposes between QC_R pixels' words of 4 channel blocks (pixel-major, one uint4 per
// pixel: 16 channels) and the NC4HW4 planes (block-major: QC_R consecutive words per block):
// 4 pixels at a time as one 16-word shuffle (a 4 x 4 transpose, its own inverse), then 2
// pixels as one 8-word shuffle, then one pixel word by word. `plane` is the words per block.
#define QC_T44 ((uint16)(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15))
static inline void qc_load_words(__global const uint* p, size_t plane, uint4* px)
{
    int r = 0;
    #pragma unroll
    for (; r + 4 <= QC_R; r += 4) {
        const uint16 t = shuffle((uint16)(vload4(0, p + r), vload4(0, p + plane + r), vload4(0, p + 2 * plane + r),
                                          vload4(0, p + 3 * plane + r)), QC_T44);
        px[r] = t.s0123;
        px[r + 1] = t.s4567;
        px[r + 2] = t.s89ab;
        px[r + 3] = t.scdef;
    }
    #pragma unroll
    for (; r + 2 <= QC_R; r += 2) {
        const uint8 t = shuffle((uint8)(vload2(0, p + r), vload2(0, p + plane + r), vload2(0, p + 2 * plane + r),
                                        vload2(0, p + 3 * plane + r)), (uint8)(0, 2, 4, 6, 1, 3, 5, 7));
        px[r] = t.s0123;
        px[r + 1] = t.s4567;
    }
    #pragma unroll
    for (; r < QC_R; r++) px[r] = (uint4)(p[r], p[plane + r], p[2 * plane + r], p[3 * plane + r]);
}

static inline void qc_store_words(__global uint* p, size_t plane, const uint4* px)
{
    int r = 0;
    #pragma unroll
    for (; r + 4 <= QC_R; r += 4) {
        const uint16 t = shuffle((uint16)(px[r], px[r + 1], px[r + 2], px[r + 3]), QC_T44);
        vstore4(t.s0123, 0, p + r);
        vstore4(t.s4567, 0, p + plane + r);
        vstore4(t.s89ab, 0, p + 2 * plane + r);
        vstore4(t.scdef, 0, p + 3 * plane + r);
    }
    #pragma unroll
    for (; r + 2 <= QC_R; r += 2) {
        const uint8 t = shuffle((uint8)(px[r], px[r + 1]), (uint8)(0, 4, 1, 5, 2, 6, 3, 7));
        vstore2(t.s01, 0, p + r);
        vstore2(t.s23, 0, p + plane + r);
        vstore2(t.s45, 0, p + 2 * plane + r);
        vstore2(t.s67, 0, p + 3 * plane + r);
    }
    #pragma unroll
    for (; r < QC_R; r++) {
        p[r] = px[r].s0;
        p[plane + r] = px[r].s1;
        p[2 * plane + r] = px[r].s2;
        p[3 * plane + r] = px[r].s3;
    }
}

// The channel form's epilogue: requantizes the work-item's QC_R x 16 * QC_V accumulators and
// stores each pixel's 16 channels of a vector as 4 words, one per channel block. The common
// case (every pixel of the tile in the plane, 4 whole blocks) moves whole tiles of words
// (qc_load_words, qc_store_words). Always inlined and called with literal `has_res` and
// `narrow`, so each of its four call sites is specialised.
WEFT_DOT_TARGET
static inline __attribute__((always_inline)) void
qconvc_epilogue(const int16* acc, __global const int* restrict mult, __global const int* restrict shift,
                __global const long* restrict radd, __global const uint* res, __global const long* restrict rmult,
                __global uint* out, int n, int mb, int M, int OHW, int p0, int np, long lo, long hi, int has_res,
                int narrow)
{
    const int OCB = (M + 3) / 4;
    const size_t plane = OHW;
    #pragma unroll
    for (int v = 0; v < QC_V; v++) {
        const int mc = mb * 16 * QC_V + v * 16;     // first channel of this vector
        if (mc >= M) break;
        const int16 mu = vload16(0, mult + mc);
        const int16 sh = vload16(0, shift + mc);
        const long16 ad = vload16(0, radd + mc);
        const long16 rm = has_res ? vload16(0, rmult + mc) : (long16)(0);
        const long8 mue = convert_long8(mu.even), muo = convert_long8(mu.odd);
        const long8 she = convert_long8(sh.even), sho = convert_long8(sh.odd);
        const long8 ade = ad.even, ado = ad.odd, rme = rm.even, rmo = rm.odd;
        const int words = min(4, OCB - mc / 4);     // channel blocks of this vector in the tensor
        const size_t base = ((size_t)n * OCB + mc / 4) * plane + p0;
        __global uint* o = out + base;
        __global const uint* rp = res + (has_res ? base : 0);
        if (words == 4 && np == QC_R && p0 + QC_R <= OHW) {
            uint4 rw[QC_R], ow[QC_R];
            if (has_res) qc_load_words(rp, plane, rw);
            #pragma unroll
            for (int r = 0; r < QC_R; r++) {
                const int16 rv = has_res ? convert_int16(as_uchar16(rw[r])) : (int16)(0);
                const int16 val = narrow ? weft_requant16n(acc[r * QC_V + v], mue, muo, ade, ado, sh - 32, rv, rme,
                                                           rmo, has_res, (int16)((int)lo), (int16)((int)hi))
                                         : weft_requant16c(acc[r * QC_V + v], mue, muo, ade, ado, she, sho, rv,
                                                           rme, rmo, has_res, lo, hi);
                ow[r] = as_uint4(convert_uchar16(val));
            }
            qc_store_words(o, plane, ow);
        } else {
            for (int r = 0; r < np; r++) {
                // pixel r of the tile: in image n + i at pixel p0 + r - i * OHW
                const int i = (p0 + r) / OHW;
                const size_t at = (size_t)i * OCB * plane + r - (size_t)i * OHW;
                uint rin[4] = {0, 0, 0, 0}, ow[4];
                for (int q = 0; q < words && has_res; q++) rin[q] = rp[at + q * plane];
                const int16 val = weft_requant16c(acc[r * QC_V + v], mue, muo, ade, ado, she, sho,
                                                  convert_int16(as_uchar16(vload4(0, rin))), rme, rmo, has_res,
                                                  lo, hi);
                vstore4(as_uint4(convert_uchar16(val)), 0, ow);
                for (int q = 0; q < words; q++) o[at + q * plane] = ow[q];
            }
        }
    }
}

// qconvc_tile: one channel-form work-item after its indices: the reduction and the epilogue in one
// function, so that with the VNNI hook (a function with extra target features is not
// inlined into the kernel) the accumulators stay in registers.
WEFT_DOT_TARGET
static void qconvc_tile(QCONV_BUFFERS, int N, int mb, int CB, int H, int W, int M, int OH, int OW,
                        int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL, int pad, int p0,
                        long lo, long hi, int has_res, int narrow)
{
    const int HW = H * W;
    const int OHW = OH * OW;
    const int n = p0 / OHW;                // the first pixel's image, and its pixel there
    const int q0 = p0 - n * OHW;
    const int oy0 = q0 / OW;
    const int np = min(QC_R, N * OHW - p0);    // pixels of this tile in the batch
    int16 acc[QC_R * QC_V];
    conv_accumulate_c(acc, (__global const int*)x + (size_t)n * CB * HW, HW, CB, H, W, KH, KW, SY, SX, DY, DX,
                      PT, PL, oy0, q0 - oy0 * OW, OH, OW, np, pad, w + (size_t)mb * KH * KW * CB * 16 * QC_V,
                      bias + mb * 16 * QC_V);
    // one specialised epilogue per residual flag and requantization path
#define QC_EPILOGUE(RES, NARROW) \
    qconvc_epilogue(acc, mult, shift, radd, res, rmult, out, n, mb, M, OHW, q0, np, lo, hi, RES, NARROW)
    if (narrow) {
        if (has_res) QC_EPILOGUE(1, 1); else QC_EPILOGUE(0, 1);
    } else {
        if (has_res) QC_EPILOGUE(1, 0); else QC_EPILOGUE(0, 0);
    }
#undef QC_EPILOGUE
}

// qconvc_tail: the batch's last tile when it holds fewer than QC_R pixels (a 7 x 7 plane at
// batch 1 ends in a tile of one pixel; a fully connected layer at batch 1 is one pixel in
// all): pixel by pixel, each pixel's 16 * QC_V channels over two interleaved sets of QC_V
// accumulators (even and odd channel blocks, so the dot products do not wait on each other),
// instead of a whole tile's QC_R pixels. A cell in the padding reads `pad`. Same arithmetic
// and epilogue as `qconvc_tile`, which this leaves unchanged (a separate function).
WEFT_DOT_TARGET
static void qconvc_tail(QCONV_BUFFERS, int N, int mb, int CB, int H, int W, int M, int OH, int OW,
                        int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL, int pad, int p0,
                        long lo, long hi, int has_res)
{
    const int HW = H * W;
    const int OHW = OH * OW;
    const int n = p0 / OHW;
    const int q0 = p0 - n * OHW;
    const int np = min(QC_R, N * OHW - p0);
    const int16 padv = (int16)(pad);
    __global const int* wb = w + (size_t)mb * KH * KW * CB * 16 * QC_V;
    int16 acc[QC_R * QC_V];
    for (int r = 0; r < np; r++) {
        const int i = (q0 + r) / OHW;             // the pixel's image, after image n
        const int q = q0 + r - i * OHW;
        const int oy = q / OW, ox = q - oy * OW;
        __global const int* xi = (__global const int*)x + (size_t)(n + i) * CB * HW;
        int16 a[QC_V], b[QC_V];
        #pragma unroll
        for (int v = 0; v < QC_V; v++) {
            a[v] = vload16(v, bias + mb * 16 * QC_V);
            b[v] = (int16)(0);
        }
        __global const int* wp = wb;
        for (int ky = 0; ky < KH; ky++) {
            for (int kx = 0; kx < KW; kx++) {
                const int iy = oy * SY - PT + ky * DY, ix = ox * SX - PL + kx * DX;
                const int ok = iy >= 0 && iy < H && ix >= 0 && ix < W;
                const int16 okv = (int16)(-ok);
                __global const int* p = xi + (ok ? iy * W + ix : 0);
                int cb = 0;
                for (; cb + 2 <= CB; cb += 2) {
                    const int16 x0 = select(padv, (int16)(p[0]), okv);
                    const int16 x1 = select(padv, (int16)(p[HW]), okv);
                    #pragma unroll
                    for (int v = 0; v < QC_V; v++) {
                        a[v] = dot4acc16(a[v], x0, vload16(v, wp));
                        b[v] = dot4acc16(b[v], x1, vload16(QC_V + v, wp));
                    }
                    wp += 32 * QC_V;
                    p += 2 * HW;
                }
                if (cb < CB) {
                    const int16 x0 = select(padv, (int16)(p[0]), okv);
                    #pragma unroll
                    for (int v = 0; v < QC_V; v++) a[v] = dot4acc16(a[v], x0, vload16(v, wp));
                    wp += 16 * QC_V;
                }
            }
        }
        #pragma unroll
        for (int v = 0; v < QC_V; v++) acc[r * QC_V + v] = a[v] + b[v];
    }
    // np < QC_R: the epilogue's pixel-by-pixel path
    if (has_res)
        qconvc_epilogue(acc, mult, shift, radd, res, rmult, out, n, mb, M, OHW, q0, np, lo, hi, 1, 0);
    else
        qconvc_epilogue(acc, mult, shift, radd, res, rmult, out, n, mb, M, OHW, q0, np, lo, hi, 0, 0);
}

__kernel void qconvc(
    QCONV_BUFFERS,
    int N, int CB, int H, int W, int M, int OH, int OW,
    int KH, int KW, int SY, int SX, int DY, int DX, int PT, int PL,
    uint pad_word, int lo, int hi, int has_res,
    int narrow)                    // every channel's shift is at least 32 (weft_requant16n)
{
    const int tile = get_global_id(0);
    const int mb = get_global_id(2);
    const int p0 = tile * QC_R;          // of the batch's N * OH * OW output pixels
    if (p0 >= N * OH * OW) return;       // a tile padding the launch to whole work-groups
    if (N * OH * OW - p0 < QC_R)
        qconvc_tail(x, w, bias, mult, shift, radd, res, rmult, out, N, mb, CB, H, W, M, OH, OW, KH, KW, SY, SX,
                    DY, DX, PT, PL, as_int(pad_word), p0, (long)lo, (long)hi, has_res);
    else
        qconvc_tile(x, w, bias, mult, shift, radd, res, rmult, out, N, mb, CB, H, W, M, OH, OW, KH, KW, SY, SX,
                    DY, DX, PT, PL, as_int(pad_word), p0, (long)lo, (long)hi, has_res, narrow);
}

// Phase split for stride-2 convolutions: out[n][py * 2 + px][cb][y][x] = in[n][cb][2y + py][2x + px]
// (NC4HW4 words), cells past the input holding pad_word, so that a stride-2 layer reads four
// stride-1 planes with consecutive vector loads. One work-item per output row of one phase;
// `phases` is a bit mask of the phases the layer reads (bit py * 2 + px), the rest are skipped.
__kernel void qphase(__global const uint* restrict x, __global uint* restrict out,
                     int CB, int H, int W, int H2, int W2, uint pad_word, int phases)
{
    const int y = get_global_id(0);
    const int z = get_global_id(1);      // phase * CB + cb
    const int n = get_global_id(2);
    const int ph = z / CB;
    const int cb = z - ph * CB;
    if (!((phases >> ph) & 1)) return;
    const int py = ph >> 1, px = ph & 1;
    const int iy = 2 * y + py;
    __global uint* o = out + (((size_t)n * 4 * CB + z) * H2 + y) * W2;
    if (iy >= H) {
        for (int i = 0; i < W2; i++) o[i] = pad_word;
        return;
    }
    __global const uint* r = x + (((size_t)n * CB + cb) * H + iy) * W + px;
    const int full = min((W - px + 1) / 2, W2);   // cells of this row inside the input
    for (int i = 0; i < full; i++) o[i] = r[2 * i];
    for (int i = full; i < W2; i++) o[i] = pad_word;
}

// Kernel-width fold for convolutions with at most 4 input channels (CG; one channel block,
// as a network's first layer): the KW * CG (column, channel) pairs of a kernel row, packed 4
// to a word: byte q of word j of output pixel (y, ox) is channel c of input cell
// (y, ox * SX + kx * DX - PL) where kx * CG + c = 4j + q (the padding byte of pad_word outside
// the input; 0 past KW * CG, where the weights are 0). The layer then runs as a KH x 1
// convolution at horizontal stride 1 over ceil(KW * CG / 4) channel blocks: each kernel row
// is a few blocks of consecutive words instead of KW separate positions, and an RGB 7-wide
// kernel is 6 blocks instead of 7 (no block a quarter padding). One work-item per 16 output
// pixels of a row and all their words: per column one row load (one or two vector loads at
// strides 1 and 2), its bytes appended to the word being filled.
__kernel void qfold(__global const uint* restrict x, __global uint* restrict out,
                    int H, int W, int OW, int KW, int CG, int SX, int DX, int PL, uint pad_word, int in_words)
{
    const int ox0 = get_global_id(0) * 16;
    const int y = get_global_id(1);
    const int n = get_global_id(2);
    const int NW = (KW * CG + 3) / 4;
    const long row = ((long)n * H + y) * W;
    const size_t plane = (size_t)H * OW;
    __global uint* o = out + (size_t)n * NW * plane + (size_t)y * OW + ox0;
    const int16 lane = LANES16;
    uint16 v = (uint16)(0);
    int q = 0;                           // bytes of the word being filled
    for (int kx = 0; kx < KW; kx++) {
        const uint16 s = row_words16(x, row, (ox0 + lane) * SX + kx * DX - PL, W, SX, in_words, pad_word);
        for (int c = 0; c < CG; c++) {
            v |= ((s >> (uint)(8 * c)) & 0xffu) << (uint)(8 * q);
            if (++q == 4) {
                store_words16(o, v, OW - ox0);
                o += plane;
                v = (uint16)(0);
                q = 0;
            }
        }
    }
    if (q > 0) store_words16(o, v, OW - ox0);
}

// Depthwise convolution (one input channel per group, one output channel each: MobileNet's
// 3x3 layers), which the two forms above cannot take (they reduce over 4-channel words).
// One work-item computes 16 consecutive output pixels of one row for one channel block: per
// kernel position, the 16 input words (`row_words16`: vector loads at strides 1 and 2,
// padding cells reading pad_word) times the position's 4 weights, as four int16 vectors of 4 pixels x 4 channels.
// Weights: words [CB][KH * KW], word (cb, ky * KW + kx) the 4 int8 weights of channels
// 4cb .. 4cb+3 (zero past C); `bias` the 4 * CB biases with the input zero point folded in
// (bias - zp_x * sum(w)), so padding cells read zp_x as in `qconv`. Requantization as there:
// clamp((acc * mult + add) >> shift) per channel, `add` = zp_out * 2^shift + 2^(shift-1)
// (padding channels: mult 0, shift 0, add zp_out).
__kernel void qdwconv(__global const uint* restrict x, __global const int* restrict w,
                      __global const int* restrict bias, __global const int* restrict mult,
                      __global const int* restrict shift, __global const long* restrict add,
                      __global uint* restrict out,
                      int CB, int H, int W, int OH, int OW, int KH, int KW, int SY, int SX, int DY, int DX,
                      int PT, int PL, uint pad_word, int lo, int hi, int in_words)
{
    const int ox0 = get_global_id(0) * 16;
    const int oy = get_global_id(1);
    const int z = get_global_id(2);      // image * CB + channel block
    if (ox0 >= OW || oy >= OH) return;
    const int cb = z % CB;
    __global const int* wp = w + (size_t)cb * KH * KW;
    const int4 b4 = vload4(cb, bias);
    int16 acc0 = (int16)(b4, b4, b4, b4);
    int16 acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const int16 lane_x = ox0 * SX - PL + LANES16 * SX;
    const uint16 pad = (uint16)(pad_word);
    for (int ky = 0; ky < KH; ky++) {
        const int iy = oy * SY - PT + ky * DY;
        const long row = ((long)z * H + iy) * W;
        for (int kx = 0; kx < KW; kx++) {
            const uint16 v = (iy >= 0 && iy < H) ? row_words16(x, row, lane_x + kx * DX, W, SX, in_words, pad_word) : pad;
            const char4 wv = as_char4(wp[ky * KW + kx]);
            const int16 w16 = convert_int16((char16)(wv, wv, wv, wv));
            acc0 += convert_int16(as_uchar16(v.s0123)) * w16;
            acc1 += convert_int16(as_uchar16(v.s4567)) * w16;
            acc2 += convert_int16(as_uchar16(v.s89ab)) * w16;
            acc3 += convert_int16(as_uchar16(v.scdef)) * w16;
        }
    }
    const int4 m4 = vload4(cb, mult);
    const int4 s4 = vload4(cb, shift);
    const long4 a4 = vload4(cb, add);
    const long16 mu = convert_long16((int16)(m4, m4, m4, m4));
    const long16 sh = convert_long16((int16)(s4, s4, s4, s4));
    const long16 ad = (long16)(a4, a4, a4, a4);
    // vector bounds: see weft_requant16c
    const long16 lo16 = (long16)(lo), hi16 = (long16)(hi);
    const uint4 o0 = as_uint4(convert_uchar16(clamp((convert_long16(acc0) * mu + ad) >> sh, lo16, hi16)));
    const uint4 o1 = as_uint4(convert_uchar16(clamp((convert_long16(acc1) * mu + ad) >> sh, lo16, hi16)));
    const uint4 o2 = as_uint4(convert_uchar16(clamp((convert_long16(acc2) * mu + ad) >> sh, lo16, hi16)));
    const uint4 o3 = as_uint4(convert_uchar16(clamp((convert_long16(acc3) * mu + ad) >> sh, lo16, hi16)));
    store_words16(out + (size_t)z * OH * OW + (size_t)oy * OW + ox0, (uint16)(o0, o1, o2, o3), min(16, OW - ox0));
}
