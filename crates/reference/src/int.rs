//! The integer reference: evaluation of the quantized ops with exactly the arithmetic
//! defined in `weft_core::quant`. This is the specification the OpenCL kernels match.

use ndarray::{ArrayD, Axis, IxDyn};
use weft_core::op::{Pool, QAdd, QConcat, QConv, QGemm, QMean, QOut};
use weft_core::quant::{div_round, quantize_u8, requantize, rshift_round};
use weft_core::shape::{pool_windows, window};
use weft_core::{CoreError, DType, Result, Tensor};

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

/// The zero points of a small-float QuantizeLinear/DequantizeLinear as values (`per_axis`
/// has checked there is one per scale); none is all zeros.
fn float_zero_points(zp: Option<&Tensor>) -> Vec<f32> {
    zp.map(|t| t.to_f32().iter().copied().collect()).unwrap_or_default()
}

/// ONNX QuantizeLinear: `saturate(round_half_even(x / s) + zp)` to the zero point's type.
pub fn quantize_linear(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis: i64) -> Result<Tensor> {
    let (s, z, n, inner) = per_axis(x.shape(), axis, scale, zp)?;
    let xs = x.to_f32();
    let to = zp.map_or(weft_core::DType::U8, Tensor::dtype);
    if to.mini().is_some() {
        // to a small float: x / s + zp rounded to the nearest value of the format
        let zf = float_zero_points(zp);
        let v: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let c = (i / inner) % n;
                f / s[c] + zf.get(c).copied().unwrap_or(0.0)
            })
            .collect();
        return Ok(Tensor::from_f32(x.shape(), v)?.cast_float(to, true, Default::default()));
    }
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
    if x.dtype().mini().is_some() {
        let zf = float_zero_points(zp);
        let v: Vec<f32> = x
            .to_f32()
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = (i / inner) % n;
                (q - zf.get(c).copied().unwrap_or(0.0)) * s[c]
            })
            .collect();
        return Tensor::from_f32(x.shape(), v);
    }
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

/// One scale of a QLinear op as f32, requiring a single value (per-tensor).
fn one_scale(t: &Tensor, what: &str) -> Result<f32> {
    match t.to_f32().iter().copied().collect::<Vec<_>>()[..] {
        [s] => Ok(s),
        _ => Err(CoreError::Tensor(format!(
            "{what} with {} values: per-axis scales are not supported here",
            t.len()
        ))),
    }
}

/// `a * b / c` in the scales' own precision (f16 scales round after each step, as ONNX's
/// reference computes them).
fn scale_ratio(a: f32, b: f32, c: f32, half: bool) -> f64 {
    if half {
        let r = |v: f32| half::f16::from_f32(v).to_f32();
        f64::from(r(r(a * b) / c))
    } else {
        f64::from(a * b / c)
    }
}

/// Rounds half to even, adds the zero point and saturates to the zero point's type.
fn requantize_linear(v: f64, zp: &Tensor) -> i64 {
    let (lo, hi) = match zp.dtype() {
        DType::I8 => (-128, 127),
        _ => (0, 255),
    };
    (v.round_ties_even() as i64 + zp.to_i64_vec().first().copied().unwrap_or(0)).clamp(lo, hi)
}

fn narrow(zp: &Tensor, shape: &[usize], v: Vec<i64>) -> Result<Tensor> {
    Ok(match zp.dtype() {
        DType::I8 => Tensor::I8(weft_core::tensor::array_from(
            shape,
            v.iter().map(|&x| x as i8).collect(),
        )?),
        DType::U8 => Tensor::U8(weft_core::tensor::array_from(
            shape,
            v.iter().map(|&x| x as u8).collect(),
        )?),
        other => {
            return Err(CoreError::Tensor(format!(
                "a {other} zero point is not supported (uint8, int8)"
            )));
        }
    })
}

fn get<'a>(ins: &[Option<&'a Tensor>], i: usize, op: &str) -> Result<&'a Tensor> {
    ins.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| CoreError::Tensor(format!("{op} input {i} is missing")))
}

