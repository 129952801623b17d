// weft kernels: shared definitions and target hooks. OpenCL C 1.2.
//
// Compile-time parameters (set with -D by the runtime's planner):
//   TM  output channels per work-item of qconv (accumulator vectors); a multiple of 4, at most 16
//   TP  output pixels per work-item along a row of the float convolution
// The int8 convolution's pixel tile is the 16 lanes of an int16 vector (fixed).
// Target hooks (exactly one or none is defined; none means portable OpenCL C):
//   WEFT_DOT_VNNI  PoCL's CPU device on an AVX512-VNNI host: the clang builtin for vpdpbusd
//   WEFT_DOT_KHR   devices with cl_khr_integer_dot_product

#ifndef TM
#define TM 16
#endif
#ifndef TP
#define TP 8
#endif
#if TM % 4 != 0 || TM > 16 || TM < 4
#error "TM must be 4, 8, 12 or 16"
#endif
// The channel form's tile (`qconvc`): QC_R pixels x QC_V vectors of 16 output channels.
#ifndef QC_R
#define QC_R 6
#endif
#ifndef QC_V
#define QC_V 4
#endif

// dot4acc16(acc, x, w): for each of 16 lanes j, acc[j] += sum over b of
// u8(x[j] byte b) * s8(w[j] byte b): 4 u8 activations (one channel block of one pixel)
// against 4 s8 weights (of one output channel). `qconv` puts 16 pixels in the lanes and
// broadcasts one output channel's weight word; `qconvc` puts 16 output channels in the lanes
// and broadcasts one pixel's activation word.
//
// conv_accumulate(acc, x, ...): the convolution's whole reduction for one work-item's 16
// output pixels: over kernel positions (ky, kx) and channel blocks, 16 activation words (one
// per pixel: every `step`-th word (1 or 2) when the 16 cells lie on a line, else gathered;
// padding cells read `pad`) against TM weight words, w advancing by TM. It is a hook too: with VNNI it is one
// function compiled for the VNNI target (a function with extra target features cannot be
// inlined into the kernel, so the call must carry the whole loop nest, not one instruction).
#if defined(WEFT_DOT_VNNI)
#define WEFT_DOT_TARGET __attribute__((target("avx512vnni")))
WEFT_DOT_TARGET
static inline int16 dot4acc16(int16 acc, int16 x, int16 w) {
    return __builtin_ia32_vpdpbusd512(acc, x, w);
}
#elif defined(WEFT_DOT_AVX2)
// AVX2 has no byte dot product that is exact for u8 x s8 (vpmaddubsw saturates its pair
// sums at 16 bits), so the 4-way product is two vpmaddwd on 16-bit halves: the even
// bytes (0 and 2 of each word) and the odd bytes (1 and 3), u8 zero-extended and s8
// sign-extended; each 16 x 16-bit product pair sums exactly into 32 bits.
#define WEFT_DOT_TARGET __attribute__((target("avx2")))
WEFT_DOT_TARGET
static inline int8 dot4acc8(int8 acc, int8 x, int8 w) {
    const short16 xs = as_short16(x);
    const short16 ws = as_short16(w);
    const short16 xe = xs & (short16)(0xff);
    const short16 xo = as_short16(as_ushort16(xs) >> (ushort16)(8));
    const short16 we = (ws << (short16)(8)) >> (short16)(8);
    const short16 wo = ws >> (short16)(8);
    return acc + __builtin_ia32_pmaddwd256(xe, we) + __builtin_ia32_pmaddwd256(xo, wo);
}
WEFT_DOT_TARGET
static inline int16 dot4acc16(int16 acc, int16 x, int16 w) {
    return (int16)(dot4acc8(acc.lo, x.lo, w.lo), dot4acc8(acc.hi, x.hi, w.hi));
}
#elif defined(WEFT_DOT_KHR)
#define WEFT_DOT_TARGET
#pragma OPENCL EXTENSION cl_khr_integer_dot_product : enable
static inline int16 dot4acc16(int16 acc, int16 x, int16 w) {
    int16 r;
#define KHR_LANE(i) r.s##i = acc.s##i + dot_4x8packed_us_int(as_uint(x.s##i), as_uint(w.s##i));
    KHR_LANE(0) KHR_LANE(1) KHR_LANE(2) KHR_LANE(3) KHR_LANE(4) KHR_LANE(5) KHR_LANE(6) KHR_LANE(7)
    KHR_LANE(8) KHR_LANE(9) KHR_LANE(a) KHR_LANE(b) KHR_LANE(c) KHR_LANE(d) KHR_LANE(e) KHR_LANE(f)
#undef KHR_LANE
    return r;
}
#else
#define WEFT_DOT_TARGET
static inline int16 dot4acc16(int16 acc, int16 x, int16 w) {
    const uint16 ux = as_uint16(x);
    const int16 x0 = as_int16(ux & 0xffu);
    const int16 x1 = as_int16((ux >> 8) & 0xffu);
    const int16 x2 = as_int16((ux >> 16) & 0xffu);
    const int16 x3 = as_int16(ux >> 24);
    const int16 w0 = (w << 24) >> 24;
    const int16 w1 = (w << 16) >> 24;
    const int16 w2 = (w << 8) >> 24;
    const int16 w3 = w >> 24;
    return acc + x0 * w0 + x1 * w1 + x2 * w2 + x3 * w3;
}
#endif

