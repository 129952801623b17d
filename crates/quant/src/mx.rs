//! MX lowering: convolutions and fully connected layers with constant weights become
//! `MxConv`/`MxGemm` with their weights stored as MX codes (blocks of 32 along the input
//! channels); every other op stays f32. No calibration data is needed: each block's scale
//! comes from its own values, weights when compiling, activations while running.

use std::collections::HashMap;

use weft_core::mx::{MxFormat, MxTensor};
use weft_core::op::{MxActivations, MxConv, MxGemm};
use weft_core::{DType, Graph, Node, Op, Tensor};

use crate::QuantError;

/// What [`to_mx`] converted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MxSummary {
    pub convolutions: usize,
    pub fully_connected: usize,
    /// Matrix products left in f32 (weights computed while running, or shapes MxGemm does
    /// not take), by node name.
    pub kept_float: Vec<String>,
    /// MX layers that read the network's input with no matrix product before them (they
    /// take `input_activations`), by node name.
    pub input_layers: Vec<String>,
}

/// Conv, Gemm and MatMul: the products that become MX layers.
fn is_product(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_) | Op::Gemm(_) | Op::MatMul | Op::MxConv(_) | Op::MxGemm(_)
    )
}

/// Names of the products whose data input is computed from the graph's inputs through no
/// other product (normalization, transposes, padding and the like may come between).
pub fn input_layers(graph: &Graph) -> std::collections::HashSet<String> {
    let mut after_product = std::collections::HashSet::new();
    let mut first = std::collections::HashSet::new();
    for node in &graph.nodes {
        let fed = node.inputs.iter().any(|v| after_product.contains(v.as_str()));
        if is_product(&node.op) && !node.input(0).is_some_and(|v| after_product.contains(v)) {
            first.insert(node.name.clone());
        }
        if fed || is_product(&node.op) {
            after_product.extend(node.outputs.iter().cloned());
        }
    }
    first
}

/// Lowers `graph` (optimized and sorted) to MX layers. The layers that read the network's
/// input (see [`input_layers`]) convert their activations to `input_activations`, the
/// others to `activations`: an image's 8-bit pixels do not fit FP8/6/4 elements.
pub fn to_mx(
    graph: &Graph,
    weights: MxFormat,
    activations: MxActivations,
    input_activations: MxActivations,
) -> Result<(Graph, MxSummary), QuantError> {
    let shapes = weft_core::shape::infer(graph, &HashMap::new())?;
    let mut g = graph.clone();
    let mut summary = MxSummary::default();
    let is_const = |v: Option<&str>| v.is_some_and(|v| graph.initializers.contains_key(v));
    let first = input_layers(graph);
    let body_activations = activations;
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for node in std::mem::take(&mut g.nodes) {
        let activations = if first.contains(&node.name) {
            input_activations
        } else {
            body_activations
        };
        let converted = match &node.op {
            Op::Conv(c) if is_const(node.input(1)) && (node.input(2).is_none() || is_const(node.input(2))) => {
                let w = graph.initializers[node.input(1).unwrap_or_default()].to_f32();
                if w.ndim() != 4 {
                    None
                } else {
                    let bias = node
                        .input(2)
                        .map(|b| graph.initializers[b].to_f32().iter().copied().collect());
                    let (codes, scales) = store(&mut g, &node, weights, &w)?;
                    summary.convolutions += 1;
                    Some(mx_node(
                        &mut g,
                        &node,
                        Op::MxConv(MxConv {
                            conv: c.clone(),
                            weights,
                            activations,
                        }),
                        codes,
                        scales,
                        bias,
                    )?)
                }
            }
            Op::Gemm(gm)
                if !gm.trans_a
                    && is_const(node.input(1))
                    && (node.input(2).is_none() || is_const(node.input(2)))
                    && graph.initializers[node.input(1).unwrap_or_default()].shape().len() == 2 =>
            {
                let b = graph.initializers[node.input(1).unwrap_or_default()].to_f32();
                let w = if gm.trans_b {
                    b
                } else {
                    b.t().as_standard_layout().into_owned()
                };
                let w = w.mapv(|v| v * gm.alpha);
                let m = w.shape()[0];
                let bias = match node.input(2) {
                    None => Some(None),
                    Some(c) => {
                        let c = &graph.initializers[c];
                        let vals: Vec<f32> = c.to_f32().iter().map(|v| v * gm.beta).collect();
                        let bshape = c.shape();
                        if vals.len() == m && bshape.last() == Some(&m) {
                            Some(Some(vals))
                        } else if vals.len() == 1 {
                            Some(Some(vec![vals[0]; m]))
                        } else {
                            None // a C that varies along the batch: kept in f32
                        }
                    }
                };
                match bias {
                    Some(bias) => {
                        let (codes, scales) = store(&mut g, &node, weights, &w)?;
                        summary.fully_connected += 1;
                        Some(mx_node(&mut g, &node, gemm(weights, activations), codes, scales, bias)?)
                    }
                    None => None,
                }
            }
            Op::MatMul
                if is_const(node.input(1))
                    && graph.initializers[node.input(1).unwrap_or_default()].shape().len() == 2
                    && shapes.shape(node.input(0).unwrap_or_default()).map(<[usize]>::len) == Some(2) =>
            {
                let w = graph.initializers[node.input(1).unwrap_or_default()]
                    .to_f32()
                    .t()
                    .as_standard_layout()
                    .into_owned();
                let (codes, scales) = store(&mut g, &node, weights, &w)?;
                summary.fully_connected += 1;
                Some(mx_node(&mut g, &node, gemm(weights, activations), codes, scales, None)?)
            }
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul => {
                summary.kept_float.push(node.name.clone());
                None
            }
            _ => None,
        };
        if converted.is_some() && first.contains(&node.name) {
            summary.input_layers.push(node.name.clone());
        }
        nodes.push(converted.unwrap_or(node));
    }
    g.nodes = nodes;
    weft_core::passes::remove_dead(&mut g);
    Ok((g, summary))
}

