//! Shape inference, window geometry for convolution and pooling, and broadcasting.
//!
//! Inference runs over concrete input shapes and tracks the values of small integer
//! tensors (Shape, Gather, Concat chains as exported by PyTorch and TensorFlow) so that
//! Reshape targets computed inside the graph resolve.

use std::collections::HashMap;

use crate::op::{Padding, Pool, QMean};
use crate::{CoreError, DType, Graph, Node, Op, Result, Tensor};

/// Begin pad, end pad and output size of one spatial axis of a sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub pad_begin: usize,
    pub pad_end: usize,
    pub out: usize,
}

/// Geometry of one spatial axis (`axis` 0 = height, 1 = width).
pub fn window(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: &Padding,
    ceil_mode: bool,
    axis: usize,
) -> std::result::Result<Window, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel {kernel}, stride {stride} and dilation {dilation} must be positive"
        ));
    }
    let span = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| "kernel span overflows".to_string())?;
    let same = |upper: bool| {
        let out = input.div_ceil(stride);
        let needed = (out.max(1) - 1)
            .saturating_mul(stride)
            .saturating_add(span)
            .saturating_sub(input);
        let small = needed / 2;
        let (b, e) = if upper {
            (small, needed - small)
        } else {
            (needed - small, small)
        };
        Window {
            pad_begin: b,
            pad_end: e,
            out,
        }
    };
    let w = match padding {
        Padding::SameUpper => same(true),
        Padding::SameLower => same(false),
        Padding::Valid | Padding::Explicit(_) => {
            let (b, e) = match padding {
                Padding::Explicit(p) => (p[axis], p[axis + 2]),
                _ => (0, 0),
            };
            let padded = input.saturating_add(b).saturating_add(e);
            if padded < span {
                return Err(format!(
                    "window of span {span} does not fit input of size {input} with pads {b}+{e}"
                ));
            }
            let room = padded - span;
            let mut out = if ceil_mode {
                room.div_ceil(stride)
            } else {
                room / stride
            } + 1;
            // A window that would start entirely in the end padding is dropped.
            if ceil_mode && (out - 1).saturating_mul(stride) >= input.saturating_add(b) {
                out -= 1;
            }
            Window {
                pad_begin: b,
                pad_end: e,
                out,
            }
        }
    };
    if w.out == 0 {
        return Err(format!("output size is zero for input {input}"));
    }
    Ok(w)
}

/// Windows for height and width of a pooling op on an `[N,C,H,W]` input.
pub fn pool_windows(pool: &Pool, h: usize, w: usize) -> std::result::Result<[Window; 2], String> {
    Ok([
        window(
            h,
            pool.kernel_shape[0],
            pool.strides[0],
            pool.dilations[0],
            &pool.padding,
            pool.ceil_mode,
            0,
        )?,
        window(
            w,
            pool.kernel_shape[1],
            pool.strides[1],
            pool.dilations[1],
            &pool.padding,
            pool.ceil_mode,
            1,
        )?,
    ])
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Resolves a possibly negative axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Resolves the target shape of a Reshape.
pub fn reshape_target(input: &[usize], target: &[i64], allowzero: bool) -> std::result::Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("dim {i} is 0 but input has rank {}", input.len()))?,
            ),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(format!("invalid target shape {target:?}")),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("target shape overflows")?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {input:?} ({total} elements) to {target:?}"));
    }
    Ok(out)
}

/// Dtype and shape of every value, plus the values of small constant integer tensors.
#[derive(Debug, Default)]
pub struct Shapes {
    pub values: HashMap<String, (DType, Vec<usize>)>,
    constants: HashMap<String, Tensor>,
}

impl Shapes {
    /// Records a value's dtype and shape, and its contents when it is a small integer
    /// tensor that later shape computations may need.
    pub fn insert(&mut self, name: &str, t: &Tensor) {
        self.values.insert(name.to_string(), (t.dtype(), t.shape().to_vec()));
        if matches!(t.dtype(), DType::I64 | DType::I32) && t.len() <= 64 {
            self.constants.insert(name.to_string(), t.clone());
        }
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.values.get(name).map(|(_, s)| s.as_slice())
    }
}

/// Infers every value's dtype and shape from concrete input shapes.
/// `graph` must be sorted. Inputs not in `input_shapes` use their declared shape with
/// symbolic dims set to 1.
pub fn infer(graph: &Graph, input_shapes: &HashMap<String, Vec<usize>>) -> Result<Shapes> {
    infer_graph(graph, input_shapes, false)
}

