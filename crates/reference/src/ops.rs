//! Evaluation of one node on concrete tensors, in f32 (and int64 for shape arithmetic).

use ndarray::{ArrayD, Axis, Ix2, IxDyn, Zip};
use weft_core::op::{Activation, PadMode};
use weft_core::shape::{self, Shapes, normalize_axis};
use weft_core::{CoreError, DType, Node, Op, Result, Tensor};

use crate::conv::conv2d;
use crate::int;
use crate::pool::{PoolKind, global_pool, pool2d};

use weft_core::map_variant as map_tensor;

/// Largest tensor (in elements) a node may produce: 4 Gi elements.
pub const MAX_ELEMENTS: usize = 1 << 32;

/// Evaluates `node` on `inputs` (aligned with `node.inputs`, `None` for omitted ones).
/// Shapes are checked by shape inference first, so no input can make it panic.
pub fn eval_node(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let mut shapes = Shapes::default();
    for (name, t) in node.inputs.iter().zip(inputs) {
        if let Some(t) = t {
            shapes.insert(name, t);
        }
    }
    let inferred = shape::infer_node(node, &shapes)?;
    let out_shape = inferred.first().map(|(_, s)| s.clone()).unwrap_or_default();
    if weft_core::tensor::checked_numel(&out_shape)? > MAX_ELEMENTS {
        return Err(CoreError::node(
            node,
            format!("output shape {out_shape:?} is too large"),
        ));
    }
    let input = |i: usize| -> Result<&Tensor> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| CoreError::node(node, format!("input {i} is missing")))
    };
    let f32_in = |i: usize| -> Result<ArrayD<f32>> { Ok(input(i)?.to_f32()) };
    let err = |m: String| CoreError::node(node, m);
    // the first value of an optional scalar input (Clip's bounds, Pad's constant)
    let scalar_f32 = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| t.to_f32().iter().next().copied())
    };
    let scalar_i64 = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| t.to_i64().iter().next().copied())
    };
    let x = input(0)?;
    check_dtypes(node, inputs)?;
    let result = match &node.op {
        Op::Conv(c) => {
            let bias = inputs.get(2).copied().flatten().map(|b| b.to_f32());
            Tensor::F32(conv2d(&x.to_f32(), &f32_in(1)?, bias.as_ref(), c).map_err(err)?)
        }
        Op::BatchNormalization { epsilon } => {
            let x = x.to_f32();
            let (scale, bias, mean, var) = (f32_in(1)?, f32_in(2)?, f32_in(3)?, f32_in(4)?);
            let mut y = x.clone();
            for (ci, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
                let k = scale[[ci]] / (var[[ci]] + epsilon).sqrt();
                let b = bias[[ci]] - mean[[ci]] * k;
                plane.mapv_inplace(|v| v * k + b);
            }
            Tensor::F32(y)
        }
        Op::Relu if matches!(x.dtype(), DType::U8 | DType::U16 | DType::U32 | DType::U64) => x.clone(),
        Op::Relu if !x.dtype().is_float() => Tensor::I64(x.to_i64().mapv(|v| v.max(0))),
        Op::Relu => Tensor::F32(x.to_f32().mapv(|v| Activation::Relu.apply(v))),
        Op::Unary(u) => Tensor::F32(x.to_f32().mapv(|v| u.apply(v))),
        Op::Clip if x.dtype() == DType::U64 => {
            // uint64 values are held as their bits in i64: compare them unsigned
            let (lo, hi) = (
                scalar_i64(1).map_or(0, |v| v as u64),
                scalar_i64(2).map_or(u64::MAX, |v| v as u64),
            );
            Tensor::I64(x.to_i64().mapv(|v| (v as u64).max(lo).min(hi) as i64))
        }
        Op::Clip if !x.dtype().is_float() => {
            let (lo, hi) = (scalar_i64(1).unwrap_or(i64::MIN), scalar_i64(2).unwrap_or(i64::MAX));
            Tensor::I64(x.to_i64().mapv(|v| v.max(lo).min(hi)))
        }
        Op::Clip => {
            let (lo, hi) = (
                scalar_f32(1).unwrap_or(f32::NEG_INFINITY),
                scalar_f32(2).unwrap_or(f32::INFINITY),
            );
            Tensor::F32(x.to_f32().mapv(|v| v.max(lo).min(hi)))
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => binary(node, x, input(1)?)?,
        Op::MaxPool(p) => Tensor::F32(pool2d(&x.to_f32(), p, PoolKind::Max).map_err(err)?),
        Op::AveragePool(p) => Tensor::F32(pool2d(&x.to_f32(), p, PoolKind::Average).map_err(err)?),
        Op::GlobalAveragePool => Tensor::F32(global_pool(&x.to_f32(), PoolKind::Average)),
        Op::GlobalMaxPool => Tensor::F32(global_pool(&x.to_f32(), PoolKind::Max)),
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
            x.reshaped(&out_shape)?
        }
        Op::Transpose { perm } => {
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..x.shape().len()).rev().collect());
            map_tensor!(x, a => a.view().permuted_axes(perm.clone()).as_standard_layout().into_owned())
        }
        Op::Gemm(g) => {
            let a = to2(&x.to_f32())?;
            let b = to2(&f32_in(1)?)?;
            let a = if g.trans_a { a.t().to_owned() } else { a };
            let b = if g.trans_b { b.t().to_owned() } else { b };
            let mut y = a.dot(&b) * g.alpha;
            if let Some(c) = inputs.get(2).copied().flatten() {
                let c = c.to_f32();
                let c = c
                    .broadcast(IxDyn(y.shape()))
                    .ok_or_else(|| err("C does not broadcast".into()))?;
                Zip::from(&mut y)
                    .and(&c.into_dimensionality::<Ix2>().map_err(|e| err(e.to_string()))?)
                    .for_each(|y, &c| *y += g.beta * c);
            }
            Tensor::F32(y.into_dyn())
        }
        Op::MatMul => Tensor::F32(matmul(&x.to_f32(), &f32_in(1)?, &out_shape)?),
        Op::Softmax { axis, legacy } => {
            let x = x.to_f32();
            let rank = x.ndim();
            let a = normalize_axis(*axis, rank).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            let y = if *legacy {
                let rows: usize = x.shape()[..a].iter().product();
                let cols: usize = x.shape()[a..].iter().product();
                let mut m = x.into_shape_with_order((rows, cols)).map_err(|e| err(e.to_string()))?;
                m.rows_mut()
                    .into_iter()
                    .for_each(|mut r| softmax_lane(r.as_slice_mut().unwrap_or(&mut [])));
                m.into_shape_with_order(IxDyn(&out_shape))
                    .map_err(|e| err(e.to_string()))?
            } else {
                let mut y = x;
                for mut lane in y.lanes_mut(Axis(a)) {
                    let mut v: Vec<f32> = lane.iter().copied().collect();
                    softmax_lane(&mut v);
                    lane.iter_mut().zip(v).for_each(|(d, s)| *d = s);
                }
                y
            };
            Tensor::F32(y)
        }
        Op::Pad { mode } => {
            let axes = inputs.get(3).copied().flatten().map(Tensor::to_i64_vec);
            let pads =
                weft_core::op::full_pads(&input(1)?.to_i64_vec(), axes.as_deref(), x.shape().len()).map_err(err)?;
            if *mode != PadMode::Constant && x.is_empty() && !out_shape.contains(&0) {
                return Err(err(format!("{mode:?} padding of an empty tensor {:?}", x.shape())));
            }
            if x.dtype().is_float() {
                Tensor::F32(pad(&x.to_f32(), &pads, *mode, scalar_f32(2).unwrap_or(0.0), &out_shape))
            } else {
                Tensor::I64(pad(&x.to_i64(), &pads, *mode, scalar_i64(2).unwrap_or(0), &out_shape))
            }
        }
        Op::Concat { axis } => {
            let a = normalize_axis(*axis, x.shape().len()).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            let all: Vec<&Tensor> = (0..node.inputs.len()).map(input).collect::<Result<_>>()?;
            if all.iter().all(|t| !t.dtype().is_float()) {
                let arrays: Vec<ArrayD<i64>> = all.iter().map(|t| t.to_i64()).collect();
                let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
                Tensor::I64(ndarray::concatenate(Axis(a), &views).map_err(|e| err(e.to_string()))?)
            } else {
                let arrays: Vec<ArrayD<f32>> = all.iter().map(|t| t.to_f32()).collect();
                let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
                Tensor::F32(ndarray::concatenate(Axis(a), &views).map_err(|e| err(e.to_string()))?)
            }
        }
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => {
            let x = x.to_f32();
            let rank = x.ndim();
            let mut axes: Vec<usize> = match inputs.get(1).copied().flatten().map(|t| t.to_i64_vec()) {
                Some(a) if !a.is_empty() => a.iter().filter_map(|&v| normalize_axis(v, rank)).collect(),
                _ if *noop_with_empty_axes => vec![],
                _ => (0..rank).collect(),
            };
            axes.sort_unstable();
            let mut y = x;
            for &a in axes.iter().rev() {
                y = y
                    .mean_axis(Axis(a))
                    .ok_or_else(|| err("mean over an empty axis".into()))?;
                if *keepdims {
                    y.insert_axis_inplace(Axis(a));
                }
            }
            Tensor::F32(y)
        }
        Op::Shape { start, end } => {
            let r = weft_core::op::shape_range(x.shape().len(), *start, *end);
            Tensor::i64_vec(&x.shape()[r].iter().map(|&d| d as i64).collect::<Vec<_>>())
        }
        Op::Gather { axis } => {
            let a = normalize_axis(*axis, x.shape().len()).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            let dim = x.shape()[a] as i64;
            let idx: Vec<usize> = input(1)?
                .to_i64_vec()
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim } else { i };
                    if (0..dim).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(err(format!("index {i} out of range for axis of size {dim}")))
                    }
                })
                .collect::<Result<_>>()?;
            let picked = map_tensor!(x, a_ => a_.select(Axis(a), &idx));
            picked.reshaped(&out_shape)?
        }
        Op::Cast { to, saturate, round } => onnx_cast(x, *to, *saturate, *round),
        Op::Quantize { scale, zero_point } => int::quantize(x, *scale, *zero_point)?,
        Op::Dequantize { scale, zero_point } => int::dequantize(x, *scale, *zero_point)?,
        Op::QConv(q) => int::qconv(q, inputs, &out_shape)?,
        Op::QGemm(q) => int::qgemm(q, inputs, &out_shape)?,
        Op::MxConv(q) => crate::mx::mx_conv(node, q, inputs, &out_shape)?,
        Op::MxGemm(q) => crate::mx::mx_gemm(node, q, inputs, &out_shape)?,
        Op::QAdd(q) => int::qadd(q, x, input(1)?, &out_shape)?,
        Op::QConcat(q) => {
            let all: Vec<&Tensor> = (0..node.inputs.len()).map(input).collect::<Result<_>>()?;
            int::qconcat(q, &all)?
        }
        Op::QMaxPool(p) => int::qpool(x, p, None, &out_shape)?,
        Op::QAveragePool { pool, zero_point } => int::qpool(x, pool, Some(*zero_point), &out_shape)?,
        Op::QMean(q) => int::qmean(
            x,
            inputs.get(1).copied().flatten().map(Tensor::to_i64_vec),
            q,
            &out_shape,
        )?,
        Op::QuantizeLinear { axis } => int::quantize_linear(x, input(1)?, inputs.get(2).copied().flatten(), *axis)?,
        Op::DequantizeLinear { axis } => {
            let y = int::dequantize_linear(x, input(1)?, inputs.get(2).copied().flatten(), *axis)?;
            // the output has the scale's type
            match input(1)?.dtype() {
                dt @ (DType::F16 | DType::BF16) => y.cast(dt),
                _ => y,
            }
        }
        Op::QLinearConv(c) => int::qlinear_conv(c, inputs, &out_shape)?,
        Op::QLinearMatMul => int::qlinear_matmul(inputs, &out_shape)?,
        Op::QLinearAdd | Op::QLinearGemm { .. } | Op::QLinearGlobalAveragePool => {
            return Err(err(format!(
                "{} runs only after `weft compile` lowers the model",
                node.op.name()
            )));
        }
    };
    let result = keep_dtype(&node.op, x.dtype(), result);
    if result.shape() != out_shape.as_slice() {
        return Err(err(format!(
            "computed shape {:?} differs from inferred {:?}",
            result.shape(),
            out_shape
        )));
    }
    Ok(vec![result])
}

