//! The integer reference: evaluation of the quantized ops with exactly the arithmetic
//! defined in `weft_core::quant`. This is the specification the OpenCL kernels match.

use ndarray::{ArrayD, Axis, IxDyn};
use weft_core::op::{Pool, QAdd, QConcat, QConv, QGemm, QMean, QOut};
use weft_core::quant::{div_round, quantize_u8, requantize, rshift_round};
use weft_core::shape::{pool_windows, window};
use weft_core::{CoreError, Result, Tensor};

fn u8s(t: &Tensor, what: &str) -> Result<Vec<u8>> {
    match t {
        Tensor::U8(a) => Ok(a.iter().copied().collect()),
        other => Err(CoreError::Tensor(format!("{what} must be uint8, is {}", other.dtype()))),
    }
}

fn i32s(t: &Tensor) -> Vec<i32> {
    t.to_i64().iter().map(|&v| v as i32).collect()
}

fn out_u8(shape: &[usize], v: Vec<u8>) -> Result<Tensor> {
    Ok(Tensor::U8(weft_core::tensor::array_from(shape, v)?))
}

/// Dot products of each row of `a` `[m,k]` with each row of `b` `[n,k]` into `[m,n]`.
fn dot_rows(a: &[i16], b: &[i16], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let br = &b[j * k..(j + 1) * k];
            out[i * n + j] = ar.iter().zip(br).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
        }
    }
    out
}

/// Integer convolution: `acc = bias + sum((x_padded - zp_x) * w)` with padded cells equal
/// to `zp_x`, then requantization (plus the fused residual).
pub fn qconv(q: &QConv, ins: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let get = |i: usize| {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| CoreError::Tensor(format!("QConv input {i} is missing")))
    };
    let x = get(0)?;
    let w = get(1)?;
    let bias = i32s(get(2)?);
    let mult = i32s(get(3)?);
    let shift = i32s(get(4)?);
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let g = q.conv.group;
    let mg = m / g;
    let wy =
        window(h, kh, q.conv.strides[0], q.conv.dilations[0], &q.conv.padding, false, 0).map_err(CoreError::Tensor)?;
    let wx = window(
        wd,
        kw,
        q.conv.strides[1],
        q.conv.dilations[1],
        &q.conv.padding,
        false,
        1,
    )
    .map_err(CoreError::Tensor)?;
    let (oh, ow) = (wy.out, wx.out);
    let k = cg * kh * kw;
    let p = oh * ow;
    let xs = u8s(x, "QConv input")?;
    let zp = q.x_zero_point;
    let wv: Vec<i16> = w.to_i64().iter().map(|&v| v as i16).collect();
    let residual = match q.residual_zero_point {
        Some(rzp) => Some((u8s(get(5)?, "QConv residual")?, get(6)?.to_i64_vec(), rzp)),
        None => None,
    };
    let mut out = vec![0u8; n * m * p];
    // columns: [p][k] of (x - zp), zero where padded
    let mut col = vec![0i16; p * k];
    for ni in 0..n {
        for gi in 0..g {
            for oy in 0..oh {
                for ox in 0..ow {
                    let dst = &mut col[(oy * ow + ox) * k..(oy * ow + ox + 1) * k];
                    for ci in 0..cg {
                        let plane = &xs[((ni * c) + gi * cg + ci) * h * wd..][..h * wd];
                        for ky in 0..kh {
                            let iy =
                                (oy * q.conv.strides[0] + ky * q.conv.dilations[0]) as isize - wy.pad_begin as isize;
                            for kx in 0..kw {
                                let ix = (ox * q.conv.strides[1] + kx * q.conv.dilations[1]) as isize
                                    - wx.pad_begin as isize;
                                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd;
                                dst[(ci * kh + ky) * kw + kx] = if inside {
                                    plane[iy as usize * wd + ix as usize] as i16 - zp as i16
                                } else {
                                    0
                                };
                            }
                        }
                    }
                }
            }
            let acc = dot_rows(&wv[gi * mg * k..(gi + 1) * mg * k], &col, mg, p, k);
            for oi in 0..mg {
                let mo = gi * mg + oi;
                for pi in 0..p {
                    let idx = (ni * m + mo) * p + pi;
                    let mut v = i64::from(acc[oi * p + pi] + bias[mo]) * i64::from(mult[mo]);
                    if let Some((r, rmult, rzp)) = &residual {
                        v += i64::from(i32::from(r[idx]) - rzp) * rmult[mo];
                    }
                    out[idx] = clamp_out(rshift_round(v, shift[mo]), &q.out);
                }
            }
        }
    }
    out_u8(out_shape, out)
}

fn clamp_out(v: i64, o: &QOut) -> u8 {
    (i64::from(o.zero_point) + v).clamp(i64::from(o.clamp[0]), i64::from(o.clamp[1])) as u8
}

