//! Weights in kernel layout, and NC4HW4 conversions on the host.

use weft_core::Tensor;

/// One group of a convolution packed for `qconv`: 32-bit words `[ceil(M/TM)][KH*KW][CB][TM]`
/// (each word the 4 weights of one output channel for one channel block at one kernel
/// position, channel `4*cb + b` in byte `b`; zero past M), and biases with the input zero
/// point folded in: `bias[m] - zp_x * sum(w[m])`.
#[derive(Debug)]
pub struct PackedConv {
    pub words: Vec<i32>,
    pub bias: Vec<i32>,
}

/// One group of a convolution's int8 weights, row-major `[M, CG, KH, KW]`, with its biases
/// `[M]` and the input zero point.
pub struct ConvGroup<'a> {
    pub w: &'a [i8],
    pub bias: &'a [i32],
    pub m: usize,
    pub cg: usize,
    pub kh: usize,
    pub kw: usize,
    pub zp_x: i32,
}

impl ConvGroup<'_> {
    /// Packed with `tm` output channels per block.
    pub fn pack(&self, tm: usize) -> PackedConv {
        let ConvGroup {
            w,
            bias,
            m,
            cg,
            kh,
            kw,
            zp_x,
        } = *self;
        let cb = cg.div_ceil(4);
        let mb = m.div_ceil(tm);
        let k4 = cb * kh * kw;
        let mut words = vec![0i32; mb * k4 * tm];
        for mo in 0..m {
            let (blk, lane) = (mo / tm, mo % tm);
            for c in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = w[((mo * cg + c) * kh + ky) * kw + kx] as u8 as u32;
                        let k = (ky * kw + kx) * cb + c / 4;
                        let idx = (blk * k4 + k) * tm + lane;
                        words[idx] = (words[idx] as u32 | (v << (8 * (c % 4)))) as i32;
                    }
                }
            }
        }
        let bias = (0..m)
            .map(|mo| {
                let sum: i64 = w[mo * cg * kh * kw..(mo + 1) * cg * kh * kw]
                    .iter()
                    .map(|&v| i64::from(v))
                    .sum();
                (i64::from(bias[mo]) - i64::from(zp_x) * sum) as i32
            })
            .collect();
        PackedConv { words, bias }
    }

    /// Packed for a kernel-width-folded input (`qfold`; at most 4 input channels): the
    /// `KH x KW` kernel over `cg` channels becomes a `KH x 1` kernel over the
    /// `ceil(KW * cg / 4) * 4` channels of the fold, channel `kx * cg + c` being channel `c` at
    /// column `kx` (zero past `KW * cg`). The weight sum, hence the folded bias, is unchanged.
    pub fn pack_folded(&self, tm: usize) -> PackedConv {
        let ConvGroup { w, m, cg, kh, kw, .. } = *self;
        let cf = folded_words(kw, cg) * 4;
        let mut wf = vec![0i8; m * cf * kh];
        for mo in 0..m {
            for c in 0..cg.min(4) {
                for ky in 0..kh {
                    for kx in 0..kw {
                        wf[(mo * cf + kx * cg + c) * kh + ky] = w[((mo * cg + c) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        ConvGroup {
            w: &wf,
            cg: cf,
            kw: 1,
            ..*self
        }
        .pack(tm)
    }
}

/// Words per pixel of a kernel-width fold of `cg` (at most 4) channels over `kw` columns:
/// the `kw * cg` channel-column pairs packed 4 to a word.
fn folded_words(kw: usize, cg: usize) -> usize {
    (kw * cg.min(4)).div_ceil(4)
}

/// The words per pixel of the kernel-width fold (`qfold`) the planner gives a convolution of
/// `group` groups, `cg` input channels per group, kernel width `kw` and output width `ow`:
/// `Some` for a stem (one group of at most 4 channels, a kernel and an output wider than 1),
/// `None` where the input is read as it is.
pub fn stem_fold_words(group: usize, cg: usize, kw: usize, ow: usize) -> Option<usize> {
    (group == 1 && cg <= 4 && kw > 1 && ow > 1).then(|| folded_words(kw, cg))
}

/// `[N, C, H, W]` f32 (row-major) quantized to u8 as the reference quantizes
/// (`weft_core::quant::quantize_u8`) and laid out NC4HW4 in one pass; channels past C
/// hold the zero point. The host side of a float input's edge: a quarter of the bytes to
/// upload, and no device pass over the floats. `None` when `x` does not hold exactly
/// n * c * hw values.
pub fn quantize_nc4hw4(x: &[f32], n: usize, c: usize, hw: usize, scale: f32, zero_point: i32) -> Option<Vec<u8>> {
    if x.len() != n * c * hw {
        return None;
    }
    let mut out = vec![0u8; n * c.div_ceil(4) * 4 * hw];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        unsafe { quantize_nc4hw4_avx512(x, n, c, hw, scale, zero_point, &mut out) };
        return Some(out);
    }
    quantize_into(x, n, c, hw, scale, zero_point, &mut out);
    Some(out)
}

/// `quantize_into` compiled for AVX-512 (16 lanes a vector).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_nc4hw4_avx512(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    scale: f32,
    zero_point: i32,
    out: &mut [u8],
) {
    quantize_into(x, n, c, hw, scale, zero_point, out);
}

/// The body of `quantize_nc4hw4` (`x` holds at least n * c * hw values, `out` the NC4HW4
/// bytes): per channel block, each channel's plane quantized, then the 4 planes'
/// bytes interleaved into words.
#[inline(always)]
fn quantize_into(x: &[f32], n: usize, c: usize, hw: usize, scale: f32, zero_point: i32, out: &mut [u8]) {
    let cb = c.div_ceil(4);
    let fill = zero_point.clamp(0, 255) as u8;
    let mut planes = vec![fill; 4 * hw];
    for ni in 0..n {
        for b in 0..cb {
            for (q, plane) in planes.chunks_exact_mut(hw).enumerate() {
                let ci = b * 4 + q;
                if ci < c {
                    let at = (ni * c + ci) * hw;
                    quantize_plane(&x[at..at + hw], scale, zero_point, plane);
                } else {
                    plane.fill(fill);
                }
            }
            let (p0, rest) = planes.split_at(hw);
            let (p1, rest) = rest.split_at(hw);
            let (p2, p3) = rest.split_at(hw);
            let o = &mut out[(ni * cb + b) * 4 * hw..(ni * cb + b + 1) * 4 * hw];
            for ((((w, &a), &b1), &c2), &d) in o.chunks_exact_mut(4).zip(p0).zip(p1).zip(p2).zip(p3) {
                w.copy_from_slice(&[a, b1, c2, d]);
            }
        }
    }
}

/// One plane of `quantize_nc4hw4`, in a form the compiler vectorizes: x / scale, NaN to 0,
/// held to +-512 (with a u8 zero point every value past that clamps to 0 or 255, as it
/// would unheld), rounded half to even by adding 1.5 * 2^23 (exact in round-to-nearest for
/// magnitudes below 2^22: the sum's low mantissa bits are then the rounded integer), then
/// the zero point and the clamp in integers. A zero point outside 0..=255 takes the
/// reference's own function.
#[inline(always)]
fn quantize_plane(x: &[f32], scale: f32, zero_point: i32, out: &mut [u8]) {
    if !(0..=255).contains(&zero_point) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = weft_core::quant::quantize_u8(v, scale, zero_point);
        }
        return;
    }
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = v / scale;
        let q = if q.is_nan() { 0.0 } else { q.clamp(-512.0, 512.0) };
        let r = (q + ROUND).to_bits() as i32 - ROUND_BITS;
        *o = (r + zero_point).clamp(0, 255) as u8;
    }
}