fn to2(a: &ArrayD<f32>) -> Result<ndarray::Array2<f32>> {
    a.clone()
        .into_dimensionality::<Ix2>()
        .map_err(|e| CoreError::Tensor(e.to_string()))
}

fn softmax_lane(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// Ops whose output has the dtype of their first input in ONNX (weft computes the float
/// ones in f32 and integer ones in i64, then narrows).
fn same_type(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::BatchNormalization { .. }
            | Op::Relu
            | Op::Unary(_)
            | Op::Clip
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Gemm(_)
            | Op::MatMul
            | Op::Softmax { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::ReduceMean { .. }
    )
}

/// Refuses integer tensors where weft would otherwise compute in float: only the ops with
/// exact integer semantics here (element-wise arithmetic with wrapping and truncating
/// division, Relu, Clip, Pad, Concat, 8-bit MaxPool, data movement) take them.
fn check_dtypes(node: &Node, inputs: &[Option<&Tensor>]) -> Result<()> {
    let Some(Some(x)) = inputs.first() else {
        return Ok(());
    };
    let dt = x.dtype();
    let refuse = |what: String| Err(CoreError::node(node, format!("{what} is not supported")));
    if dt.is_storage_only() && same_type(&node.op) {
        return refuse(format!("{} on {dt} tensors", node.op.name()));
    }
    if !dt.is_float() {
        let exact = match &node.op {
            Op::Relu | Op::Clip | Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pad { .. } | Op::Concat { .. } => true,
            Op::MaxPool(_) => matches!(dt, DType::I8 | DType::U8),
            op => !same_type(op),
        };
        if !exact {
            return refuse(format!("{} on {dt} tensors", node.op.name()));
        }
    }
    if matches!(node.op, Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Concat { .. }) {
        let n = if matches!(node.op, Op::Concat { .. }) {
            inputs.len()
        } else {
            2
        };
        for t in inputs.iter().take(n).flatten() {
            if t.dtype() != dt && !(t.dtype().is_float() && dt.is_float()) {
                return refuse(format!("{} of {dt} and {} operands", node.op.name(), t.dtype()));
            }
        }
    }
    Ok(())
}

/// Narrows a result computed in f32 or i64 back to the first input's dtype, for the ops
/// whose output type is their input's (integers wrap, as ONNX's do).
fn keep_dtype(op: &Op, dt: DType, result: Tensor) -> Tensor {
    if !same_type(op) || result.dtype() == dt {
        return result;
    }
    match (result, dt) {
        (Tensor::F32(a), DType::F16) => Tensor::F16(a.mapv(half::f16::from_f32)),
        (Tensor::I64(a), dt) => Tensor::wrap_i64(a, dt),
        (other, dt) => other.cast(dt),
    }
}

/// ONNX Cast: floats to integers truncate toward zero (saturating where out of range, which
/// ONNX leaves undefined; the 4- and 2-bit integers wrap, as ONNX's reference does),
/// integers to narrower integers wrap, to floats round to nearest even; to the 8- and 4-bit
/// floats as `saturate` says, to E8M0 as `round` says.
fn onnx_cast(x: &Tensor, to: DType, saturate: bool, round: weft_core::minifloat::RoundMode) -> Tensor {
    let from = x.dtype();
    if from == to {
        return x.clone();
    }
    if to.is_any_float() {
        return if from.is_any_float() {
            x.cast_float(to, saturate, round)
        } else {
            Tensor::F64(x.to_f64()).cast_float(to, saturate, round)
        };
    }
    if to == DType::Bool {
        return Tensor::Bool(x.to_f64().mapv(|v| v != 0.0));
    }
    if from.is_any_float() {
        let f = x.to_f64();
        return match to {
            DType::I64 => Tensor::I64(f.mapv(|v| v as i64)),
            DType::I32 => Tensor::I32(f.mapv(|v| v as i32)),
            DType::I16 => Tensor::I16(f.mapv(|v| v as i16)),
            DType::I8 => Tensor::I8(f.mapv(|v| v as i8)),
            DType::U64 => Tensor::U64(f.mapv(|v| v as u64)),
            DType::U32 => Tensor::U32(f.mapv(|v| v as u32)),
            DType::U16 => Tensor::U16(f.mapv(|v| v as u16)),
            DType::U8 => Tensor::U8(f.mapv(|v| v as u8)),
            _ => Tensor::wrap_i64(f.mapv(|v| v as i64), to),
        };
    }
    Tensor::wrap_i64(x.to_i64(), to)
}

fn binary(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let err = |m: String| CoreError::node(node, m);
    if !a.dtype().is_float() && !b.dtype().is_float() {
        let unsigned64 = a.dtype() == DType::U64;
        let (a, b) = (a.to_i64(), b.to_i64());
        let shape = shape::broadcast(a.shape(), b.shape())
            .ok_or_else(|| err(format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape())))?;
        let (av, bv) = (
            a.broadcast(IxDyn(&shape))
                .ok_or_else(|| err("operand does not broadcast".into()))?,
            b.broadcast(IxDyn(&shape))
                .ok_or_else(|| err("operand does not broadcast".into()))?,
        );
        if matches!(node.op, Op::Div) && bv.iter().any(|&v| v == 0) {
            return Err(err("integer division by zero".into()));
        }
        let f: fn(i64, i64) -> i64 = match node.op {
            Op::Add => i64::wrapping_add,
            Op::Sub => i64::wrapping_sub,
            Op::Mul => i64::wrapping_mul,
            // uint64 values are held as their bits
            _ if unsigned64 => |x, y| (x as u64 / y as u64) as i64,
            _ => i64::wrapping_div,
        };
        return Ok(Tensor::I64(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y))));
    }
    let (a, b) = (a.to_f32(), b.to_f32());
    Ok(Tensor::F32(match node.op {
        Op::Add => &a + &b,
        Op::Sub => &a - &b,
        Op::Mul => &a * &b,
        _ => &a / &b,
    }))
}

fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>, out_shape: &[usize]) -> Result<ArrayD<f32>> {
    let a2 = if a.ndim() == 1 {
        a.clone().insert_axis(Axis(0))
    } else {
        a.clone()
    };
    let b2 = if b.ndim() == 1 {
        b.clone().insert_axis(Axis(1))
    } else {
        b.clone()
    };
    let (m, k) = (a2.shape()[a2.ndim() - 2], a2.shape()[a2.ndim() - 1]);
    let n = b2.shape()[b2.ndim() - 1];
    let batch = shape::broadcast(&a2.shape()[..a2.ndim() - 2], &b2.shape()[..b2.ndim() - 2])
        .ok_or_else(|| CoreError::Tensor("MatMul batch dims do not broadcast".into()))?;
    let mut full_a = batch.clone();
    full_a.extend([m, k]);
    let mut full_b = batch.clone();
    full_b.extend([k, n]);
    let bad = || CoreError::Tensor("MatMul operands do not broadcast".into());
    let av = a2
        .broadcast(IxDyn(&full_a))
        .ok_or_else(bad)?
        .as_standard_layout()
        .into_owned();
    let bv = b2
        .broadcast(IxDyn(&full_b))
        .ok_or_else(bad)?
        .as_standard_layout()
        .into_owned();
    let nb: usize = batch.iter().product();
    let a3 = av
        .into_shape_with_order((nb, m, k))
        .map_err(|e| CoreError::Tensor(e.to_string()))?;
    let b3 = bv
        .into_shape_with_order((nb, k, n))
        .map_err(|e| CoreError::Tensor(e.to_string()))?;
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        out.extend(
            a3.index_axis(Axis(0), i)
                .dot(&b3.index_axis(Axis(0), i))
                .iter()
                .copied(),
        );
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| CoreError::Tensor(e.to_string()))
}

