//! MX layers on the reference: convolution and fully connected layers with MX weights, the
//! arithmetic of `weft_core::mx`.
//!
//! The input activations are converted first (MX blocks of 32 along the input channels of
//! each group, or f16). Each output is then, in f32:
//! `acc = 0; for ky, for kx (taps inside the input only), for each channel block b:
//! acc += block(w[m, b, ky, kx], x[n, b, iy, ix])`, then `acc + bias[m]`, then the fused
//! activation. A block is summed exactly in integers when both formats allow
//! ([`MxFormat::exact_dot`]) and in f32 in channel order otherwise, and scaled by its two
//! shared exponents with [`mx::scale_sum`]. A fully connected layer is the same with one tap.

use weft_core::mx::{self, BLOCK, MxFormat};
use weft_core::op::{Activation, MxActivations, MxConv, MxGemm};
use weft_core::shape::window;
use weft_core::{CoreError, Node, Result, Tensor};

/// Exponent marking the NaN scale.
pub const NAN_EXP: i32 = i32::MIN;

/// Element values as signed step counts: i32 when every block sum of the layer fits in
/// 31 bits, i64 otherwise, f32 for the formats summed in f32.
enum Vals {
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
}

/// How a layer sums its blocks (the OpenCL kernel's `path` argument is the discriminant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    I32,
    I64,
    F32,
}

impl Vals {
    fn new(path: Path, steps: Vec<i64>) -> Vals {
        match path {
            Path::I32 => Vals::I32(steps.iter().map(|v| *v as i32).collect()),
            Path::I64 => Vals::I64(steps),
            Path::F32 => Vals::F32(steps.iter().map(|v| *v as f32).collect()),
        }
    }
}

/// Converted activations of one layer, channels last: `[pixels][channels]` values and
/// `[pixels][blocks]` exponents (including the element step; [`NAN_EXP`]: the NaN scale).
struct Acts {
    vals: Vals,
    exps: Vec<i32>,
    channels: usize,
    blocks: usize,
}

/// Converts `x` given as `[pixels][channels]` (groups of `cg` channels, blocks within each).
fn convert(x: &[f32], channels: usize, cg: usize, act: MxActivations, path: Path) -> Acts {
    let groups = channels / cg.max(1);
    let nbg = mx::blocks_along(cg);
    let pixels = x.len() / channels.max(1);
    let mut out = Acts {
        vals: Vals::F32(Vec::new()),
        exps: vec![0; pixels * groups * nbg],
        channels,
        blocks: groups * nbg,
    };
    match act {
        MxActivations::F16 => {
            out.vals = Vals::F32(x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect());
        }
        MxActivations::Mx(f) => {
            let mut steps = vec![0i64; x.len()];
            for p in 0..pixels {
                for g in 0..groups {
                    for b in 0..nbg {
                        let lo = p * channels + g * cg + b * BLOCK;
                        let len = BLOCK.min(cg - b * BLOCK);
                        let e = mx::quantize_block_steps(f, &x[lo..lo + len], &mut steps[lo..lo + len]);
                        out.exps[p * out.blocks + g * nbg + b] = e.map_or(NAN_EXP, |e| e + f.quantum());
                    }
                }
            }
            out.vals = Vals::new(path, steps);
        }
    }
    out
}

/// Weights `[M][taps][cg]` as signed steps, with `[M][taps][blocks]` exponents.
struct Weights {
    vals: Vals,
    exps: Vec<i32>,
}