/// Integer fully connected layer: `acc = bias + sum((x - zp_x) * w)`, requantized.
pub fn qgemm(q: &QGemm, ins: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let get = |i: usize| {
        ins.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| CoreError::Tensor(format!("QGemm input {i} is missing")))
    };
    let x = get(0)?;
    let w = get(1)?;
    let (n, k) = (x.shape()[0], x.shape()[1]);
    let m = w.shape()[0];
    let xs: Vec<i16> = u8s(x, "QGemm input")?
        .iter()
        .map(|&v| v as i16 - q.x_zero_point as i16)
        .collect();
    let wv: Vec<i16> = w.to_i64().iter().map(|&v| v as i16).collect();
    let (bias, mult, shift) = (i32s(get(2)?), i32s(get(3)?), i32s(get(4)?));
    let acc = dot_rows(&xs, &wv, n, m, k);
    let out = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = i % m;
            requantize(i64::from(a + bias[c]), mult[c], shift[c], q.out.zero_point, q.out.clamp)
        })
        .collect();
    out_u8(out_shape, out)
}

/// Integer add with broadcasting.
pub fn qadd(q: &QAdd, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let (Tensor::U8(a), Tensor::U8(b)) = (a, b) else {
        return Err(CoreError::Tensor("QAdd inputs must be uint8".into()));
    };
    let bad = || CoreError::Tensor("QAdd inputs do not broadcast".into());
    let a = a.broadcast(IxDyn(out_shape)).ok_or_else(bad)?;
    let b = b.broadcast(IxDyn(out_shape)).ok_or_else(bad)?;
    let out: Vec<u8> = a
        .iter()
        .zip(b.iter())
        .map(|(&x, &y)| {
            let v = i64::from(i32::from(x) - q.a_zero_point) * i64::from(q.a_multiplier)
                + i64::from(i32::from(y) - q.b_zero_point) * i64::from(q.b_multiplier);
            clamp_out(rshift_round(v, q.shift), &q.out)
        })
        .collect();
    out_u8(out_shape, out)
}

/// Integer concatenation: each input requantized to the output's parameters, then joined
/// along the axis.
pub fn qconcat(q: &QConcat, inputs: &[&Tensor]) -> Result<Tensor> {
    if inputs.len() != q.inputs.len() || inputs.is_empty() {
        return Err(CoreError::Tensor(format!(
            "QConcat has parameters for {} inputs, got {}",
            q.inputs.len(),
            inputs.len()
        )));
    }
    let rank = inputs[0].shape().len();
    let axis = weft_core::shape::normalize_axis(q.axis, rank)
        .ok_or_else(|| CoreError::Tensor(format!("QConcat axis {} out of range", q.axis)))?;
    let mut parts = Vec::with_capacity(inputs.len());
    for (t, &[zp, mult, shift]) in inputs.iter().zip(&q.inputs) {
        let Tensor::U8(a) = t else {
            return Err(CoreError::Tensor("QConcat inputs must be uint8".into()));
        };
        parts.push(a.mapv(|v| requantize(i64::from(i32::from(v) - zp), mult, shift, q.zero_point, [0, 255])));
    }
    let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
    ndarray::concatenate(ndarray::Axis(axis), &views)
        .map(Tensor::U8)
        .map_err(|e| CoreError::Tensor(format!("QConcat: {e}")))
}

/// Max or average pooling on u8 (`zero_point` given for averages).
pub fn qpool(x: &Tensor, pool: &Pool, average: Option<i32>, out_shape: &[usize]) -> Result<Tensor> {
    let xs = u8s(x, "pooling input")?;
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let [wy, wx] = pool_windows(pool, h, w).map_err(CoreError::Tensor)?;
    let (oh, ow) = (wy.out, wx.out);
    let [sy, sx] = pool.strides;
    let [dy, dx] = pool.dilations;
    let [kh, kw] = pool.kernel_shape;
    let mut out = vec![0u8; n * c * oh * ow];
    for (pi, plane) in xs.chunks_exact(h * w).enumerate() {
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * sy) as isize - wy.pad_begin as isize;
                let x0 = (ox * sx) as isize - wx.pad_begin as isize;
                let v = match average {
                    None => {
                        let mut best = 0u8;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = (y0 + (ky * dy) as isize, x0 + (kx * dx) as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    best = best.max(plane[iy as usize * w + ix as usize]);
                                }
                            }
                        }
                        best
                    }
                    Some(zp) => {
                        let y_end = (y0 + kh as isize).min((h + wy.pad_end) as isize);
                        let x_end = (x0 + kw as isize).min((w + wx.pad_end) as isize);
                        let padded_count = (y_end - y0) * (x_end - x0);
                        let (ya, yb) = (y0.max(0), y_end.min(h as isize));
                        let (xa, xb) = (x0.max(0), x_end.min(w as isize));
                        let mut sum = 0i64;
                        for iy in ya..yb {
                            for ix in xa..xb {
                                sum += i64::from(plane[iy as usize * w + ix as usize]) - i64::from(zp);
                            }
                        }
                        let count = if pool.count_include_pad {
                            padded_count
                        } else {
                            (yb - ya).max(0) * (xb - xa).max(0)
                        };
                        (i64::from(zp) + div_round(sum, count.max(1) as i64)).clamp(0, 255) as u8
                    }
                };
                out[pi * oh * ow + oy * ow + ox] = v;
            }
        }
    }
    out_u8(out_shape, out)
}

