//! Pre-quantized ONNX models (QDQ and QOperator formats, as `onnxruntime.quantization`
//! writes them) turned into a float graph plus the model's own quantization parameters:
//! activation scales and zero points, exact int8 weights and int32 biases. Lowering that
//! pair gives the integer graph the model describes.

use std::collections::HashMap;

use weft_core::{DType, Graph, Node, Op, Tensor};

use crate::{QuantError, QuantParams};

/// Whether a graph carries quantization ops.
pub fn is_prequantized(g: &Graph) -> bool {
    g.nodes.iter().any(|n| {
        matches!(
            n.op,
            Op::QuantizeLinear { .. }
                | Op::DequantizeLinear { .. }
                | Op::QLinearConv(_)
                | Op::QLinearMatMul
                | Op::QLinearAdd
                | Op::QLinearGlobalAveragePool
        )
    })
}

struct Extract<'g> {
    src: &'g Graph,
    out: Graph,
    params: QuantParams,
    /// quantized value name -> the float value it stands for
    qmap: HashMap<String, String>,
    /// dequantized value name -> the float value it stands for
    alias: HashMap<String, String>,
}

/// Splits a pre-quantized graph into a float graph and its parameters.
pub fn extract(g: &Graph) -> Result<(Graph, QuantParams), QuantError> {
    let mut e = Extract {
        src: g,
        out: Graph {
            name: g.name.clone(),
            inputs: g.inputs.clone(),
            outputs: g.outputs.clone(),
            ..Default::default()
        },
        params: QuantParams {
            exact_intermediates: true,
            ..Default::default()
        },
        qmap: HashMap::new(),
        alias: HashMap::new(),
    };
    for node in &g.nodes {
        e.node(node)?;
    }
    // Graph outputs that were dequantized values keep their names through an Identity.
    for o in &g.outputs {
        if let Some(f) = e.alias.get(&o.name).or_else(|| e.qmap.get(&o.name)).cloned()
            && f != o.name
        {
            e.out
                .nodes
                .push(Node::new(format!("{}.output", o.name), Op::Identity, &[&f], &[&o.name]));
        }
    }
    let used: std::collections::HashSet<String> = e.out.nodes.iter().flat_map(|n| n.inputs.iter().cloned()).collect();
    for (k, t) in &g.initializers {
        if used.contains(k) && !e.out.initializers.contains_key(k) {
            e.out.initializers.insert(k.clone(), t.clone());
        }
    }
    e.out.sort()?;
    Ok((e.out, e.params))
}