fn pad<T: Copy>(x: &ArrayD<T>, pads: &[i64], mode: PadMode, value: T, out_shape: &[usize]) -> ArrayD<T> {
    let rank = x.ndim();
    let in_shape = x.shape().to_vec();
    if mode == PadMode::Constant && pads.iter().all(|&p| p >= 0) {
        // the common case (zero padding): fill, then copy the input into the interior
        let mut out = ArrayD::from_elem(IxDyn(out_shape), value);
        out.slice_each_axis_mut(|ax| {
            let begin = pads[ax.axis.index()] as usize;
            ndarray::Slice::from(begin..begin + in_shape[ax.axis.index()])
        })
        .assign(x);
        return out;
    }
    let mut src = vec![0usize; rank];
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        for d in 0..rank {
            let i = idx[d] as i64 - pads[d];
            let n = in_shape[d] as i64;
            let j = if (0..n).contains(&i) {
                i
            } else {
                match mode {
                    PadMode::Constant => return value,
                    PadMode::Edge => i.clamp(0, n - 1),
                    PadMode::Wrap => i.rem_euclid(n),
                    PadMode::Reflect => {
                        if n == 1 {
                            0
                        } else {
                            let period = 2 * (n - 1);
                            let r = i.rem_euclid(period);
                            if r < n { r } else { period - r }
                        }
                    }
                }
            };
            src[d] = j as usize;
        }
        x[IxDyn(&src)]
    })
}