/// `[N, C, H, W]` u8 (row-major) to NC4HW4 bytes; channels past C hold `fill`.
pub fn to_nc4hw4(data: &[u8], n: usize, c: usize, h: usize, w: usize, fill: u8) -> Vec<u8> {
    let cb = c.div_ceil(4);
    let mut out = vec![fill; n * cb * 4 * h * w];
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[(((ni * cb + ci / 4) * h + y) * w + x) * 4 + ci % 4] = data[((ni * c + ci) * h + y) * w + x];
                }
            }
        }
    }
    out
}

/// NC4HW4 bytes back to `[N, C, H, W]` u8.
pub fn from_nc4hw4(data: &[u8], n: usize, c: usize, h: usize, w: usize) -> Vec<u8> {
    let cb = c.div_ceil(4);
    let mut out = vec![0u8; n * c * h * w];
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((ni * c + ci) * h + y) * w + x] = data[(((ni * cb + ci / 4) * h + y) * w + x) * 4 + ci % 4];
                }
            }
        }
    }
    out
}

/// One group of float convolution weights (row-major `[M, CG, KH, KW]`) packed for
/// `fconv`: `[ceil(M/16)][CG*KH*KW][16]` floats, zero past M.
pub fn pack_fconv(w: &[f32], m: usize, cg: usize, kh: usize, kw: usize) -> Vec<f32> {
    let k = cg * kh * kw;
    let mut out = vec![0f32; m.div_ceil(16) * k * 16];
    for mo in 0..m {
        let (blk, lane) = (mo / 16, mo % 16);
        for (ki, &v) in w[mo * k..(mo + 1) * k].iter().enumerate() {
            out[(blk * k + ki) * 16 + lane] = v;
        }
    }
    out
}