impl Extract<'_> {
    fn constant(&self, node: &Node, idx: usize) -> Result<&Tensor, QuantError> {
        let name = node
            .input(idx)
            .ok_or_else(|| QuantError::node(node, format!("input {idx} is missing")))?;
        self.src.initializers.get(name).ok_or_else(|| {
            QuantError::node(
                node,
                format!("'{name}' given while running is not supported in an int8 package: it must be a constant"),
            )
        })
    }

    fn scalar_params(&self, node: &Node, s_idx: usize, zp_idx: usize) -> Result<(f32, i32), QuantError> {
        let s = self.constant(node, s_idx)?.to_f32();
        if s.len() != 1 {
            return Err(QuantError::node(
                node,
                "per-axis activation quantization is not supported",
            ));
        }
        let scale = s.iter().next().copied().unwrap_or(1.0);
        if !(scale.is_finite() && scale > 0.0) {
            return Err(QuantError::node(node, format!("invalid scale {scale}")));
        }
        let (zp, dt) = match node.input(zp_idx) {
            Some(_) => {
                let z = self.constant(node, zp_idx)?;
                (z.to_i64_vec().first().copied().unwrap_or(0), z.dtype())
            }
            None => (0, DType::U8),
        };
        // int8 activations are the same reals as uint8 with the zero point moved by 128.
        let zp = match dt {
            DType::U8 => zp,
            DType::I8 => zp + 128,
            other => {
                return Err(QuantError::node(
                    node,
                    format!("activations quantized to {other} are not supported"),
                ));
            }
        };
        Ok((scale, zp as i32))
    }

    /// The float value behind a (possibly quantized or dequantized) value name.
    fn float_of(&self, v: &str) -> String {
        self.alias
            .get(v)
            .or_else(|| self.qmap.get(v))
            .cloned()
            .unwrap_or_else(|| v.to_string())
    }

    /// A float initializer for an integer weight, recording the exact integers.
    fn weight(
        &mut self,
        node: &Node,
        w_idx: usize,
        s_idx: usize,
        zp_idx: usize,
        name: String,
        channel_axis: usize,
    ) -> Result<String, QuantError> {
        let w = self.constant(node, w_idx)?.clone();
        if w.dtype() != DType::I8 {
            return Err(QuantError::node(
                node,
                format!("weights must be int8, are {}", w.dtype()),
            ));
        }
        if let Some(z) = node.input(zp_idx).and_then(|z| self.src.initializers.get(z))
            && z.to_i64_vec().iter().any(|&v| v != 0)
        {
            return Err(QuantError::node(
                node,
                "only symmetric weights (zero point 0) are supported",
            ));
        }
        let scales: Vec<f32> = self.constant(node, s_idx)?.to_f32().iter().copied().collect();
        let channels = w.shape().get(channel_axis).copied().unwrap_or(1);
        let scales = match scales.len() {
            1 => vec![scales[0]; channels],
            n if n == channels => scales,
            n => {
                return Err(QuantError::node(
                    node,
                    format!("{n} weight scales for {channels} channels"),
                ));
            }
        };
        let wf = w.to_f32();
        let mut float = wf.clone();
        for (c, mut lane) in float.axis_iter_mut(ndarray::Axis(channel_axis)).enumerate() {
            lane.mapv_inplace(|v| v * scales[c]);
        }
        // Exact integers are stored with output channels first, as the lowering reads them.
        let int_w = if channel_axis == 0 {
            w
        } else {
            Tensor::I8(
                w.cast(DType::I8)
                    .to_i64()
                    .mapv(|v| v as i8)
                    .reversed_axes()
                    .as_standard_layout()
                    .into_owned(),
            )
        };
        self.out.initializers.insert(name.clone(), Tensor::F32(float));
        self.params.weights.insert(name.clone(), (int_w, scales));
        Ok(name)
    }

    fn bias(
        &mut self,
        node: &Node,
        idx: usize,
        name: String,
        scale: f32,
        w_scales: &[f32],
    ) -> Result<Option<String>, QuantError> {
        let Some(b) = node.input(idx) else { return Ok(None) };
        let b = self
            .src
            .initializers
            .get(b)
            .ok_or_else(|| {
                QuantError::node(
                    node,
                    "a bias given while running is not supported in an int8 package: it must be a constant",
                )
            })?
            .clone();
        let float: Vec<f32> = b
            .to_i64_vec()
            .iter()
            .zip(w_scales)
            .map(|(&v, &sw)| v as f32 * scale * sw)
            .collect();
        self.out
            .initializers
            .insert(name.clone(), Tensor::from_f32(b.shape(), float)?);
        self.params.biases.insert(name.clone(), b.cast(DType::I32));
        Ok(Some(name))
    }

    fn emit(&mut self, node: &Node, op: Op, inputs: Vec<String>, out_params: Option<(f32, i32)>) {
        let out = node.outputs[0].clone();
        self.out.nodes.push(Node {
            name: node.name.clone(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        if let Some(p) = out_params {
            self.params.activations.insert(out.clone(), p);
            self.qmap.insert(out.clone(), out);
        }
    }

    fn node(&mut self, node: &Node) -> Result<(), QuantError> {
        let input = |i: usize| node.input(i).unwrap_or_default().to_string();
        match &node.op {
            Op::DequantizeLinear { axis } => {
                let x = input(0);
                if let Some(t) = self.src.initializers.get(&x) {
                    let out = node.outputs[0].clone();
                    match t.dtype() {
                        DType::I8 => {
                            let rank = t.shape().len() as i64;
                            let a = weft_core::shape::normalize_axis(*axis, rank.max(1) as usize).unwrap_or(0);
                            self.weight(node, 0, 1, 2, out, a)?;
                        }
                        DType::I32 => {
                            let s: Vec<f32> = self.constant(node, 1)?.to_f32().iter().copied().collect();
                            let float: Vec<f32> = t
                                .to_i64_vec()
                                .iter()
                                .enumerate()
                                .map(|(i, &v)| v as f32 * s[if s.len() == 1 { 0 } else { i % s.len() }])
                                .collect();
                            self.out
                                .initializers
                                .insert(out.clone(), Tensor::from_f32(t.shape(), float)?);
                            self.params.biases.insert(out, t.clone());
                        }
                        _ => {
                            let f = weft_reference::int::dequantize_linear(
                                t,
                                self.constant(node, 1)?,
                                node.input(2).and_then(|z| self.src.initializers.get(z)),
                                *axis,
                            )?;
                            self.out.initializers.insert(out, f);
                        }
                    }
                } else {
                    let f = self
                        .qmap
                        .get(&x)
                        .cloned()
                        .ok_or_else(|| QuantError::node(node, format!(
                            "dequantizing '{x}', which no QuantizeLinear or quantized op of the model produces, is not supported in an int8 package"
                        )))?;
                    self.alias.insert(node.outputs[0].clone(), f);
                }
            }
            Op::QuantizeLinear { .. } => {
                let x = self.float_of(&input(0));
                let p = self.scalar_params(node, 1, 2)?;
                if let Some(old) = self.params.activations.insert(x.clone(), p)
                    && old != p
                {
                    return Err(QuantError::node(
                        node,
                        format!("'{x}' is quantized twice with different parameters"),
                    ));
                }
                self.qmap.insert(node.outputs[0].clone(), x);
            }
            Op::QLinearConv(c) => {
                let (s_x, _) = self.scalar_params(node, 1, 2)?;
                let x = self.float_of(&input(0));
                let w = self.weight(node, 3, 4, 5, format!("{}.weight", node.name), 0)?;
                let s_w = self.params.weights[&w].1.clone();
                let y = self.scalar_params(node, 6, 7)?;
                let mut inputs = vec![x, w];
                if let Some(b) = self.bias(node, 8, format!("{}.bias", node.name), s_x, &s_w)? {
                    inputs.push(b);
                }
                self.emit(node, Op::Conv(c.clone()), inputs, Some(y));
            }
            Op::QLinearMatMul => {
                let a = self.float_of(&input(0));
                let w = self.weight(node, 3, 4, 5, format!("{}.weight", node.name), 1)?;
                let y = self.scalar_params(node, 6, 7)?;
                self.emit(node, Op::MatMul, vec![a, w], Some(y));
            }
            Op::QLinearGemm { alpha, trans_b } => {
                if *alpha != 1.0 {
                    return Err(QuantError::node(node, "QGemm with alpha other than 1"));
                }
                let (s_a, _) = self.scalar_params(node, 1, 2)?;
                let a = self.float_of(&input(0));
                let w = self.weight(
                    node,
                    3,
                    4,
                    5,
                    format!("{}.weight", node.name),
                    if *trans_b { 0 } else { 1 },
                )?;
                let s_w = self.params.weights[&w].1.clone();
                let y = self.scalar_params(node, 7, 8)?;
                let mut inputs = vec![a, w];
                if let Some(b) = self.bias(node, 6, format!("{}.bias", node.name), s_a, &s_w)? {
                    inputs.push(b);
                }
                let gemm = weft_core::op::Gemm {
                    trans_b: *trans_b,
                    ..Default::default()
                };
                self.emit(node, Op::Gemm(gemm), inputs, Some(y));
            }
            Op::QLinearAdd => {
                let (a, b) = (self.float_of(&input(0)), self.float_of(&input(3)));
                let y = self.scalar_params(node, 6, 7)?;
                self.emit(node, Op::Add, vec![a, b], Some(y));
            }
            Op::QLinearGlobalAveragePool => {
                let x = self.float_of(&input(0));
                let y = self.scalar_params(node, 3, 4)?;
                self.emit(node, Op::GlobalAveragePool, vec![x], Some(y));
            }
            _ => {
                // Any other op: on float values (QDQ) or directly on quantized tensors
                // (QOperator's MaxPool, Flatten, ...), which keep their input's parameters.
                let quantized_in = node.input(0).and_then(|x| self.qmap.get(x)).cloned();
                let inputs = node
                    .inputs
                    .iter()
                    .map(|i| if i.is_empty() { String::new() } else { self.float_of(i) })
                    .collect();
                let p = quantized_in.and_then(|f| self.params.activations.get(&f).copied());
                self.emit(node, node.op.clone(), inputs, p);
            }
        }
        Ok(())
    }
}