/// Mean of u8 values over axes, requantized:
/// `clamp(zp_out + rshift_round(sum(x - zp_x) * multiplier, shift))`.
pub fn qmean(x: &Tensor, axes: Option<Vec<i64>>, q: &QMean, out_shape: &[usize]) -> Result<Tensor> {
    let Tensor::U8(a) = x else {
        return Err(CoreError::Tensor("QMean input must be uint8".into()));
    };
    let rank = a.ndim();
    let mut axes: Vec<usize> = match axes {
        Some(v) => v
            .iter()
            .filter_map(|&ax| weft_core::shape::normalize_axis(ax, rank))
            .collect(),
        None => (2..rank).collect(),
    };
    axes.sort_unstable();
    let mut sums: ArrayD<i64> = a.mapv(|v| i64::from(v) - i64::from(q.x_zero_point));
    for &ax in axes.iter().rev() {
        sums = sums.sum_axis(Axis(ax));
    }
    let out: Vec<u8> = sums
        .iter()
        .map(|&s| clamp_out(rshift_round(s * i64::from(q.multiplier), q.shift), &q.out))
        .collect();
    out_u8(out_shape, out)
}

/// Per-axis parameter broadcast for QuantizeLinear / DequantizeLinear.
fn per_axis(
    shape: &[usize],
    axis: i64,
    scale: &Tensor,
    zp: Option<&Tensor>,
) -> Result<(Vec<f32>, Vec<i64>, usize, usize)> {
    let scales: Vec<f32> = scale.to_f32().iter().copied().collect();
    let zps: Vec<i64> = zp.map(Tensor::to_i64_vec).unwrap_or_else(|| vec![0; scales.len()]);
    if scales.len() == 1 {
        return Ok((scales, zps, 1, 1));
    }
    let a = weft_core::shape::normalize_axis(axis, shape.len())
        .ok_or_else(|| CoreError::Tensor(format!("axis {axis} out of range")))?;
    if shape[a] != scales.len() || zps.len() != scales.len() {
        return Err(CoreError::Tensor(format!(
            "{} scales for axis of size {}",
            scales.len(),
            shape[a]
        )));
    }
    let inner: usize = shape[a + 1..].iter().product();
    Ok((scales, zps, shape[a], inner))
}

/// ONNX QuantizeLinear: `saturate(round_half_even(x / s) + zp)` to the zero point's type.
pub fn quantize_linear(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis: i64) -> Result<Tensor> {
    let (s, z, n, inner) = per_axis(x.shape(), axis, scale, zp)?;
    let xs = x.to_f32();
    let v: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let c = (i / inner) % n;
            (f / s[c]).round_ties_even() + z[c] as f32
        })
        .collect();
    let t = Tensor::from_f32(x.shape(), v)?;
    Ok(t.cast(zp.map_or(weft_core::DType::U8, Tensor::dtype)))
}

/// ONNX DequantizeLinear: `(x - zp) * s`.
pub fn dequantize_linear(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis: i64) -> Result<Tensor> {
    let (s, z, n, inner) = per_axis(x.shape(), axis, scale, zp)?;
    let v: Vec<f32> = x
        .to_i64()
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = (i / inner) % n;
            (q - z[c]) as f32 * s[c]
        })
        .collect();
    Tensor::from_f32(x.shape(), v)
}

/// f32 to u8 at the input edge.
pub fn quantize(x: &Tensor, scale: f32, zero_point: i32) -> Result<Tensor> {
    let v: Vec<u8> = x.to_f32().iter().map(|&f| quantize_u8(f, scale, zero_point)).collect();
    out_u8(x.shape(), v)
}

/// u8 to f32 at the output edge.
pub fn dequantize(x: &Tensor, scale: f32, zero_point: i32) -> Result<Tensor> {
    let v: Vec<f32> = u8s(x, "Dequantize input")?
        .iter()
        .map(|&q| (i32::from(q) - zero_point) as f32 * scale)
        .collect();
    Tensor::from_f32(x.shape(), v)
}