/// The i8 values of a weight tensor in row-major order.
pub fn i8_values(t: &Tensor) -> Vec<i8> {
    match t {
        Tensor::I8(a) => a.iter().copied().collect(),
        other => other.to_i64().iter().map(|&v| v as i8).collect(),
    }
}

pub fn i32_values(t: &Tensor) -> Vec<i32> {
    t.to_i64().iter().map(|&v| v as i32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc4hw4_round_trips() {
        let data: Vec<u8> = (0..2 * 5 * 3 * 2).map(|v| v as u8).collect();
        let packed = to_nc4hw4(&data, 2, 5, 3, 2, 9);
        assert_eq!(packed.len(), 2 * 2 * 4 * 3 * 2);
        assert_eq!(from_nc4hw4(&packed, 2, 5, 3, 2), data);
    }

    /// The host quantize (both the AVX-512 build, where the CPU has it, and the portable
    /// one) against the reference's per-value quantize and the NC4HW4 layout, over values
    /// that probe its shortcuts: ties at +-0.5 steps (half to even), values past the +-512
    /// hold, infinities, NaN, -0, zero points at and past the u8 range, a channel count
    /// that leaves a partial block, and a scale whose quotients are not exact.
    #[test]
    fn host_quantize_matches_the_reference_in_nc4hw4() {
        let mut x: Vec<f32> = vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            127.5,
            128.5,
            -128.5,
            255.5,
            511.5,
            512.5,
            -512.5,
            1e6,
            -1e6,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            f32::MIN_POSITIVE,
            4_194_303.5,
            -4_194_304.5,
        ];
        let mut seed = 7u64;
        while x.len() < 2 * 5 * 37 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x.push(((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 1400.0);
        }
        let (n, c, hw) = (2, 5, 37);
        for (scale, zp) in [(1.0f32, 0), (1.0, 128), (0.5, 255), (0.0173, 3), (1.0, 300), (2.0, -7)] {
            let want: Vec<u8> = x.iter().map(|&v| weft_core::quant::quantize_u8(v, scale, zp)).collect();
            let want = to_nc4hw4(&want, n, c, 1, hw, zp.clamp(0, 255) as u8);
            assert_eq!(
                quantize_nc4hw4(&x, n, c, hw, scale, zp),
                Some(want.clone()),
                "scale {scale} zero point {zp}"
            );
            let mut portable = vec![0u8; want.len()];
            quantize_into(&x, n, c, hw, scale, zp, &mut portable);
            assert_eq!(portable, want, "portable, scale {scale} zero point {zp}");
        }
        // a slice of the wrong length is refused, not read past or padded
        assert_eq!(quantize_nc4hw4(&x[1..], n, c, hw, 1.0, 0), None);
    }

    #[test]
    fn packs_float_weights_by_lane() {
        // M=17: channel 16 starts the second block
        let w: Vec<f32> = (0..17 * 2).map(|v| v as f32).collect();
        let p = pack_fconv(&w, 17, 2, 1, 1);
        assert_eq!(p.len(), 2 * 2 * 16);
        assert_eq!((p[0], p[1], p[16], p[17]), (0.0, 2.0, 1.0, 3.0));
        assert_eq!((p[32], p[48], p[33]), (32.0, 33.0, 0.0));
    }

    #[test]
    fn stems_fold_column_channel_pairs_four_to_a_word() {
        assert_eq!(stem_fold_words(1, 3, 7, 112), Some(6)); // RGB 7x7: 21 pairs
        assert_eq!(stem_fold_words(1, 4, 3, 9), Some(3));
        assert_eq!(stem_fold_words(1, 1, 7, 9), Some(2));
        assert_eq!(stem_fold_words(1, 5, 7, 9), None); // two channel blocks
        assert_eq!(stem_fold_words(2, 2, 3, 9), None); // grouped
        assert_eq!(stem_fold_words(1, 3, 1, 9), None); // 1 wide
        assert_eq!(stem_fold_words(1, 3, 7, 1), None); // one output column
    }

    #[test]
    fn packs_bytes_by_channel_block() {
        // M=1, CG=5, 1x1: channels 0..3 in word 0, channel 4 in word 1 (byte 0)
        let w: Vec<i8> = vec![1, -2, 3, -4, 5];
        let p = ConvGroup {
            w: &w,
            bias: &[10],
            m: 1,
            cg: 5,
            kh: 1,
            kw: 1,
            zp_x: 2,
        }
        .pack(16);
        assert_eq!(p.words.len(), 2 * 16);
        assert_eq!(p.words[0] as u32, 0xFC03_FE01);
        assert_eq!(p.words[16], 5);
        assert_eq!(p.bias, vec![10 - 2 * 3]);
    }
}