/// Like [`infer`] with declared input shapes, for checking a graph as imported: a node
/// whose shape depends on values only known while running (Reshape's shape, Pad's pads,
/// axes computed from inputs) and every node after it are left out instead of failing;
/// executors that see the values (the reference) infer those nodes when they run.
pub fn infer_known(graph: &Graph) -> Result<Shapes> {
    infer_graph(graph, &HashMap::new(), true)
}

fn infer_graph(graph: &Graph, input_shapes: &HashMap<String, Vec<usize>>, skip_dynamic: bool) -> Result<Shapes> {
    let mut s = Shapes::default();
    for input in &graph.inputs {
        let shape = input_shapes
            .get(&input.name)
            .cloned()
            .unwrap_or_else(|| input.concrete_shape(1));
        s.values.insert(input.name.clone(), (input.dtype, shape));
    }
    for (name, t) in &graph.initializers {
        s.insert(name, t);
    }
    let mut unknown: std::collections::HashSet<&str> = Default::default();
    for node in &graph.nodes {
        if node.inputs.iter().any(|i| unknown.contains(i.as_str())) {
            unknown.extend(node.outputs.iter().map(String::as_str));
            continue;
        }
        let outs = match infer_node(node, &s) {
            Ok(o) => o,
            Err(CoreError::Dynamic { .. }) if skip_dynamic => {
                unknown.extend(node.outputs.iter().map(String::as_str));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (name, v) in node.outputs.iter().zip(outs) {
            s.values.insert(name.clone(), v);
        }
        if let Some(c) = fold_small(node, &s)
            && let Some(out) = node.outputs.first()
        {
            s.constants.insert(out.clone(), c);
        }
    }
    Ok(s)
}

fn in_shape<'a>(node: &Node, s: &'a Shapes, idx: usize) -> Result<&'a (DType, Vec<usize>)> {
    let name = node
        .input(idx)
        .ok_or_else(|| CoreError::node(node, format!("input {idx} is missing")))?;
    s.values
        .get(name)
        .ok_or_else(|| CoreError::UndefinedValue(name.to_string()))
}

fn const_ints(node: &Node, s: &Shapes, idx: usize, what: &str) -> Result<Option<Vec<i64>>> {
    match node.input(idx) {
        None => Ok(None),
        Some(name) => s
            .constants
            .get(name)
            .map(|t| Some(t.to_i64_vec()))
            .ok_or_else(|| CoreError::Dynamic {
                node: node.name.clone(),
                op: node.op.name().into(),
                what: what.into(),
                name: name.into(),
            }),
    }
}

fn mismatch(node: &Node, expected: impl Into<String>, got: impl std::fmt::Debug) -> CoreError {
    CoreError::ShapeMismatch {
        node: node.name.clone(),
        op: node.op.name().into(),
        expected: expected.into(),
        got: format!("{got:?}"),
    }
}

fn axes_set(node: &Node, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for &a in axes {
        let a = normalize_axis(a, rank)
            .ok_or_else(|| CoreError::node(node, format!("axis {a} out of range for rank {rank}")))?;
        if out.contains(&a) {
            return Err(CoreError::node(node, format!("axis {a} repeated")));
        }
        out.push(a);
    }
    Ok(out)
}