/// Reads weight codes `[M, cg, taps]` and scales `[M, nbg, taps]` (as the graph holds
/// them) into tap-major order.
#[allow(clippy::too_many_arguments)]
fn weights(
    node: &Node,
    f: MxFormat,
    codes: &Tensor,
    scales: &Tensor,
    m: usize,
    cg: usize,
    taps: usize,
    path: Path,
) -> Result<Weights> {
    let (Tensor::U8(c), Tensor::U8(s)) = (codes, scales) else {
        return Err(CoreError::node(node, "MX weights must be uint8 codes"));
    };
    let c = c.as_standard_layout();
    let s = s.as_standard_layout();
    let (c, s) = (c.as_slice().unwrap_or(&[]), s.as_slice().unwrap_or(&[]));
    let nbg = mx::blocks_along(cg);
    let mut steps = vec![0i64; m * taps * cg];
    let mut exps = vec![NAN_EXP; m * taps * nbg];
    for mi in 0..m {
        for t in 0..taps {
            for ci in 0..cg {
                let code = c[(mi * cg + ci) * taps + t];
                let v = mx::signed_steps(f, code).ok_or_else(|| {
                    CoreError::node(node, format!("weight code {code:#04x} is NaN or infinite in {f}"))
                })?;
                steps[(mi * taps + t) * cg + ci] = v;
            }
            for b in 0..nbg {
                exps[(mi * taps + t) * nbg + b] =
                    mx::scale_exponent(s[(mi * nbg + b) * taps + t]).map_or(NAN_EXP, |e| e + f.quantum());
            }
        }
    }
    Ok(Weights {
        vals: Vals::new(path, steps),
        exps,
    })
}

/// A layer's weights as a device takes them: step counts `[M][taps][cg]` (as i32, or the
/// f32 bits of the count on the f32 path) and exponents `[M][taps][blocks]` (step included,
/// [`NAN_EXP`] for the NaN scale), from codes `[M, cg, taps...]` and scales `[M, blocks,
/// taps...]`.
pub fn device_weights(
    node: &Node,
    f: MxFormat,
    codes: &Tensor,
    scales: &Tensor,
    path: Path,
) -> Result<(Vec<i32>, Vec<i32>)> {
    let s = codes.shape();
    let (m, cg) = (s[0], s[1]);
    let taps: usize = s[2..].iter().product();
    let w = weights(node, f, codes, scales, m, cg, taps, path)?;
    let steps = match w.vals {
        Vals::I32(v) => v,
        Vals::I64(v) => v.iter().map(|x| *x as i32).collect(), // E4M3 counts fit in 18 bits
        Vals::F32(v) => v.iter().map(|x| x.to_bits() as i32).collect(),
    };
    Ok((steps, w.exps))
}

/// One block: weights from `wo` and activations from `xo`, `len` values, exponents `we`
/// and `xe`.
#[inline]
fn block(w: &Weights, x: &Acts, wo: usize, xo: usize, len: usize, we: i32, xe: i32) -> f32 {
    if we == NAN_EXP || xe == NAN_EXP {
        return f32::NAN;
    }
    let sum = match (&w.vals, &x.vals) {
        (Vals::I32(a), Vals::I32(b)) => {
            let (a, b) = (&a[wo..wo + len], &b[xo..xo + len]);
            a.iter().zip(b).map(|(p, q)| p * q).sum::<i32>() as f32
        }
        (Vals::I64(a), Vals::I64(b)) => mx::dot_exact(&a[wo..wo + len], &b[xo..xo + len]) as f32,
        (Vals::F32(a), Vals::F32(b)) => mx::dot_f32(&a[wo..wo + len], &b[xo..xo + len]),
        _ => f32::NAN, // both sides are built with one path
    };
    mx::scale_sum(sum, we + xe)
}

fn finish(acc: f32, bias: Option<&[f32]>, m: usize, act: Option<Activation>) -> f32 {
    let v = acc + bias.map_or(0.0, |b| b[m]);
    act.map_or(v, |a| a.apply(v))
}

/// The layer's summation: exact (in i32 when 32 largest products fit in 31 bits) when both
/// formats allow, f32 otherwise.
pub fn path(weights: MxFormat, act: MxActivations) -> Path {
    match act {
        MxActivations::Mx(a) if a.exact_dot() && weights.exact_dot() => {
            if (weights.max_steps() * a.max_steps()).saturating_mul(mx::BLOCK as i64) < i64::from(i32::MAX) {
                Path::I32
            } else {
                Path::I64
            }
        }
        _ => Path::F32,
    }
}

fn input<'a>(node: &Node, inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| CoreError::node(node, format!("input {i} is missing")))
}

fn bias_of(inputs: &[Option<&Tensor>], i: usize) -> Option<Vec<f32>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|b| b.to_f32().iter().copied().collect())
}