fn gemm(weights: MxFormat, activations: MxActivations) -> Op {
    Op::MxGemm(MxGemm {
        weights,
        activations,
        activation: None,
    })
}

/// Stores weights `[M, K, ...]` as MX codes and scales (blocks along axis 1) under fresh
/// initializer names.
fn store(
    g: &mut Graph,
    node: &Node,
    format: MxFormat,
    w: &ndarray::ArrayD<f32>,
) -> Result<(String, String), QuantError> {
    let shape = w.shape().to_vec();
    let data: Vec<f32> = w.iter().copied().collect();
    if data.iter().any(|v| !v.is_finite()) {
        return Err(QuantError::node(node, "weights hold NaN or infinite values"));
    }
    let t = MxTensor::quantize(format, &shape, 1, &data);
    let codes = g.fresh_name(&format!("{}.w_{}", node.name, format.name()));
    g.initializers
        .insert(codes.clone(), Tensor::from_le_bytes(DType::U8, &shape, &t.codes)?);
    let scales = g.fresh_name(&format!("{}.w_scales", node.name));
    g.initializers.insert(
        scales.clone(),
        Tensor::from_le_bytes(DType::U8, &t.scales_shape(), &t.scales)?,
    );
    Ok((codes, scales))
}

fn mx_node(
    g: &mut Graph,
    node: &Node,
    op: Op,
    codes: String,
    scales: String,
    bias: Option<Vec<f32>>,
) -> Result<Node, QuantError> {
    let mut inputs = vec![node.inputs[0].clone(), codes, scales];
    if let Some(b) = bias {
        let name = g.fresh_name(&format!("{}.bias", node.name));
        let n = b.len();
        g.initializers.insert(name.clone(), Tensor::from_f32(&[n], b)?);
        inputs.push(name);
    }
    Ok(Node {
        name: node.name.clone(),
        op,
        inputs,
        outputs: node.outputs.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::ValueInfo;
    use weft_core::op::Conv;

    #[test]
    fn conv_and_gemm_become_mx_and_agree_with_f32_roughly() {
        let mut g = Graph {
            name: "t".into(),
            inputs: vec![ValueInfo::new(
                "x",
                DType::F32,
                vec![Some(2), Some(40), Some(5), Some(5)],
            )],
            outputs: vec![ValueInfo::new("y", DType::F32, vec![Some(2), Some(3)])],
            ..Default::default()
        };
        let mut rng = weft_core::rng::Rng::new(3);
        let w: Vec<f32> = (0..8 * 40 * 9).map(|_| rng.normal() * 0.1).collect();
        g.initializers
            .insert("w".into(), Tensor::from_f32(&[8, 40, 3, 3], w).unwrap());
        g.initializers
            .insert("b".into(), Tensor::from_f32(&[8], vec![0.1; 8]).unwrap());
        let fc: Vec<f32> = (0..8 * 9 * 3).map(|_| rng.normal() * 0.1).collect();
        g.initializers
            .insert("fc".into(), Tensor::from_f32(&[72, 3], fc).unwrap());
        g.initializers.insert("shape".into(), Tensor::i64_vec(&[2, 72]));
        let conv = Conv {
            padding: weft_core::op::Padding::Explicit([1, 1, 1, 1]),
            strides: [2, 2],
            ..Conv::default()
        };
        g.nodes = vec![
            Node::new("c", Op::Conv(conv), &["x", "w", "b"], &["h"]),
            Node::new("r", Op::Reshape { allowzero: false }, &["h", "shape"], &["f"]),
            Node::new("m", Op::MatMul, &["f", "fc"], &["y"]),
        ];
        g.sort().unwrap();
        let x: Vec<f32> = (0..2 * 40 * 25).map(|_| rng.normal()).collect();
        let inputs: HashMap<String, Tensor> = [("x".to_string(), Tensor::from_f32(&[2, 40, 5, 5], x).unwrap())].into();
        let want = weft_reference::Executor::new(g.clone()).unwrap().run(&inputs).unwrap();
        let want = want[0].1.to_f32();
        for f in MxFormat::ALL {
            let (mx, summary) = to_mx(&g, f, MxActivations::Mx(f), MxActivations::Mx(f)).unwrap();
            assert_eq!((summary.convolutions, summary.fully_connected), (1, 1));
            assert!(!mx.initializers.contains_key("w"));
            let got = weft_reference::Executor::new(mx).unwrap().run(&inputs).unwrap();
            let got = got[0].1.to_f32();
            let err: f32 = (&got - &want).mapv(f32::abs).iter().copied().fold(0.0, f32::max);
            let scale: f32 = want.mapv(f32::abs).iter().copied().fold(0.0, f32::max);
            // a sanity bound, relative to the largest output (the exact check is the next test)
            let tol = match f {
                MxFormat::Int8 => 0.08,
                MxFormat::Fp8E4M3 | MxFormat::Fp6E2M3 => 0.15,
                MxFormat::Fp8E5M2 | MxFormat::Fp6E3M2 => 0.3,
                MxFormat::Fp4E2M1 => 0.6,
            };
            assert!(err <= tol * scale, "{f}: max error {err} of {scale}");
        }
    }

    /// An MX convolution equals the f32 convolution of the converted-and-back weights and
    /// activations, up to f32 summation order.
    #[test]
    fn mx_conv_is_the_conv_of_the_converted_values() {
        let mut rng = weft_core::rng::Rng::new(9);
        for (group, c, m) in [(1usize, 70usize, 5usize), (2, 80, 4), (6, 6, 6)] {
            let cg = c / group;
            let w: Vec<f32> = (0..m * cg * 9).map(|_| rng.normal()).collect();
            let x: Vec<f32> = (0..c * 16).map(|_| rng.normal() * 3.0).collect();
            let conv = Conv {
                padding: weft_core::op::Padding::Explicit([1, 0, 1, 1]),
                group,
                ..Conv::default()
            };
            for f in MxFormat::ALL {
                let mut g = Graph {
                    name: "t".into(),
                    inputs: vec![ValueInfo::new(
                        "x",
                        DType::F32,
                        vec![Some(1), Some(c), Some(4), Some(4)],
                    )],
                    outputs: vec![ValueInfo::new("y", DType::F32, vec![])],
                    ..Default::default()
                };
                g.initializers
                    .insert("w".into(), Tensor::from_f32(&[m, cg, 3, 3], w.clone()).unwrap());
                g.nodes = vec![Node::new("c", Op::Conv(conv.clone()), &["x", "w"], &["y"])];
                let (mx, _) = to_mx(&g, f, MxActivations::Mx(f), MxActivations::Mx(f)).unwrap();
                let xt: HashMap<String, Tensor> =
                    [("x".to_string(), Tensor::from_f32(&[1, c, 4, 4], x.clone()).unwrap())].into();
                let got = weft_reference::Executor::new(mx).unwrap().run(&xt).unwrap()[0]
                    .1
                    .to_f32();
                // blocks along each group's channels: [1, group, cg, 16]
                let xq = weft_core::mx::fake_quantize(f, &[group, cg, 16], 1, &x);
                let wq = weft_core::mx::fake_quantize(f, &[m, cg, 9], 1, &w);
                g.initializers
                    .insert("w".into(), Tensor::from_f32(&[m, cg, 3, 3], wq).unwrap());
                let xt: HashMap<String, Tensor> =
                    [("x".to_string(), Tensor::from_f32(&[1, c, 4, 4], xq).unwrap())].into();
                let want = weft_reference::Executor::new(g).unwrap().run(&xt).unwrap()[0]
                    .1
                    .to_f32();
                assert_eq!(got.shape(), want.shape());
                let scale: f32 = want.mapv(f32::abs).iter().copied().fold(0.0, f32::max);
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!((a - b).abs() <= 1e-5 * scale, "{f} group {group}: {a} vs {b}");
                }
            }
        }
    }

    /// The layers that read the input through normalization and layout ops (but no product)
    /// take the input format; every layer behind a product takes the body format, including
    /// one fed by both (a skip from the input joined with a conv's output).
    #[test]
    fn input_layers_take_the_input_activation_format() {
        let mut g = Graph {
            name: "t".into(),
            inputs: vec![ValueInfo::new(
                "x",
                DType::F32,
                vec![Some(1), Some(4), Some(4), Some(4)],
            )],
            outputs: vec![ValueInfo::new("y", DType::F32, vec![])],
            ..Default::default()
        };
        let mut rng = weft_core::rng::Rng::new(4);
        let mut w = |n: usize| Tensor::from_f32(&[n, 4, 1, 1], (0..n * 4).map(|_| rng.normal()).collect()).unwrap();
        for (k, n) in [("w1", 4), ("w2", 4), ("w3", 4), ("w4", 4)] {
            g.initializers.insert(k.into(), w(n));
        }
        g.initializers
            .insert("mean".into(), Tensor::from_f32(&[1], vec![0.5]).unwrap());
        let conv = || Op::Conv(Conv::default());
        g.nodes = vec![
            Node::new("norm", Op::Sub, &["x", "mean"], &["xn"]),
            Node::new("stem_a", conv(), &["xn", "w1"], &["a"]),
            Node::new("stem_b", conv(), &["x", "w2"], &["b"]),
            Node::new("relu", Op::Relu, &["a"], &["ar"]),
            Node::new("join", Op::Add, &["ar", "xn"], &["j"]),
            Node::new("body", conv(), &["j", "w3"], &["c"]),
            Node::new("sum", Op::Add, &["c", "b"], &["s"]),
            Node::new("tail", conv(), &["s", "w4"], &["y"]),
        ];
        g.sort().unwrap();
        let first = input_layers(&g);
        let mut first: Vec<&str> = first.iter().map(String::as_str).collect();
        first.sort_unstable();
        assert_eq!(first, ["stem_a", "stem_b"]);
        let body = MxFormat::Fp8E4M3;
        let (mx, summary) = to_mx(&g, body, MxActivations::Mx(body), MxActivations::Mx(MxFormat::Int8)).unwrap();
        assert_eq!(summary.input_layers.len(), 2);
        for n in &mx.nodes {
            if let Op::MxConv(c) = &n.op {
                let want = if n.name.starts_with("stem") {
                    MxFormat::Int8
                } else {
                    body
                };
                assert_eq!(c.activations, MxActivations::Mx(want), "{}", n.name);
                assert_eq!(c.weights, body, "{}", n.name);
            }
        }
    }
}