/// Dtypes and shapes of one node's outputs.
pub fn infer_node(node: &Node, s: &Shapes) -> Result<Vec<(DType, Vec<usize>)>> {
    let (dt, x) = in_shape(node, s, 0)?.clone();
    let err = |m: String| CoreError::node(node, m);
    let one = |shape: Vec<usize>| Ok(vec![(dt, shape)]);
    match &node.op {
        Op::Conv(c) => one(conv_shape(node, s, &x, c, 1, 2)?),
        Op::QConv(q) => {
            expect_dtype(node, s, 0, DType::U8)?;
            expect_dtype(node, s, 1, DType::I8)?;
            let out = conv_shape(node, s, &x, &q.conv, 1, 2)?;
            for i in [3, 4] {
                let (_, p) = in_shape(node, s, i)?;
                if p != &vec![out[1]] {
                    return Err(mismatch(
                        node,
                        format!("requantization parameter {i} of shape [{}]", out[1]),
                        p,
                    ));
                }
            }
            if q.residual_zero_point.is_some() {
                let (_, r) = in_shape(node, s, 5)?;
                if r != &out {
                    return Err(mismatch(node, format!("residual of shape {out:?}"), r));
                }
            }
            Ok(vec![(DType::U8, out)])
        }
        Op::MxConv(m) => {
            expect_dtype(node, s, 1, DType::U8)?;
            expect_dtype(node, s, 2, DType::U8)?;
            let out = conv_shape(node, s, &x, &m.conv, 1, 3)?;
            let (_, w) = in_shape(node, s, 1)?;
            let want = vec![w[0], crate::mx::blocks_along(w[1]), w[2], w[3]];
            let (_, sc) = in_shape(node, s, 2)?;
            if sc != &want {
                return Err(mismatch(node, format!("weight scales of shape {want:?}"), sc));
            }
            Ok(vec![(DType::F32, out)])
        }
        Op::MxGemm(_) => {
            expect_dtype(node, s, 1, DType::U8)?;
            expect_dtype(node, s, 2, DType::U8)?;
            let (_, w) = in_shape(node, s, 1)?;
            if x.len() != 2 || w.len() != 2 || x[1] != w[1] {
                return Err(mismatch(node, "x [N,K] and w [M,K]", (&x, w)));
            }
            let want = vec![w[0], crate::mx::blocks_along(w[1])];
            let (_, sc) = in_shape(node, s, 2)?;
            if sc != &want {
                return Err(mismatch(node, format!("weight scales of shape {want:?}"), sc));
            }
            if node.input(3).is_some() {
                let (_, b) = in_shape(node, s, 3)?;
                if b != &vec![w[0]] {
                    return Err(mismatch(node, format!("bias of shape [{}]", w[0]), b));
                }
            }
            Ok(vec![(DType::F32, vec![x[0], w[0]])])
        }
        Op::QGemm(_) => {
            expect_dtype(node, s, 0, DType::U8)?;
            let (_, w) = in_shape(node, s, 1)?;
            if x.len() != 2 || w.len() != 2 || x[1] != w[1] {
                return Err(mismatch(node, "x [N,K] and w [M,K]", (&x, w)));
            }
            Ok(vec![(DType::U8, vec![x[0], w[0]])])
        }
        Op::QAdd(_) => {
            expect_dtype(node, s, 0, DType::U8)?;
            expect_dtype(node, s, 1, DType::U8)?;
            let (_, y) = in_shape(node, s, 1)?;
            let out = broadcast(&x, y).ok_or_else(|| mismatch(node, format!("shape broadcastable with {x:?}"), y))?;
            Ok(vec![(DType::U8, out)])
        }
        Op::QMaxPool(p) | Op::QAveragePool { pool: p, .. } => {
            expect_dtype(node, s, 0, DType::U8)?;
            if x.len() != 4 {
                return Err(mismatch(node, "4-D input", &x));
            }
            let [h, w] = pool_windows(p, x[2], x[3]).map_err(err)?;
            Ok(vec![(DType::U8, vec![x[0], x[1], h.out, w.out])])
        }
        Op::QMean(QMean { keepdims, .. }) => {
            expect_dtype(node, s, 0, DType::U8)?;
            let axes = match const_ints(node, s, 1, "axes")? {
                Some(a) => axes_set(node, &a, x.len())?,
                None => (2..x.len()).collect(),
            };
            Ok(vec![(DType::U8, reduce_shape(&x, &axes, *keepdims))])
        }
        Op::Quantize { .. } => Ok(vec![(DType::U8, x)]),
        Op::QuantizeLinear { .. } => {
            let dt = node
                .input(2)
                .and_then(|z| s.values.get(z))
                .map_or(DType::U8, |(d, _)| *d);
            Ok(vec![(dt, x)])
        }
        Op::DequantizeLinear { .. } => {
            // the output has the scale's float type
            let dt = node
                .input(1)
                .and_then(|z| s.values.get(z))
                .map_or(DType::F32, |(d, _)| *d);
            Ok(vec![(
                if matches!(dt, DType::F16 | DType::BF16) {
                    dt
                } else {
                    DType::F32
                },
                x,
            )])
        }
        Op::QLinearConv(c) => {
            let out = conv_shape(node, s, &x, c, 3, 8)?;
            let y_dt = node
                .input(7)
                .and_then(|z| s.values.get(z))
                .map_or(DType::U8, |(d, _)| *d);
            Ok(vec![(y_dt, out)])
        }
        Op::QLinearMatMul | Op::QLinearAdd => {
            let (_, y) = in_shape(node, s, 3)?;
            let out = if node.op == Op::QLinearAdd {
                broadcast(&x, y)
            } else {
                matmul_shape(&x, y)
            }
            .ok_or_else(|| mismatch(node, format!("shape compatible with {x:?}"), y))?;
            let y_dt = node
                .input(7)
                .and_then(|z| s.values.get(z))
                .map_or(DType::U8, |(d, _)| *d);
            Ok(vec![(y_dt, out)])
        }
        Op::QLinearGemm { trans_b, .. } => {
            let (_, b) = in_shape(node, s, 3)?;
            if x.len() != 2 || b.len() != 2 {
                return Err(mismatch(node, "2-D A and B", (&x, b)));
            }
            let (k2, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if x[1] != k2 {
                return Err(mismatch(node, format!("B with inner dimension {}", x[1]), b));
            }
            let y_dt = node
                .input(8)
                .and_then(|z| s.values.get(z))
                .map_or(DType::U8, |(d, _)| *d);
            Ok(vec![(y_dt, vec![x[0], n])])
        }
        Op::QLinearGlobalAveragePool => {
            if x.len() < 3 {
                return Err(mismatch(node, "input of rank >= 3", &x));
            }
            let mut out = x.clone();
            out[2..].iter_mut().for_each(|d| *d = 1);
            Ok(vec![(dt, out)])
        }
        Op::Dequantize { .. } => {
            expect_dtype(node, s, 0, DType::U8)?;
            Ok(vec![(DType::F32, x)])
        }
        Op::BatchNormalization { .. } => {
            if x.len() < 2 {
                return Err(mismatch(node, "input of rank >= 2", &x));
            }
            for i in 1..5 {
                let (_, p) = in_shape(node, s, i)?;
                if p != &vec![x[1]] {
                    return Err(mismatch(node, format!("parameter {i} of shape [{}]", x[1]), p));
                }
            }
            one(x)
        }
        Op::Relu | Op::Clip | Op::Identity | Op::Unary(_) => one(x),
        Op::Softmax { axis, .. } => {
            normalize_axis(*axis, x.len()).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            one(x)
        }
        Op::Cast { to, .. } => Ok(vec![(*to, x)]),
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (_, y) = in_shape(node, s, 1)?;
            let out = broadcast(&x, y).ok_or_else(|| mismatch(node, format!("shape broadcastable with {x:?}"), y))?;
            one(out)
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            if x.len() != 4 {
                return Err(mismatch(node, "4-D input", &x));
            }
            if matches!(node.op, Op::AveragePool(_)) && p.dilations != [1, 1] {
                return Err(err("dilated AveragePool is not supported".into()));
            }
            let [h, w] = pool_windows(p, x[2], x[3]).map_err(err)?;
            one(vec![x[0], x[1], h.out, w.out])
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            if x.len() < 3 {
                return Err(mismatch(node, "input of rank >= 3", &x));
            }
            let mut out = x.clone();
            out[2..].iter_mut().for_each(|d| *d = 1);
            one(out)
        }
        Op::Flatten { axis } => {
            let a = if *axis == x.len() as i64 {
                x.len()
            } else {
                normalize_axis(*axis, x.len()).ok_or_else(|| err(format!("axis {axis} out of range")))?
            };
            one(vec![x[..a].iter().product(), x[a..].iter().product()])
        }
        Op::Reshape { allowzero } => {
            let target =
                const_ints(node, s, 1, "the target shape")?.ok_or_else(|| err("missing shape input".into()))?;
            one(reshape_target(&x, &target, *allowzero).map_err(err)?)
        }
        Op::Transpose { perm } => {
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..x.len()).rev().collect());
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.len()).collect::<Vec<_>>() {
                return Err(mismatch(node, format!("permutation of rank {}", x.len()), &perm));
            }
            one(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Squeeze => {
            let axes = match const_ints(node, s, 1, "axes")? {
                Some(a) => axes_set(node, &a, x.len())?,
                None => (0..x.len()).filter(|&i| x[i] == 1).collect(),
            };
            if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
                return Err(mismatch(node, format!("size 1 at axis {a}"), &x));
            }
            one(x
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
        Op::Unsqueeze => {
            let axes = const_ints(node, s, 1, "axes")?.ok_or_else(|| err("missing axes input".into()))?;
            let rank = x.len() + axes.len();
            let axes = axes_set(node, &axes, rank)?;
            let mut it = x.iter();
            one((0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        1
                    } else {
                        it.next().copied().unwrap_or(1)
                    }
                })
                .collect())
        }
        Op::Gemm(g) => {
            let (_, b) = in_shape(node, s, 1)?;
            if x.len() != 2 || b.len() != 2 {
                return Err(mismatch(node, "2-D A and B", (&x, b)));
            }
            let (m, k) = if g.trans_a { (x[1], x[0]) } else { (x[0], x[1]) };
            let (k2, n) = if g.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(mismatch(node, format!("B with inner dimension {k}"), b));
            }
            if node.input(2).is_some() {
                let (_, c) = in_shape(node, s, 2)?;
                if broadcast(&[m, n], c).as_deref() != Some(&[m, n][..]) {
                    return Err(mismatch(node, format!("C broadcastable to [{m}, {n}]"), c));
                }
            }
            one(vec![m, n])
        }
        Op::MatMul => {
            let (_, b) = in_shape(node, s, 1)?;
            one(matmul_shape(&x, b)
                .ok_or_else(|| mismatch(node, format!("shape compatible with {x:?} for MatMul"), b))?)
        }
        Op::Pad { .. } => {
            let pads = const_ints(node, s, 1, "pads")?.ok_or_else(|| err("missing pads input".into()))?;
            let axes = const_ints(node, s, 3, "axes")?;
            let pads = crate::op::full_pads(&pads, axes.as_deref(), x.len()).map_err(err)?;
            let r = x.len();
            let out: Option<Vec<usize>> = (0..r)
                .map(|i| usize::try_from((x[i] as i64).saturating_add(pads[i]).saturating_add(pads[i + r])).ok())
                .collect();
            one(out.ok_or_else(|| err(format!("pads {pads:?} remove more than the input has")))?)
        }
        Op::Concat { axis } | Op::QConcat(crate::op::QConcat { axis, .. }) => {
            let a = normalize_axis(*axis, x.len()).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            let mut out = x.clone();
            for i in 1..node.inputs.len() {
                let (_, y) = in_shape(node, s, i)?;
                if y.len() != x.len() || (0..x.len()).any(|d| d != a && y[d] != x[d]) {
                    return Err(mismatch(node, format!("shape matching {x:?} except axis {a}"), y));
                }
                out[a] += y[a];
            }
            one(out)
        }
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = match const_ints(node, s, 1, "axes")? {
                Some(a) if !a.is_empty() => axes_set(node, &a, x.len())?,
                _ if *noop_with_empty_axes => vec![],
                _ => (0..x.len()).collect(),
            };
            one(reduce_shape(&x, &axes, *keepdims))
        }
        Op::Shape { start, end } => Ok(vec![(
            DType::I64,
            vec![crate::op::shape_range(x.len(), *start, *end).len()],
        )]),
        Op::Gather { axis } => {
            let (_, idx) = in_shape(node, s, 1)?;
            let a = normalize_axis(*axis, x.len()).ok_or_else(|| err(format!("axis {axis} out of range")))?;
            let mut out = x[..a].to_vec();
            out.extend_from_slice(idx);
            out.extend_from_slice(&x[a + 1..]);
            one(out)
        }
    }
}