/// MX convolution (shapes checked by shape inference).
pub fn mx_conv(node: &Node, q: &MxConv, inputs: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let get = |i: usize| input(node, inputs, i);
    let x = get(0)?.to_f32();
    let (codes, scales) = (get(1)?, get(2)?);
    let bias = bias_of(inputs, 3);
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let ws = codes.shape();
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let conv = &q.conv;
    let g = conv.group;
    let mg = m / g;
    let err = |e: String| CoreError::node(node, e);
    let wy = window(h, kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0).map_err(err)?;
    let wx = window(wd, kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1).map_err(err)?;
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let path = path(q.weights, q.activations);
    // channels last
    let mut nhwc = vec![0f32; x.len()];
    for (idx, v) in x.iter().enumerate() {
        let xi = idx % wd;
        let yi = (idx / wd) % h;
        let ci = (idx / wd / h) % c;
        let ni = idx / wd / h / c;
        nhwc[((ni * h + yi) * wd + xi) * c + ci] = *v;
    }
    let acts = convert(&nhwc, c, cg, q.activations, path);
    let taps = kh * kw;
    let w = weights(node, q.weights, codes, scales, m, cg, taps, path)?;
    let nbg = mx::blocks_along(cg);
    let mut out = vec![0f32; n * m * oh * ow];
    // one output plane (image ni, channel mi) at a time; planes split between threads
    let plane = |idx: usize, dst: &mut [f32]| {
        let (ni, mi) = (idx / m, idx % m);
        let gi = mi / mg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0f32;
                for ky in 0..kh {
                    let iy = (oy * conv.strides[0] + ky * conv.dilations[0]) as isize - wy.pad_begin as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * conv.strides[1] + kx * conv.dilations[1]) as isize - wx.pad_begin as isize;
                        if ix < 0 || ix >= wd as isize {
                            continue;
                        }
                        let pixel = (ni * h + iy as usize) * wd + ix as usize;
                        let t = ky * kw + kx;
                        for b in 0..nbg {
                            let len = BLOCK.min(cg - b * BLOCK);
                            let wo = (mi * taps + t) * cg + b * BLOCK;
                            let xo = pixel * acts.channels + gi * cg + b * BLOCK;
                            let we = w.exps[(mi * taps + t) * nbg + b];
                            let xe = acts.exps[pixel * acts.blocks + gi * nbg + b];
                            acc += block(&w, &acts, wo, xo, len, we, xe);
                        }
                    }
                }
                dst[oy * ow + ox] = finish(acc, bias.as_deref(), mi, conv.activation);
            }
        }
    };
    let planes = n * m;
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, planes.max(1));
    let per = planes.div_ceil(threads).max(1);
    let plane_len = (oh * ow).max(1);
    std::thread::scope(|sc| {
        for (ti, chunk) in out.chunks_mut(per * plane_len).enumerate() {
            let plane = &plane;
            sc.spawn(move || {
                for (j, dst) in chunk.chunks_mut(plane_len).enumerate() {
                    plane(ti * per + j, dst);
                }
            });
        }
    });
    Tensor::from_f32(out_shape, out)
}

/// MX fully connected layer (shapes checked by shape inference).
pub fn mx_gemm(node: &Node, q: &MxGemm, inputs: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let get = |i: usize| input(node, inputs, i);
    let x = get(0)?.to_f32();
    let (codes, scales) = (get(1)?, get(2)?);
    let bias = bias_of(inputs, 3);
    let (n, k) = (x.shape()[0], x.shape()[1]);
    let m = codes.shape()[0];
    let path = path(q.weights, q.activations);
    let xs: Vec<f32> = x.iter().copied().collect();
    let acts = convert(&xs, k, k, q.activations, path);
    let w = weights(node, q.weights, codes, scales, m, k, 1, path)?;
    let nb = mx::blocks_along(k);
    let mut out = vec![0f32; n * m];
    for ni in 0..n {
        for mi in 0..m {
            let mut acc = 0f32;
            for b in 0..nb {
                let len = BLOCK.min(k - b * BLOCK);
                let (we, xe) = (w.exps[mi * nb + b], acts.exps[ni * nb + b]);
                acc += block(&w, &acts, mi * k + b * BLOCK, ni * k + b * BLOCK, len, we, xe);
            }
            out[ni * m + mi] = finish(acc, bias.as_deref(), mi, q.activation);
        }
    }
    let _ = out_shape;
    Tensor::from_f32(&[n, m], out)
}
