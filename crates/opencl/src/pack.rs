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