fn reduce_shape(x: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    if keepdims {
        x.iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect()
    } else {
        x.iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    }
}

fn expect_dtype(node: &Node, s: &Shapes, idx: usize, want: DType) -> Result<()> {
    let (dt, _) = in_shape(node, s, idx)?;
    if *dt != want {
        return Err(CoreError::node(node, format!("input {idx} must be {want}, is {dt}")));
    }
    Ok(())
}

/// Output shape of a 2-D convolution, checking weight, group and bias shapes.
fn conv_shape(
    node: &Node,
    s: &Shapes,
    x: &[usize],
    c: &crate::op::Conv,
    w_idx: usize,
    b_idx: usize,
) -> Result<Vec<usize>> {
    let (_, w) = in_shape(node, s, w_idx)?;
    if x.len() != 4 || w.len() != 4 {
        return Err(mismatch(
            node,
            "4-D input and weight (only 2-D convolution is supported)",
            (x, w),
        ));
    }
    if let Some(k) = c.kernel_shape
        && k != [w[2], w[3]]
    {
        return Err(mismatch(node, format!("weight kernel {k:?}"), &w[2..]));
    }
    if c.group == 0 || x[1] != w[1] * c.group || w[0] % c.group != 0 {
        return Err(mismatch(
            node,
            format!("input channels = {} x group {}", w[1], c.group),
            x,
        ));
    }
    if node.input(b_idx).is_some() {
        let (_, b) = in_shape(node, s, b_idx)?;
        if b != &vec![w[0]] {
            return Err(mismatch(node, format!("bias of shape [{}]", w[0]), b));
        }
    }
    let err = |m: String| CoreError::node(node, m);
    let oh = window(x[2], w[2], c.strides[0], c.dilations[0], &c.padding, false, 0).map_err(err)?;
    let ow = window(x[3], w[3], c.strides[1], c.dilations[1], &c.padding, false, 1).map_err(err)?;
    Ok(vec![x[0], w[0], oh.out, ow.out])
}