WEFT_DOT_TARGET
static void conv_accumulate(int16* acc, __global const int* x, size_t plane0, int HW, int CBG, int H, int W,
                            int KH, int KW, int DY, int DX, int16 iy0, int16 ix0, int step, int in_words,
                            int16 pad, __global const int* w, int PT, int PL, size_t phase_words)
{
    int16 a[TM];
    #pragma unroll
    for (int j = 0; j < TM; j++) a[j] = (int16)(0);
    for (int ky = 0; ky < KH; ky++) {
        // phase-split input (phase_words > 0): kernel row ky reads phase (ey & 1) at offset
        // floor(ey / 2) from the output row, ey = ky - PT (stride 2, no dilation)
        const int ey = ky - PT;
        const int py = phase_words ? (ey & 1) : 0;
        const int16 iy = iy0 + (phase_words ? (ey - py) / 2 : ky * DY);
        for (int kx = 0; kx < KW; kx++) {
            const int ex = kx - PL;
            const int px = phase_words ? (ex & 1) : 0;
            const int16 ix = ix0 + (phase_words ? (ex - px) / 2 : kx * DX);
            const int16 valid = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W);
            const int16 addr = iy * W + ix;
            const int masked = !all(valid);
            const size_t planek = plane0 + (size_t)(py * 2 + px) * phase_words;
            // one vector load per block when the 16 cells are consecutive and inside the buffer
            const int a0 = addr.s0;
            const int vec = step > 0 && (long)planek + a0 >= 0
                            && (long)planek + (long)(CBG - 1) * HW + a0 + 16 * step <= (long)in_words;
            int ix16[16];
            vstore16(select((int16)(0), addr, valid), 0, ix16);
            __global const int* p = x + planek + (vec ? a0 : 0);
            for (int cb = 0; cb < CBG; cb++) {
                int16 xv;
                if (vec && step == 1) {
                    xv = vload16(0, p);
                } else if (vec) {
                    xv = (int16)(vload16(0, p).even, vload16(1, p).even);
                } else {
                    int t[16];
                    for (int i = 0; i < 16; i++) t[i] = p[ix16[i]];
                    xv = vload16(0, t);
                }
                if (masked) xv = select(pad, xv, valid);
                #pragma unroll
                for (int j = 0; j < TM; j++) a[j] = dot4acc16(a[j], xv, (int16)(w[j]));
                w += TM;
                p += HW;
            }
        }
    }
    #pragma unroll
    for (int j = 0; j < TM; j++) acc[j] = a[j];
}