/// ONNX QLinearMatMul with per-tensor scales: `saturate(rint((a - za)(b - zb) * sa*sb/sy) + zy)`,
/// the product exact in integers.
pub fn qlinear_matmul(ins: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let op = "QLinearMatMul";
    let (a, b) = (get(ins, 0, op)?, get(ins, 3, op)?);
    let (za, zb, zy) = (get(ins, 2, op)?, get(ins, 5, op)?, get(ins, 7, op)?);
    let half = get(ins, 1, op)?.dtype() == DType::F16;
    let s = scale_ratio(
        one_scale(get(ins, 1, op)?, "a_scale")?,
        one_scale(get(ins, 4, op)?, "b_scale")?,
        one_scale(get(ins, 6, op)?, "y_scale")?,
        half,
    );
    for (t, what) in [(za, "a_zero_point"), (zb, "b_zero_point")] {
        if t.len() != 1 {
            return Err(CoreError::Tensor(format!(
                "{what}: per-axis zero points are not supported here"
            )));
        }
    }
    let za = za.to_i64_vec()[0];
    let zb = zb.to_i64_vec()[0];
    let av = a.to_i64().mapv(|v| v - za);
    let bv = b.to_i64().mapv(|v| v - zb);
    if av.ndim() < 2 || bv.ndim() < 2 {
        return Err(CoreError::Tensor(
            "QLinearMatMul of 1-D operands is not supported".into(),
        ));
    }
    let (m, k) = (av.shape()[av.ndim() - 2], av.shape()[av.ndim() - 1]);
    let n = bv.shape()[bv.ndim() - 1];
    let batch = &out_shape[..out_shape.len() - 2];
    let full = |t: &ArrayD<i64>, r: usize, c: usize| -> Result<ArrayD<i64>> {
        let mut s = batch.to_vec();
        s.extend([r, c]);
        t.broadcast(IxDyn(&s))
            .map(|v| v.as_standard_layout().into_owned())
            .ok_or_else(|| CoreError::Tensor("QLinearMatMul operands do not broadcast".into()))
    };
    let (av, bv) = (full(&av, m, k)?, full(&bv, k, n)?);
    let (av, bv) = (av.as_slice().unwrap_or(&[]), bv.as_slice().unwrap_or(&[]));
    let nb: usize = batch.iter().product();
    let mut out = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        for i in 0..m {
            for j in 0..n {
                let acc: i64 = (0..k)
                    .map(|p| av[(bi * m + i) * k + p] * bv[(bi * k + p) * n + j])
                    .sum();
                out.push(requantize_linear(acc as f64 * s, zy));
            }
        }
    }
    narrow(zy, out_shape, out)
}

/// ONNX QLinearConv (2-D): the convolution of `x - zx` and `w - zw` (per output channel)
/// exact in integers plus the int32 bias, then `saturate(rint(acc * sx*sw/sy) + zy)`.
pub fn qlinear_conv(c: &weft_core::op::Conv, ins: &[Option<&Tensor>], out_shape: &[usize]) -> Result<Tensor> {
    let op = "QLinearConv";
    let (x, w, zy) = (get(ins, 0, op)?, get(ins, 3, op)?, get(ins, 7, op)?);
    let zx = one_scale(get(ins, 2, op)?, "x_zero_point")? as i64;
    let sx = one_scale(get(ins, 1, op)?, "x_scale")?;
    let sy = one_scale(get(ins, 6, op)?, "y_scale")?;
    let half = get(ins, 1, op)?.dtype() == DType::F16;
    let sw: Vec<f32> = get(ins, 4, op)?.to_f32().iter().copied().collect();
    let zw = get(ins, 5, op)?.to_i64_vec();
    let bias = ins.get(8).copied().flatten().map(Tensor::to_i64_vec);
    if x.shape().len() != 4 || w.shape().len() != 4 {
        return Err(CoreError::Tensor("only 2-D QLinearConv is supported".into()));
    }
    let (n, ch, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let pick = |v: &[i64], o: usize| {
        if v.len() == 1 {
            v[0]
        } else {
            v.get(o).copied().unwrap_or(0)
        }
    };
    if !(sw.len() == 1 || sw.len() == m) || !(zw.len() == 1 || zw.len() == m) {
        return Err(CoreError::Tensor(format!(
            "w_scale and w_zero_point must have 1 or {m} values"
        )));
    }
    let wy = window(h, kh, c.strides[0], c.dilations[0], &c.padding, false, 0).map_err(CoreError::Tensor)?;
    let wx = window(wd, kw, c.strides[1], c.dilations[1], &c.padding, false, 1).map_err(CoreError::Tensor)?;
    let (oh, ow) = (wy.out, wx.out);
    let xs = x.to_i64();
    let xs = xs.as_slice().unwrap_or(&[]);
    let ws = w.to_i64();
    let ws = ws.as_slice().unwrap_or(&[]);
    let mg = m / c.group.max(1);
    let mut out = Vec::with_capacity(n * m * oh * ow);
    for ni in 0..n {
        for o in 0..m {
            let g = o / mg.max(1);
            let s = scale_ratio(sx, sw[if sw.len() == 1 { 0 } else { o }], sy, half);
            let zwo = pick(&zw, o);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.as_ref().map_or(0, |b| pick(b, o));
                    for ci in 0..cg {
                        let cin = g * cg + ci;
                        for ky in 0..kh {
                            let iy = (oy * c.strides[0] + ky * c.dilations[0]) as isize - wy.pad_begin as isize;
                            for kx in 0..kw {
                                let ix = (ox * c.strides[1] + kx * c.dilations[1]) as isize - wx.pad_begin as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd || cin >= ch {
                                    continue;
                                }
                                let xv = xs[((ni * ch + cin) * h + iy as usize) * wd + ix as usize] - zx;
                                let wv = ws[((o * cg + ci) * kh + ky) * kw + kx] - zwo;
                                acc += xv * wv;
                            }
                        }
                    }
                    out.push(requantize_linear(acc as f64 * s, zy));
                }
            }
        }
    }
    narrow(zy, out_shape, out)
}