/// Output shape of a numpy-style matrix product.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2 = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2 = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

/// Evaluates integer shape arithmetic on known constants.
fn fold_small(node: &Node, s: &Shapes) -> Option<Tensor> {
    let c = |i: usize| node.input(i).and_then(|n| s.constants.get(n));
    match &node.op {
        Op::Shape { start, end } => {
            let shape = s.shape(node.input(0)?)?;
            let r = crate::op::shape_range(shape.len(), *start, *end);
            Some(Tensor::i64_vec(&shape[r].iter().map(|&d| d as i64).collect::<Vec<_>>()))
        }
        Op::Identity
        | Op::Cast {
            to: DType::I64 | DType::I32,
            ..
        } => c(0).cloned(),
        Op::Gather { axis: 0 } => {
            let data = c(0)?.to_i64_vec();
            let idx = c(1)?;
            let picked: Option<Vec<i64>> = idx
                .to_i64_vec()
                .iter()
                .map(|&i| {
                    usize::try_from(if i < 0 { i + data.len() as i64 } else { i })
                        .ok()
                        .and_then(|i| data.get(i).copied())
                })
                .collect();
            let picked = picked?;
            Tensor::from_i64(idx.shape(), picked).ok()
        }
        Op::Concat { .. } => {
            let mut all = Vec::new();
            for i in 0..node.inputs.len() {
                all.extend(c(i)?.to_i64_vec());
            }
            Some(Tensor::i64_vec(&all))
        }
        Op::Unsqueeze | Op::Squeeze | Op::Reshape { .. } | Op::Flatten { .. } => {
            let v = c(0)?;
            let shape = s.shape(node.outputs.first()?)?;
            v.reshaped(shape).ok()
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (c(0)?.to_i64_vec(), c(1)?.to_i64_vec());
            let shape = s.shape(node.outputs.first()?)?;
            let n = a.len().max(b.len());
            if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
                return None;
            }
            let get = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let out: Option<Vec<i64>> = (0..n)
                .map(|i| {
                    let (x, y) = (get(&a, i), get(&b, i));
                    match node.op {
                        Op::Add => x.checked_add(y),
                        Op::Sub => x.checked_sub(y),
                        Op::Mul => x.checked_mul(y),
                        _ => x.checked_div(y),
                    }
                })
                .collect();
            Tensor::from_i64(shape, out?).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_upper_and_lower_split_odd_padding() {
        let up = window(5, 2, 1, 1, &Padding::SameUpper, false, 0).unwrap();
        assert_eq!((up.pad_begin, up.pad_end, up.out), (0, 1, 5));
        let lo = window(5, 2, 1, 1, &Padding::SameLower, false, 0).unwrap();
        assert_eq!((lo.pad_begin, lo.pad_end, lo.out), (1, 0, 5));
    }

    #[test]
    fn ceil_mode_drops_windows_starting_in_padding() {
        // 6 wide, kernel 3, stride 2, no pad: floor gives 2, ceil gives 3.
        assert_eq!(window(6, 3, 2, 1, &Padding::ZERO, true, 0).unwrap().out, 3);
        assert_eq!(window(6, 3, 2, 1, &Padding::ZERO, false, 0).unwrap().out, 2);
        // With end padding only, the last window would start in the padding.
        assert_eq!(
            window(5, 2, 2, 1, &Padding::Explicit([0, 0, 1, 0]), true, 0)
                .unwrap()
                .out,
            3
        );
    }

    #[test]
    fn too_small_input_is_an_error() {
        assert!(window(2, 3, 1, 1, &Padding::ZERO, false, 0).is_err());
        assert!(window(2, 3, 0, 1, &Padding::ZERO, false, 0).is_err());
    }

    #[test]
    fn reshape_targets() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert!(reshape_target(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[2, 3], &[4]), None);
        assert_eq!(matmul_shape(&[5, 2, 3], &[3, 4]), Some(vec![5, 2, 4]));
        assert_eq!(matmul_shape(&[3], &[3, 4]), Some(vec![4]));
    }
}