// conv_accumulate_c: the reduction of `qconvc` (channel form): QC_R output pixels x
// 16 * QC_V output channels (QC_V vectors of 16 channels). Per kernel position and channel
// block, the block's 16 * QC_V weight words are QC_V vector loads and each pixel's
// activation word is broadcast to 16 lanes: QC_R x QC_V dot products for QC_R + QC_V loads.
// Pixels are the QC_R consecutive pixels of the flattened output (images, rows, columns)
// starting at (oy0, ox0) of the image at x: a tile may run into the next images; pixels
// past `np` (the batch's end) and cells in the padding read `pad`. The
// accumulators start at the 16 * QC_V channels' `bias`.
WEFT_DOT_TARGET
static inline void conv_accumulate_c(int16* acc, __global const int* x, int HW, int CBG, int H, int W, int KH, int KW,
                              int SY, int SX, int DY, int DX, int PT, int PL, int oy0, int ox0, int OH, int OW,
                              int np, int pad, __global const int* w, __global const int* bias)
{
    int16 a[QC_R * QC_V];
    #pragma unroll
    for (int v = 0; v < QC_V; v++) {
        const int16 b = vload16(v, bias);
        #pragma unroll
        for (int r = 0; r < QC_R; r++) a[r * QC_V + v] = b;
    }
    // one channel block: QC_V weight vectors, each pixel's word broadcast (XR(r))
#define QC_BLOCKS(XR)                                                                          \
            for (int cb = 0; cb < CBG; cb++) {                                                 \
                int16 wv[QC_V];                                                                \
                _Pragma("unroll")                                                              \
                for (int v = 0; v < QC_V; v++) wv[v] = vload16(v, w);                          \
                _Pragma("unroll")                                                              \
                for (int r = 0; r < QC_R; r++) {                                               \
                    const int16 xr = XR(r);                                                    \
                    _Pragma("unroll")                                                          \
                    for (int v = 0; v < QC_V; v++)                                             \
                        a[r * QC_V + v] = dot4acc16(a[r * QC_V + v], xr, wv[v]);               \
                }                                                                              \
                w += 16 * QC_V;                                                                \
                p += HW;                                                                       \
            }
    // 1x1, stride 1, no padding, the tile inside one image (most tiles of most 1x1 layers):
    // pixel r reads the word at its flattened index, no window bounds to check
    if (KH == 1 && KW == 1 && SY == 1 && SX == 1 && PT == 0 && PL == 0 && OW == W && np == QC_R &&
        oy0 * OW + ox0 + QC_R <= HW) {
        __global const int* p = x + oy0 * OW + ox0;
#define QC_NEXT(r) ((int16)(p[r]))
        QC_BLOCKS(QC_NEXT)
#undef QC_NEXT
        #pragma unroll
        for (int j = 0; j < QC_R * QC_V; j++) acc[j] = a[j];
        return;
    }
    const int16 padv = (int16)(pad);
    int by[QC_R], bx[QC_R], img[QC_R];
    {
        int oy = oy0, ox = ox0, im = 0;
        #pragma unroll
        for (int r = 0; r < QC_R; r++) {
            // rows far outside the input for pixels past the batch: always padding
            by[r] = r < np ? oy * SY - PT : -(1 << 30);
            bx[r] = ox * SX - PL;
            img[r] = im;                  // the pixel's image's first word, from x
            ox++;
            if (ox == OW) { ox = 0; oy++; }
            if (oy == OH) { oy = 0; im += CBG * HW; }
        }
    }
    // A tile whose every pixel's window lies inside the input (most of them): each kernel
    // position is a fixed offset from each pixel's first cell, without bounds checks.
    int interior = np == QC_R;
    int first[QC_R];
    #pragma unroll
    for (int r = 0; r < QC_R; r++) {
        interior &= by[r] >= 0 && by[r] + (KH - 1) * DY < H && bx[r] >= 0 && bx[r] + (KW - 1) * DX < W;
        first[r] = img[r] + by[r] * W + bx[r];
    }
    if (interior) {
        for (int ky = 0; ky < KH; ky++) {
            for (int kx = 0; kx < KW; kx++) {
                __global const int* p = x + ky * DY * W + kx * DX;
#define QC_FIRST(r) ((int16)(p[first[r]]))
                QC_BLOCKS(QC_FIRST)
#undef QC_FIRST
            }
        }
        #pragma unroll
        for (int j = 0; j < QC_R * QC_V; j++) acc[j] = a[j];
        return;
    }
    for (int ky = 0; ky < KH; ky++) {
        for (int kx = 0; kx < KW; kx++) {
            int off[QC_R];
            int ok[QC_R];
            int all_ok = 1;
            #pragma unroll
            for (int r = 0; r < QC_R; r++) {
                const int iy = by[r] + ky * DY, ix = bx[r] + kx * DX;
                ok[r] = iy >= 0 && iy < H && ix >= 0 && ix < W;
                off[r] = ok[r] ? img[r] + iy * W + ix : 0;
                all_ok &= ok[r];
            }
            __global const int* p = x;
            int16 okv[QC_R];
            #pragma unroll
            for (int r = 0; r < QC_R; r++) okv[r] = (int16)(-ok[r]);
#define QC_INSIDE(r) ((int16)(p[off[r]]))
// a cell outside the input reads word 0 of the plane (off 0), replaced by the padding in
// the vector domain (a masked blend, the mask fixed for the position): no branch
#define QC_EDGE(r) select(padv, (int16)(p[off[r]]), okv[r])
            // the common case (every pixel inside the input) without the selects
            if (all_ok) {
                QC_BLOCKS(QC_INSIDE)
            } else {
                QC_BLOCKS(QC_EDGE)
            }
#undef QC_INSIDE
#undef QC_EDGE
        }
    }
#undef QC_BLOCKS
    #pragma unroll
    for (int j = 0; j < QC_R * QC_V; j++) acc[j] = a[j];
}

