//! Graph passes: constant folding, BatchNorm folded into Conv, activation fusion marks,
//! explicit zero padding folded into the convolution or pooling after it, identity and
//! dead-node removal.

use std::collections::HashSet;

use ndarray::{Axis, IxDyn};

use crate::op::Activation;
use crate::{Graph, Node, Op, Result, Tensor};

/// Evaluates one node on constant inputs; provided by an executor.
/// Inputs are aligned with `node.inputs`; omitted optional inputs are `None`.
pub type Evaluate<'a> = &'a dyn Fn(&Node, &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

/// Counts of what each pass changed, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub folded_constants: usize,
    pub folded_batchnorms: usize,
    pub depthwise_batchnorms: usize,
    pub fused_activations: usize,
    pub folded_pads: usize,
    pub chained_concats: usize,
    pub removed_nodes: usize,
}

/// Runs every pass in the standard order. `graph` must be sorted.
pub fn optimize(graph: &mut Graph, eval: Evaluate) -> Result<PassReport> {
    let mut report = PassReport {
        folded_constants: fold_constants(graph, eval)?,
        ..Default::default()
    };
    report.removed_nodes += remove_identities(graph);
    report.folded_batchnorms = fold_batchnorm(graph);
    report.depthwise_batchnorms = batchnorm_as_depthwise(graph);
    report.fused_activations = fuse_activations(graph);
    report.folded_pads = fold_pads(graph);
    report.chained_concats = chain_concats(graph)?;
    report.removed_nodes += remove_dead(graph);
    Ok(report)
}

/// Replaces nodes whose inputs are all initializers by their computed outputs.
pub fn fold_constants(graph: &mut Graph, eval: Evaluate) -> Result<usize> {
    let outputs: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut folded = 0;
    let mut kept = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        let all_const = !node.inputs.is_empty()
            && node
                .inputs
                .iter()
                .all(|i| i.is_empty() || graph.initializers.contains_key(i))
            && !node.outputs.iter().any(|o| outputs.contains(o));
        if all_const {
            let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|i| graph.initializers.get(i)).collect();
            let results = eval(&node, &ins)?;
            for (name, t) in node.outputs.iter().zip(results) {
                graph.initializers.insert(name.clone(), t);
            }
            folded += 1;
        } else {
            kept.push(node);
        }
    }
    graph.nodes = kept;
    Ok(folded)
}

/// Renames uses of Identity outputs to their inputs and drops the Identity nodes
/// (except where the output is a graph output).
pub fn remove_identities(graph: &mut Graph) -> usize {
    let outputs: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut removed = 0;
    let mut idx = 0;
    while idx < graph.nodes.len() {
        let node = &graph.nodes[idx];
        if node.op == Op::Identity && !outputs.contains(&node.outputs[0]) && node.input(0).is_some() {
            let (from, to) = (node.outputs[0].clone(), node.inputs[0].clone());
            graph.nodes.remove(idx);
            rename_uses(graph, &from, &to);
            removed += 1;
        } else {
            idx += 1;
        }
    }
    removed
}

