//! Helpers for weft's benchmarks: int8 packages of single layers and of zoo models.

use std::collections::HashMap;

use weft_compile::{CompileOptions, Package, Precision};
use weft_core::op::{Conv, Padding};
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};

/// A seeded float tensor.
pub fn input(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape, Rng::new(seed).normals(shape.iter().product(), 1.0))
        .unwrap_or_else(|_| Tensor::f32_scalar(0.0))
}

fn int8(graph: Graph, input_shape: &[usize]) -> Result<Package, String> {
    let opts = CompileOptions {
        mx_activations: None,
        mx_input_activations: None,
        name: graph.name.clone(),
        precision: Precision::Int8,
        method: weft_quant::Method::MinMax,
        calibration: vec![HashMap::from([("input".to_string(), input(input_shape, 1))])],
        given: None,
        evaluation: None,
        preprocess: Default::default(),
        labels: vec![],
        metadata: Default::default(),
    };
    weft_compile::compile(graph, opts, &mut |_, _, _| {})
        .map(|r| r.0)
        .map_err(|e| e.to_string())
}

/// One `k x k` convolution (+ ReLU) with `c` inputs and `m` outputs on `h x w`, as int8.
pub fn conv_package(c: usize, m: usize, k: usize, stride: usize, h: usize, w: usize) -> Result<Package, String> {
    let mut g = Graph {
        name: format!("conv{k}x{k}_{c}_{m}_{h}"),
        ..Default::default()
    };
    g.inputs.push(ValueInfo::new(
        "input",
        DType::F32,
        vec![None, Some(c), Some(h), Some(w)],
    ));
    g.outputs.push(ValueInfo::new("y", DType::F32, vec![]));
    let weights = Rng::new(2).normals(m * c * k * k, (2.0 / (c * k * k) as f32).sqrt());
    g.initializers.insert(
        "w".into(),
        Tensor::from_f32(&[m, c, k, k], weights).map_err(|e| e.to_string())?,
    );
    let conv = Conv {
        kernel_shape: Some([k, k]),
        strides: [stride, stride],
        padding: Padding::Explicit([k / 2; 4]),
        ..Conv::default()
    };
    g.nodes.push(Node::new("conv", Op::Conv(conv), &["input", "w"], &["c"]));
    g.nodes.push(Node::new("relu", Op::Relu, &["c"], &["y"]));
    int8(g, &[1, c, h, w])
}

/// A zoo model as int8.
pub fn zoo_package(name: &str) -> Result<Package, String> {
    let g = weft_zoo::build(name, &weft_zoo::ZooOptions::default()).map_err(|e| e.to_string())?;
    let size = g
        .inputs
        .first()
        .and_then(|i| i.shape.get(2).copied().flatten())
        .unwrap_or(224);
    int8(g, &[2, 3, size, size])
}