// Requantization (weft_core::quant): clamp(zp + ((v + 2^(s-1)) >> s)).
static inline uchar weft_requant(long v, int shift, int zp, int lo, int hi) {
    long r = (v + (1L << (shift - 1))) >> shift;
    long q = (long)zp + r;
    q = q < (long)lo ? (long)lo : q;
    q = q > (long)hi ? (long)hi : q;
    return (uchar)q;
}

// Index of byte (n, c, y, x) in an NC4HW4 u8 tensor with CB channel blocks.
#define NC4HW4(n, c, y, x, CB, H, W) (((((n) * (CB) + ((c) >> 2)) * (H) + (y)) * (W) + (x)) * 4 + ((c) & 3))

// Lane indices of a 16-lane vector.
#define LANES16 ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))

// Stores the first n (at most 16) words of v at o: one vector store when n is 16.
static inline void store_words16(__global uint* o, uint16 v, int n)
{
    if (n >= 16) {
        vstore16(v, 0, o);
    } else {
        uint t[16];
        vstore16(v, 0, t);
        for (int i = 0; i < n; i++) o[i] = t[i];
    }
}

// The 16 words x[row + col[i]] of one row, where col[i] = col.s0 + i * SX: one vector load
// (SX 1) or two and their even lanes (SX 2) when they lie inside the buffer's in_words,
// else gathered; columns outside 0..W-1 read `fill`.
static inline uint16 row_words16(__global const uint* x, long row, int16 col, int W, int SX, int in_words,
                                 uint fill)
{
    const long first = row + col.s0;
    uint16 v;
    if (SX <= 2 && first >= 0 && first + 16 * SX <= (long)in_words) {
        __global const uint* p = x + first;
        v = SX == 1 ? vload16(0, p) : (uint16)(vload16(0, p).even, vload16(1, p).even);
    } else {
        uint t[16], c[16];
        vstore16(as_uint16(col), 0, c);
        for (int i = 0; i < 16; i++) t[i] = ((int)c[i] >= 0 && (int)c[i] < W) ? x[row + (int)c[i]] : fill;
        v = vload16(0, t);
    }
    return select((uint16)(fill), v, (col >= 0) & (col < W));
}