fn rename_uses(graph: &mut Graph, from: &str, to: &str) {
    for n in &mut graph.nodes {
        for i in &mut n.inputs {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// Folds `BatchNormalization(Conv(x))` into the convolution's weights and bias when the
/// convolution's output has no other use and all parameters are constant.
pub fn fold_batchnorm(graph: &mut Graph) -> usize {
    let mut folded = 0;
    loop {
        let uses = graph.use_counts();
        let producers = graph.producers();
        let candidate = graph.nodes.iter().enumerate().find_map(|(bn_idx, bn)| {
            let Op::BatchNormalization { epsilon } = bn.op else {
                return None;
            };
            let x = bn.input(0)?;
            let &conv_idx = producers.get(x)?;
            let conv = &graph.nodes[conv_idx];
            let Op::Conv(c) = &conv.op else { return None };
            if c.activation.is_some() || uses.get(x).copied() != Some(1) || bn.outputs.len() != 1 {
                return None;
            }
            let params: Option<Vec<&Tensor>> = (1..5)
                .map(|i| bn.input(i).and_then(|n| graph.initializers.get(n)))
                .collect();
            let w = graph.initializers.get(conv.input(1)?)?;
            let b = match conv.input(2) {
                Some(name) => Some(graph.initializers.get(name)?),
                None => None,
            };
            Some((conv_idx, bn_idx, epsilon, params?, w.clone(), b.cloned()))
        });
        let Some((conv_idx, bn_idx, eps, params, w, b)) = candidate else {
            break;
        };
        let (Ok(w), [scale, shift, mean, var]) = (w.as_f32(), params.as_slice()) else {
            break;
        };
        let (scale, shift, mean, var) = (scale.to_f32(), shift.to_f32(), mean.to_f32(), var.to_f32());
        let m = w.shape()[0];
        if [&scale, &shift, &mean, &var].iter().any(|p| p.len() != m) {
            break;
        }
        let mut new_w = w.clone();
        let mut new_b = vec![0f32; m];
        for o in 0..m {
            let k = scale[o] / (var[o] + eps).sqrt();
            new_w.index_axis_mut(Axis(0), o).mapv_inplace(|v| v * k);
            let b0 = b
                .as_ref()
                .map(|t| t.to_f32().as_slice().map(|s| s[o]).unwrap_or(0.0))
                .unwrap_or(0.0);
            new_b[o] = (b0 - mean[o]) * k + shift[o];
        }
        let conv_name = graph.nodes[conv_idx].name.clone();
        let w_name = graph.fresh_name(&format!("{conv_name}.weight_folded"));
        graph.initializers.insert(w_name.clone(), Tensor::F32(new_w));
        let b_name = graph.fresh_name(&format!("{conv_name}.bias_folded"));
        graph.initializers.insert(
            b_name.clone(),
            Tensor::F32(ndarray::ArrayD::from_shape_vec(IxDyn(&[m]), new_b).unwrap_or_default()),
        );
        let bn_out = graph.nodes[bn_idx].outputs[0].clone();
        let conv = &mut graph.nodes[conv_idx];
        conv.inputs = vec![conv.inputs[0].clone(), w_name, b_name];
        conv.outputs = vec![bn_out];
        graph.nodes.remove(bn_idx);
        folded += 1;
    }
    if folded > 0 {
        remove_dead(graph);
    }
    folded
}

/// Rewrites each `BatchNormalization` that no convolution before it absorbed (a
/// pre-activation network's BatchNorm after a Concat or an Add, as DenseNet's) into the
/// per-channel affine map it is at inference: a depthwise 1x1 `Conv` with weight
/// `scale / sqrt(var + eps)` and bias `shift - mean * weight`. The ReLU after it then fuses,
/// and an int8 package runs the pair as one depthwise kernel instead of a dequantize, two
/// host ops and a quantize. Only 4-D inputs with constant statistics (inference mode).
pub fn batchnorm_as_depthwise(graph: &mut Graph) -> usize {
    let Ok(shapes) = crate::shape::infer(graph, &Default::default()) else {
        return 0;
    };
    let mut rewritten = 0;
    for idx in 0..graph.nodes.len() {
        let node = &graph.nodes[idx];
        let Op::BatchNormalization { epsilon } = node.op else {
            continue;
        };
        if node.outputs.len() != 1 || node.input(0).and_then(|x| shapes.shape(x)).is_none_or(|s| s.len() != 4) {
            continue;
        }
        let params: Option<Vec<Vec<f32>>> = (1..5)
            .map(|i| {
                node.input(i)
                    .and_then(|n| graph.initializers.get(n))
                    .map(|t| t.to_f32().iter().copied().collect())
            })
            .collect();
        let Some([scale, shift, mean, var]) = params.and_then(|p| <[Vec<f32>; 4]>::try_from(p).ok()) else {
            continue;
        };
        let c = scale.len();
        if [&shift, &mean, &var].iter().any(|p| p.len() != c) {
            continue;
        }
        let k: Vec<f32> = (0..c).map(|i| scale[i] / (var[i] + epsilon).sqrt()).collect();
        let b: Vec<f32> = (0..c).map(|i| shift[i] - mean[i] * k[i]).collect();
        let name = node.name.clone();
        let x = node.inputs[0].clone();
        let w_name = graph.fresh_name(&format!("{name}.depthwise_weight"));
        let b_name = graph.fresh_name(&format!("{name}.depthwise_bias"));
        let (Ok(w), Ok(b)) = (Tensor::from_f32(&[c, 1, 1, 1], k), Tensor::from_f32(&[c], b)) else {
            continue;
        };
        graph.initializers.insert(w_name.clone(), w);
        graph.initializers.insert(b_name.clone(), b);
        let node = &mut graph.nodes[idx];
        node.op = Op::Conv(crate::op::Conv {
            kernel_shape: Some([1, 1]),
            group: c,
            ..Default::default()
        });
        node.inputs = vec![x, w_name, b_name];
        rewritten += 1;
    }
    if rewritten > 0 {
        remove_dead(graph);
    }
    rewritten
}

/// Marks `Relu(Conv(x))` and `Clip(Conv(x), min, max)` with constant bounds as a fused
/// convolution when the convolution's output has no other use.
pub fn fuse_activations(graph: &mut Graph) -> usize {
    let mut fused = 0;
    loop {
        let uses = graph.use_counts();
        let producers = graph.producers();
        let candidate = graph.nodes.iter().enumerate().find_map(|(act_idx, act)| {
            let activation = match act.op {
                Op::Relu => Activation::Relu,
                Op::Clip => {
                    let bound = |i: usize, default: f32| match act.input(i) {
                        None => Some(default),
                        Some(n) => graph
                            .initializers
                            .get(n)
                            .and_then(|t| t.to_f32().iter().next().copied()),
                    };
                    Activation::Clip {
                        min: bound(1, f32::NEG_INFINITY)?,
                        max: bound(2, f32::INFINITY)?,
                    }
                }
                _ => return None,
            };
            let x = act.input(0)?;
            let &conv_idx = producers.get(x)?;
            match &graph.nodes[conv_idx].op {
                Op::Conv(c) if c.activation.is_none() && uses.get(x).copied() == Some(1) => {
                    Some((conv_idx, act_idx, activation))
                }
                _ => None,
            }
        });
        let Some((conv_idx, act_idx, activation)) = candidate else {
            break;
        };
        let out = graph.nodes[act_idx].outputs[0].clone();
        let conv = &mut graph.nodes[conv_idx];
        if let Op::Conv(c) = &mut conv.op {
            c.activation = Some(activation);
        }
        conv.outputs = vec![out];
        graph.nodes.remove(act_idx);
        fused += 1;
    }
    fused
}

/// Folds an explicit zero `Pad` of the two spatial axes (as TensorFlow exports write before
/// a strided convolution or a pooling: Keras' `ZeroPadding2D`) into the padding of the
/// `Conv` that reads it, and into a `MaxPool`'s when the padded values are known to be
/// non-negative (after a ReLU), where padding with zero and padding that never wins are the
/// same. The window and output size stay exactly as they were; the kernels then pad in
/// place instead of the pad running as a separate (host) step. A `SAME_*` consumer is
/// resolved to explicit pads from the inferred shapes. Returns the consumers rewired; the
/// `Pad` goes once nothing reads it.
pub fn fold_pads(graph: &mut Graph) -> usize {
    use crate::op::{PadMode, Padding};
    let Ok(shapes) = crate::shape::infer(graph, &Default::default()) else {
        return 0;
    };
    // SAME padding depends on the spatial size: resolved only when no input dimension past
    // the batch is symbolic (then the inferred sizes are the real ones)
    let sizes_known = graph.inputs.iter().all(|i| i.shape.iter().skip(1).all(Option::is_some));
    let producers = graph.producers();
    let graph_outputs: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut folded = 0;
    for pad_idx in 0..graph.nodes.len() {
        let pad = &graph.nodes[pad_idx];
        if pad.op
            != (Op::Pad {
                mode: PadMode::Constant,
            })
            || pad.input(3).is_some()
        {
            continue;
        }
        let (Some(x), Some(out)) = (pad.input(0), pad.outputs.first()) else {
            continue;
        };
        if graph_outputs.contains(out) {
            continue;
        }
        let zero_value = match pad.input(2) {
            None => true,
            Some(v) => graph
                .initializers
                .get(v)
                .is_some_and(|t| t.len() == 1 && t.to_f32().iter().all(|&v| v == 0.0)),
        };
        let Some(pads) = pad.input(1).and_then(|p| graph.initializers.get(p)) else {
            continue;
        };
        let pads: Vec<i64> = pads.to_f32().iter().map(|&v| v as i64).collect();
        // [n, c, h, w] begins then ends: only h and w, none negative (a crop)
        if !zero_value || pads.len() != 8 || pads.iter().any(|&p| p < 0) || pads[0] + pads[1] + pads[4] + pads[5] != 0 {
            continue;
        }
        let added = [pads[2], pads[3], pads[6], pads[7]].map(|p| p as usize);
        let non_negative = producers.get(x).is_some_and(|&i| match &graph.nodes[i].op {
            Op::Relu => true,
            Op::Conv(c) => match c.activation {
                Some(Activation::Relu) => true,
                Some(Activation::Clip { min, .. }) => min >= 0.0,
                None => false,
            },
            _ => false,
        });
        let (x, out) = (x.to_string(), out.clone());
        let Some(padded) = shapes.shape(&out).map(<[usize]>::to_vec) else {
            continue;
        };
        if padded.len() != 4 {
            continue;
        }
        for idx in 0..graph.nodes.len() {
            let node = &graph.nodes[idx];
            if node.input(0) != Some(out.as_str()) || node.inputs.iter().skip(1).any(|i| *i == out) {
                continue;
            }
            // the consumer's own window on the padded input: [kernel span, stride, dilation]
            let (padding, kernel, strides, dilations) = match &node.op {
                Op::Conv(c) => {
                    let k = match c.kernel_shape {
                        Some(k) => k,
                        None => match node.input(1).and_then(|w| shapes.shape(w)) {
                            Some([_, _, kh, kw]) => [*kh, *kw],
                            _ => continue,
                        },
                    };
                    (&c.padding, k, c.strides, c.dilations)
                }
                Op::MaxPool(p) if non_negative && !p.ceil_mode => (&p.padding, p.kernel_shape, p.strides, p.dilations),
                _ => continue,
            };
            if matches!(padding, Padding::SameUpper | Padding::SameLower) && !sizes_known {
                continue;
            }
            let mut total = [0usize; 4];
            let mut ok = true;
            for axis in 0..2 {
                match crate::shape::window(
                    padded[2 + axis],
                    kernel[axis],
                    strides[axis],
                    dilations[axis],
                    padding,
                    false,
                    axis,
                ) {
                    Ok(w) => {
                        total[axis] = w.pad_begin + added[axis];
                        total[axis + 2] = w.pad_end + added[axis + 2];
                        let span = (kernel[axis] - 1) * dilations[axis] + 1;
                        // a max-pooling window wholly in its padding would answer -inf where
                        // the zero-padded input gave 0
                        if matches!(node.op, Op::MaxPool(_)) && (total[axis] >= span || total[axis + 2] >= span) {
                            ok = false;
                        }
                    }
                    Err(_) => ok = false,
                }
            }
            if !ok {
                continue;
            }
            let node = &mut graph.nodes[idx];
            match &mut node.op {
                Op::Conv(c) => c.padding = Padding::Explicit(total),
                Op::MaxPool(p) => p.padding = Padding::Explicit(total),
                _ => continue,
            }
            node.inputs[0] = x.clone();
            folded += 1;
        }
    }
    if folded > 0 {
        remove_dead(graph);
    }
    folded
}

/// Rewrites `Concat(a, b, ..., y, z)` as `Concat(C, z)` where another Concat `C` of the same
/// axis already joins `a, b, ..., y` (DenseNet: each layer's input joins every feature map
/// before it, and the next layer's joins the same ones and one more). The value is the
/// same; the device copies one earlier result and one new input instead of every input
/// again.
pub fn chain_concats(graph: &mut Graph) -> Result<usize> {
    let mut by_inputs: std::collections::HashMap<(i64, Vec<String>), String> = Default::default();
    for n in &graph.nodes {
        if let (Op::Concat { axis }, [out]) = (&n.op, n.outputs.as_slice()) {
            by_inputs
                .entry((*axis, n.inputs.clone()))
                .or_insert_with(|| out.clone());
        }
    }
    let mut chained = 0;
    for n in &mut graph.nodes {
        let Op::Concat { axis } = n.op else { continue };
        if n.inputs.len() < 3 {
            continue;
        }
        let (last, prefix) = n
            .inputs
            .split_last()
            .map(|(l, p)| (l.clone(), p.to_vec()))
            .unwrap_or_default();
        if let Some(joined) = by_inputs.get(&(axis, prefix))
            && !n.outputs.contains(joined)
        {
            n.inputs = vec![joined.clone(), last];
            chained += 1;
        }
    }
    if chained > 0 {
        graph.sort()?;
    }
    Ok(chained)
}

/// Drops nodes that do not contribute to a graph output, and unused initializers.
pub fn remove_dead(graph: &mut Graph) -> usize {
    let mut live: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; graph.nodes.len()];
    for (idx, node) in graph.nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| live.contains(o)) {
            keep[idx] = true;
            live.extend(node.inputs.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    let before = graph.nodes.len();
    let mut it = keep.into_iter();
    graph.nodes.retain(|_| it.next().unwrap_or(true));
    graph.initializers.retain(|name, _| live.contains(name));
    before - graph.nodes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::Conv;
    use crate::{DType, ValueInfo};

    fn conv_bn_relu() -> Graph {
        let mut g = Graph {
            inputs: vec![ValueInfo::new(
                "x",
                DType::F32,
                vec![Some(1), Some(2), Some(4), Some(4)],
            )],
            outputs: vec![ValueInfo::new("y", DType::F32, vec![])],
            nodes: vec![
                Node::new("conv", Op::Conv(Conv::default()), &["x", "w"], &["c"]),
                Node::new(
                    "bn",
                    Op::BatchNormalization { epsilon: 1e-5 },
                    &["c", "s", "b", "m", "v"],
                    &["n"],
                ),
                Node::new("relu", Op::Relu, &["n"], &["y"]),
            ],
            ..Default::default()
        };
        g.initializers
            .insert("w".into(), Tensor::from_f32(&[3, 2, 1, 1], vec![1.0; 6]).unwrap());
        for (name, v) in [("s", 2.0), ("b", 0.5), ("m", 1.0), ("v", 4.0)] {
            g.initializers
                .insert(name.into(), Tensor::from_f32(&[3], vec![v; 3]).unwrap());
        }
        g
    }

    #[test]
    fn folds_bn_and_fuses_relu() {
        let mut g = conv_bn_relu();
        assert_eq!(fold_batchnorm(&mut g), 1);
        assert_eq!(fuse_activations(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        let Op::Conv(c) = &g.nodes[0].op else { panic!() };
        assert_eq!(c.activation, Some(Activation::Relu));
        assert_eq!(g.nodes[0].outputs, vec!["y".to_string()]);
        let w = g.initializers[&g.nodes[0].inputs[1]].to_f32();
        let k = 2.0 / (4.0f32 + 1e-5).sqrt();
        assert!((w[[0, 0, 0, 0]] - k).abs() < 1e-6);
        let b = g.initializers[&g.nodes[0].inputs[2]].to_f32();
        assert!((b[[0]] - (0.5 - k)).abs() < 1e-6);
        assert_eq!(g.initializers.len(), 2);
    }

    #[test]
    fn keeps_bn_when_conv_output_is_shared() {
        let mut g = conv_bn_relu();
        g.outputs.push(ValueInfo::new("c", DType::F32, vec![]));
        assert_eq!(fold_batchnorm(&mut g), 0);
    }
}
