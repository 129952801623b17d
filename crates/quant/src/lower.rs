//! Lowering a float graph to weft's integer graph.
//!
//! Convolutions, fully connected layers, adds and pooling become integer ops (`QConv`,
//! `QGemm`, `QAdd`, `QMaxPool`, `QAveragePool`, `QMean`) with ReLU/Clip folded into the
//! requantization clamp and a residual Add (plus its ReLU) fused into the convolution that
//! feeds it. Layout ops (Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity) carry
//! u8 tensors unchanged. A `Quantize` is inserted where a float value enters the integer
//! region and a `Dequantize` where an integer value is needed as float (graph outputs, or
//! ops without an integer form, which then run in f32).

use std::collections::{HashMap, HashSet};

use ndarray::Axis;
use weft_core::op::{Activation, Conv, QAdd, QConcat, QConv, QGemm, QMean, QOut};
use weft_core::quant::{fixed_multiplier, params_for_range, quantize_multiplier, weight_scale};
use weft_core::{Graph, Node, Op, Tensor};

use crate::{QuantError, Ranges};

/// Quantization parameters: activation scale and zero point per float value name, and
/// optionally exact integer weights and biases (from a pre-quantized model), keyed by the
/// float initializer they replace.
#[derive(Clone, Debug, Default)]
pub struct QuantParams {
    pub activations: HashMap<String, (f32, i32)>,
    pub weights: HashMap<String, (Tensor, Vec<f32>)>,
    pub biases: HashMap<String, Tensor>,
    /// Keep every value that has parameters as its own quantized tensor (no residual
    /// fusion across it), as a pre-quantized model computes.
    pub exact_intermediates: bool,
}

impl QuantParams {
    /// u8 parameters from calibrated ranges (each range widened to include zero).
    pub fn from_ranges(ranges: &Ranges) -> Self {
        QuantParams {
            activations: ranges
                .iter()
                .map(|(k, &(lo, hi))| (k.clone(), params_for_range(lo, hi)))
                .collect(),
            ..Default::default()
        }
    }
}

/// What follows a node and is folded into it.
#[derive(Debug, Default, Clone)]
struct Fusion {
    /// The Add this convolution's output feeds, and the Add's other input.
    residual: Option<(usize, String)>,
    /// Activation folded in, and the index of the node that applied it.
    activation: Option<(Activation, usize)>,
    /// Constant bias added after a MatMul.
    bias_add: Option<(usize, String)>,
}

struct Lowering<'a> {
    src: &'a Graph,
    params: &'a QuantParams,
    out: Graph,
    /// float value name -> (u8 value name, scale, zero point)
    ints: HashMap<String, (String, f32, i32)>,
    /// float values available as float in the new graph
    floats: HashSet<String>,
    /// shapes of the float graph at batch 1
    shapes: weft_core::shape::Shapes,
}

/// Where each float value lives in the integer graph: `(u8 value name, scale, zero point)`.
pub type IntValues = HashMap<String, (String, f32, i32)>;

/// Lowers an optimized float graph (BatchNorm folded, ReLU fused) to an integer graph.
/// Also returns where each quantized float value lives in it.
pub fn quantize(graph: &Graph, params: &QuantParams) -> Result<(Graph, IntValues), QuantError> {
    let mut g = graph.clone();
    g.sort()?;
    let fusions = plan_fusions(&g, params);
    let skipped: HashSet<usize> = fusions
        .values()
        .flat_map(|f| {
            [
                f.residual.as_ref().map(|r| r.0),
                f.activation.map(|a| a.1),
                f.bias_add.as_ref().map(|b| b.0),
            ]
        })
        .flatten()
        .collect();
    let mut l = Lowering {
        src: &g,
        params,
        out: Graph {
            name: g.name.clone(),
            inputs: g.inputs.clone(),
            outputs: g.outputs.clone(),
            ..Default::default()
        },
        ints: HashMap::new(),
        floats: g.inputs.iter().map(|i| i.name.clone()).collect(),
        shapes: weft_core::shape::infer(&g, &HashMap::new())?,
    };
    // A convolution with a fused residual is lowered where its Add stands, once both
    // branches exist.
    let deferred: HashMap<usize, usize> = fusions
        .iter()
        .filter_map(|(&conv, f)| f.residual.as_ref().map(|r| (r.0, conv)))
        .collect();
    for (idx, node) in g.nodes.iter().enumerate() {
        let target = match deferred.get(&idx) {
            Some(&conv) => conv,
            None if skipped.contains(&idx) || fusions.get(&idx).is_some_and(|f| f.residual.is_some()) => continue,
            None => idx,
        };
        let fusion = fusions.get(&target).cloned().unwrap_or_default();
        l.lower(target, &g.nodes[target], &fusion)?;
        let _ = node;
    }
    for o in g.outputs.clone() {
        l.as_float(&o.name)?;
    }
    let (mut out, ints) = (l.out, l.ints);
    for (name, t) in &g.initializers {
        out.initializers.entry(name.clone()).or_insert_with(|| t.clone());
    }
    weft_core::passes::remove_dead(&mut out);
    out.sort()?;
    Ok((out, ints))
}

/// Finds Conv (+Add (+Relu/Clip)), Add + Relu/Clip and MatMul + constant Add patterns.
fn plan_fusions(g: &Graph, params: &QuantParams) -> HashMap<usize, Fusion> {
    let uses = g.use_counts();
    let producers = g.producers();
    let outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    let single_internal_use = |v: &str| uses.get(v).copied() == Some(1) && !outputs.contains(v);
    let consumer_of = |v: &str| g.nodes.iter().position(|n| n.inputs.iter().any(|i| i == v));
    let activation_after = |v: &str| -> Option<(Activation, usize)> {
        if !single_internal_use(v) {
            return None;
        }
        let ci = consumer_of(v)?;
        let c = &g.nodes[ci];
        match c.op {
            Op::Relu => Some((Activation::Relu, ci)),
            Op::Clip => {
                let bound = |i: usize, d: f32| match c.input(i) {
                    None => Some(d),
                    Some(n) => g.initializers.get(n).and_then(|t| t.to_f32().iter().next().copied()),
                };
                Some((
                    Activation::Clip {
                        min: bound(1, f32::NEG_INFINITY)?,
                        max: bound(2, f32::INFINITY)?,
                    },
                    ci,
                ))
            }
            _ => None,
        }
    };
    let mut fusions: HashMap<usize, Fusion> = HashMap::new();
    let mut taken: HashSet<usize> = HashSet::new();
    for (idx, node) in g.nodes.iter().enumerate() {
        match &node.op {
            Op::Add => {
                let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
                    continue;
                };
                if g.initializers.contains_key(a) || g.initializers.contains_key(b) {
                    continue;
                }
                let act = activation_after(&node.outputs[0]);
                // Fuse into a convolution that feeds only this Add.
                let conv_side = [(a, b), (b, a)].into_iter().find_map(|(main, other)| {
                    let &p = producers.get(main)?;
                    let Op::Conv(c) = &g.nodes[p].op else { return None };
                    let materialized = params.exact_intermediates && params.activations.contains_key(main);
                    (c.activation.is_none() && single_internal_use(main) && !taken.contains(&p) && !materialized)
                        .then_some((p, other))
                });
                if let Some((p, other)) = conv_side {
                    taken.insert(p);
                    fusions.insert(
                        p,
                        Fusion {
                            residual: Some((idx, other.to_string())),
                            activation: act,
                            bias_add: None,
                        },
                    );
                } else if act.is_some() {
                    fusions.insert(
                        idx,
                        Fusion {
                            activation: act,
                            ..Default::default()
                        },
                    );
                }
            }
            Op::MatMul => {
                let out = &node.outputs[0];
                if !single_internal_use(out) {
                    continue;
                }
                let Some(ci) = consumer_of(out) else { continue };
                let c = &g.nodes[ci];
                if c.op != Op::Add {
                    continue;
                }
                let other = if c.input(0) == Some(out.as_str()) {
                    c.input(1)
                } else {
                    c.input(0)
                };
                if let Some(bias) = other.filter(|b| g.initializers.get(*b).is_some_and(|t| t.shape().len() <= 1)) {
                    let act = activation_after(&c.outputs[0]);
                    fusions.insert(
                        idx,
                        Fusion {
                            bias_add: Some((ci, bias.to_string())),
                            activation: act,
                            residual: None,
                        },
                    );
                }
            }
            _ => {}
        }
    }
    fusions
}

fn clamp_for(act: Option<Activation>, scale: f32, zp: i32) -> [i32; 2] {
    let q = |v: f32| -> i32 {
        if v.is_infinite() {
            if v > 0.0 { 255 } else { 0 }
        } else {
            (zp as f32 + (v / scale).round()).clamp(0.0, 255.0) as i32
        }
    };
    match act {
        None => [0, 255],
        Some(Activation::Relu) => [zp, 255],
        Some(Activation::Clip { min, max }) => [q(min.max(f32::MIN)).max(0), q(max).min(255)],
    }
}

impl Lowering<'_> {
    fn fresh(&self, stem: &str) -> String {
        let mut name = stem.to_string();
        let mut i = 1;
        while self.out.initializers.contains_key(&name)
            || self.src.initializers.contains_key(&name)
            || self.out.nodes.iter().any(|n| n.outputs.contains(&name))
        {
            name = format!("{stem}_{i}");
            i += 1;
        }
        name
    }

    fn constant(&mut self, stem: &str, t: Tensor) -> String {
        let name = self.fresh(stem);
        self.out.initializers.insert(name.clone(), t);
        name
    }

    fn act_params(&self, node: &Node, value: &str) -> Result<(f32, i32), QuantError> {
        self.params
            .activations
            .get(value)
            .copied()
            .ok_or_else(|| QuantError::node(node, format!("no calibration range for '{value}'")))
    }

    /// The u8 version of a value, inserting a Quantize where it is float.
    fn as_int(&mut self, node: &Node, v: &str) -> Result<(String, f32, i32), QuantError> {
        if let Some(i) = self.ints.get(v) {
            return Ok(i.clone());
        }
        let (scale, zp) = self.act_params(node, v)?;
        let q = self.fresh(&format!("{v}.q"));
        self.out.nodes.push(Node::new(
            format!("{v}.quantize"),
            Op::Quantize { scale, zero_point: zp },
            &[v],
            &[&q],
        ));
        self.ints.insert(v.to_string(), (q.clone(), scale, zp));
        Ok((q, scale, zp))
    }

    /// The float version of a value, inserting a Dequantize where it is integer.
    fn as_float(&mut self, v: &str) -> Result<String, QuantError> {
        if self.floats.contains(v) || self.src.initializers.contains_key(v) {
            return Ok(v.to_string());
        }
        let (q, scale, zp) = self
            .ints
            .get(v)
            .cloned()
            .ok_or_else(|| QuantError::Calibration(format!("value '{v}' is neither float nor integer")))?;
        self.out.nodes.push(Node::new(
            format!("{v}.dequantize"),
            Op::Dequantize { scale, zero_point: zp },
            &[&q],
            &[v],
        ));
        self.floats.insert(v.to_string());
        Ok(v.to_string())
    }

    fn is_const(&self, v: Option<&str>) -> bool {
        v.is_some_and(|v| self.src.initializers.contains_key(v))
    }

    fn lower(&mut self, _idx: usize, node: &Node, f: &Fusion) -> Result<(), QuantError> {
        let data_in = node.input(0).unwrap_or_default().to_string();
        let int_input = self.ints.contains_key(&data_in);
        match &node.op {
            Op::Conv(c)
                if self.is_const(node.input(1)) && (node.input(2).is_none() || self.is_const(node.input(2))) =>
            {
                self.conv(node, c, f)
            }
            Op::Gemm(gm)
                if !gm.trans_a
                    && self.is_const(node.input(1))
                    && (node.input(2).is_none() || self.is_const(node.input(2))) =>
            {
                let b = self.src.initializers[node.input(1).unwrap_or_default()].to_f32();
                let w = if gm.trans_b {
                    b
                } else {
                    b.t().as_standard_layout().into_owned()
                };
                let w = w.mapv(|v| v * gm.alpha);
                let bias = node
                    .input(2)
                    .map(|c| self.src.initializers[c].to_f32().mapv(|v| v * gm.beta));
                self.fully_connected(node, w, bias, f)
            }
            Op::MatMul
                if self.is_const(node.input(1))
                    && self.src.initializers[node.input(1).unwrap_or_default()].shape().len() == 2 =>
            {
                let w = self.src.initializers[node.input(1).unwrap_or_default()]
                    .to_f32()
                    .t()
                    .as_standard_layout()
                    .into_owned();
                let bias = f.bias_add.as_ref().map(|(_, b)| self.src.initializers[b].to_f32());
                self.fully_connected(node, w, bias, f)
            }
            Op::Add if !self.is_const(node.input(0)) && !self.is_const(node.input(1)) => self.add(node, f),
            Op::Concat { axis }
                if node.inputs.iter().all(|i| self.ints.contains_key(i))
                    && self.params.activations.contains_key(&node.outputs[0]) =>
            {
                self.concat(node, *axis)
            }
            Op::MaxPool(p) if int_input => self.passthrough(node, Op::QMaxPool(p.clone())),
            Op::AveragePool(p) if int_input => {
                let zp = self.ints[&data_in].2;
                self.passthrough(
                    node,
                    Op::QAveragePool {
                        pool: p.clone(),
                        zero_point: zp,
                    },
                )
            }
            Op::GlobalAveragePool if int_input => {
                let rank = self.shape_of(&data_in).len();
                self.mean(node, node.clone(), (2..rank as i64).collect(), true)
            }
            Op::ReduceMean { keepdims, .. }
                if int_input && (node.input(1).is_none() || self.is_const(node.input(1))) =>
            {
                let rank = self.shape_of(&data_in).len() as i64;
                let axes = match node.input(1) {
                    Some(a) => self.src.initializers[a].to_i64_vec(),
                    None => (0..rank).collect(),
                };
                let mut n = node.clone();
                let a = self.constant(&format!("{}.axes", node.name), Tensor::i64_vec(&axes));
                n.inputs = vec![data_in.clone(), a];
                self.mean(node, n, axes, *keepdims)
            }
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Transpose { .. }
                if int_input =>
            {
                self.passthrough(node, node.op.clone())
            }
            _ => {
                let mut n = node.clone();
                for i in n.inputs.iter_mut().filter(|i| !i.is_empty()) {
                    *i = self.as_float(i)?;
                }
                self.floats.extend(n.outputs.iter().cloned());
                self.out.nodes.push(n);
                Ok(())
            }
        }
    }

    fn shape_of(&self, v: &str) -> Vec<usize> {
        self.shapes.shape(v).map(<[usize]>::to_vec).unwrap_or_default()
    }

    /// A mean over `axes`, requantized to the output's own parameters when it has them.
    fn mean(&mut self, node: &Node, mut lowered: Node, axes: Vec<i64>, keepdims: bool) -> Result<(), QuantError> {
        let data_in = node.input(0).unwrap_or_default();
        let (q, s_x, zp_x) = self.ints[data_in].clone();
        let shape = self.shape_of(data_in);
        let count: usize = axes
            .iter()
            .filter_map(|&a| weft_core::shape::normalize_axis(a, shape.len()))
            .map(|a| shape[a])
            .product();
        let (s_y, zp_y) = self
            .params
            .activations
            .get(&node.outputs[0])
            .copied()
            .unwrap_or((s_x, zp_x));
        let real = f64::from(s_x) / (f64::from(s_y) * count.max(1) as f64);
        let (multiplier, shift) = quantize_multiplier(real)
            .ok_or_else(|| QuantError::node(node, format!("mean multiplier {real:e} is out of range")))?;
        let out = self.fresh(&format!("{}.q", node.outputs[0]));
        lowered.inputs[0] = q;
        lowered.op = Op::QMean(QMean {
            keepdims,
            x_zero_point: zp_x,
            multiplier,
            shift,
            out: QOut {
                zero_point: zp_y,
                clamp: [0, 255],
            },
        });
        lowered.outputs = vec![out.clone()];
        self.out.nodes.push(lowered);
        self.ints.insert(node.outputs[0].clone(), (out, s_y, zp_y));
        Ok(())
    }

    /// An op whose u8 output keeps its input's scale and zero point.
    fn passthrough(&mut self, node: &Node, op: Op) -> Result<(), QuantError> {
        let (q, scale, zp) = self.ints[node.input(0).unwrap_or_default()].clone();
        let out = self.fresh(&format!("{}.q", node.outputs[0]));
        let mut inputs = node.inputs.clone();
        inputs[0] = q;
        self.out.nodes.push(Node {
            name: node.name.clone(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        self.ints.insert(node.outputs[0].clone(), (out, scale, zp));
        Ok(())
    }

    /// Final float value produced by a node after its fusions.
    fn final_output(&self, node: &Node, f: &Fusion) -> String {
        if let Some((_, ai)) = f.activation {
            return self.src.nodes[ai].outputs[0].clone();
        }
        if let Some((ri, _)) = &f.residual {
            return self.src.nodes[*ri].outputs[0].clone();
        }
        if let Some((bi, _)) = &f.bias_add {
            return self.src.nodes[*bi].outputs[0].clone();
        }
        node.outputs[0].clone()
    }

    /// Per-output-channel int8 weights `[M, ...]` and their scales.
    fn weights(&self, name: &str, w: &ndarray::ArrayD<f32>) -> (Tensor, Vec<f32>) {
        if let Some(given) = self.params.weights.get(name) {
            return given.clone();
        }
        let mut scales = Vec::with_capacity(w.shape()[0]);
        let mut q = ndarray::ArrayD::<i8>::zeros(w.raw_dim());
        for (c, (wc, mut qc)) in w.axis_iter(Axis(0)).zip(q.axis_iter_mut(Axis(0))).enumerate() {
            let _ = c;
            let s = weight_scale(wc.iter().fold(0f32, |m, v| m.max(v.abs())));
            scales.push(s);
            qc.zip_mut_with(&wc, |d, &v| *d = (v / s).round().clamp(-127.0, 127.0) as i8);
        }
        (Tensor::I8(q), scales)
    }

    fn bias(
        &self,
        name: Option<&str>,
        float_bias: Option<ndarray::ArrayD<f32>>,
        m: usize,
        s_x: f32,
        s_w: &[f32],
    ) -> Result<Vec<i32>, QuantError> {
        if let Some(t) = name.and_then(|n| self.params.biases.get(n)) {
            return Ok(t.to_i64_vec().iter().map(|&v| v as i32).collect());
        }
        let b: Vec<f32> = match float_bias {
            Some(b) if b.len() == m => b.iter().copied().collect(),
            Some(b) if b.len() == 1 => vec![b.iter().next().copied().unwrap_or(0.0); m],
            Some(b) => {
                return Err(QuantError::Calibration(format!(
                    "bias of {} values for {m} channels",
                    b.len()
                )));
            }
            None => vec![0.0; m],
        };
        Ok(b.iter()
            .zip(s_w)
            .map(|(&v, &sw)| {
                (f64::from(v) / (f64::from(s_x) * f64::from(sw)))
                    .round()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect())
    }

    fn requant(&self, node: &Node, s_x: f32, s_w: &[f32], s_y: f32) -> Result<(Vec<i32>, Vec<i32>), QuantError> {
        let mut mult = Vec::with_capacity(s_w.len());
        let mut shift = Vec::with_capacity(s_w.len());
        for &sw in s_w {
            let real = f64::from(s_x) * f64::from(sw) / f64::from(s_y);
            let (m, s) = quantize_multiplier(real)
                .ok_or_else(|| QuantError::node(node, format!("requantization multiplier {real:e} is out of range")))?;
            mult.push(m);
            shift.push(s);
        }
        Ok((mult, shift))
    }

    /// The first five inputs of QConv / QGemm: x, then the weights, bias, multipliers and
    /// shifts as new constants named after the node.
    fn int_inputs(
        &mut self,
        name: &str,
        x: String,
        wq: Tensor,
        bias: Vec<i32>,
        mult: Vec<i32>,
        shift: Vec<i32>,
    ) -> Vec<String> {
        let i32s = |v: Vec<i32>| Tensor::I32(ndarray::Array1::from(v).into_dyn());
        vec![
            x,
            self.constant(&format!("{name}.weight_q"), wq),
            self.constant(&format!("{name}.bias_q"), i32s(bias)),
            self.constant(&format!("{name}.multiplier"), i32s(mult)),
            self.constant(&format!("{name}.shift"), i32s(shift)),
        ]
    }

    fn conv(&mut self, node: &Node, c: &Conv, f: &Fusion) -> Result<(), QuantError> {
        let x = node.input(0).unwrap_or_default().to_string();
        let (xq, s_x, zp_x) = self.as_int(node, &x)?;
        let w_name = node.input(1).unwrap_or_default();
        let wf = self.src.initializers[w_name].to_f32();
        let (wq, s_w) = self.weights(w_name, &wf);
        let m = wf.shape()[0];
        let float_bias = node.input(2).map(|b| self.src.initializers[b].to_f32());
        let bias = self.bias(node.input(2), float_bias, m, s_x, &s_w)?;
        let out_value = self.final_output(node, f);
        let (s_y, zp_y) = self.act_params(node, &out_value)?;
        let (mult, shift) = self.requant(node, s_x, &s_w, s_y)?;
        let activation = f.activation.map(|a| a.0).or(c.activation);
        let name = &node.name;
        let mut inputs = self.int_inputs(name, xq, wq, bias, mult, shift.clone());
        let mut residual_zero_point = None;
        if let Some((_, r)) = &f.residual {
            let (rq, s_r, zp_r) = self.as_int(node, r)?;
            let rmult: Option<Vec<i64>> = shift
                .iter()
                .map(|&s| fixed_multiplier(f64::from(s_r) / f64::from(s_y), s))
                .collect();
            let rmult = rmult.ok_or_else(|| QuantError::node(node, "residual multiplier is out of range"))?;
            inputs.push(rq);
            inputs.push(self.constant(
                &format!("{name}.residual_multiplier"),
                Tensor::I64(ndarray::Array1::from(rmult).into_dyn()),
            ));
            residual_zero_point = Some(zp_r);
        }
        let q = QConv {
            conv: Conv {
                activation: None,
                ..c.clone()
            },
            x_zero_point: zp_x,
            residual_zero_point,
            out: QOut {
                zero_point: zp_y,
                clamp: clamp_for(activation, s_y, zp_y),
            },
        };
        let out = self.fresh(&format!("{out_value}.q"));
        self.out.nodes.push(Node {
            name: name.clone(),
            op: Op::QConv(q),
            inputs,
            outputs: vec![out.clone()],
        });
        self.ints.insert(out_value, (out, s_y, zp_y));
        Ok(())
    }

    fn fully_connected(
        &mut self,
        node: &Node,
        wd: ndarray::ArrayD<f32>,
        bias: Option<ndarray::ArrayD<f32>>,
        f: &Fusion,
    ) -> Result<(), QuantError> {
        if wd.ndim() != 2 {
            return Err(QuantError::node(node, "weights must be 2-D"));
        }
        let x = node.input(0).unwrap_or_default().to_string();
        let (xq, s_x, zp_x) = self.as_int(node, &x)?;
        let w_name = node.input(1).unwrap_or_default();
        let (wq, s_w) = if self.params.weights.contains_key(w_name) {
            self.weights(w_name, &wd)
        } else {
            self.weights("", &wd)
        };
        let m = wd.shape()[0];
        let bias_name = f.bias_add.as_ref().map(|(_, b)| b.as_str()).or(node.input(2));
        let bias = self.bias(bias_name, bias, m, s_x, &s_w)?;
        let out_value = self.final_output(node, f);
        let (s_y, zp_y) = self.act_params(node, &out_value)?;
        let (mult, shift) = self.requant(node, s_x, &s_w, s_y)?;
        let name = &node.name;
        let inputs = self.int_inputs(name, xq, wq, bias, mult, shift);
        let q = QGemm {
            x_zero_point: zp_x,
            out: QOut {
                zero_point: zp_y,
                clamp: clamp_for(f.activation.map(|a| a.0), s_y, zp_y),
            },
        };
        let out = self.fresh(&format!("{out_value}.q"));
        self.out.nodes.push(Node {
            name: name.clone(),
            op: Op::QGemm(q),
            inputs,
            outputs: vec![out.clone()],
        });
        self.ints.insert(out_value, (out, s_y, zp_y));
        Ok(())
    }

    /// A Concat of u8 values: each input requantized to the output's calibrated parameters
    /// (the identity where they are the input's own).
    fn concat(&mut self, node: &Node, axis: i64) -> Result<(), QuantError> {
        let out_value = node.outputs[0].clone();
        let (s_y, zp_y) = self.act_params(node, &out_value)?;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        let mut params = Vec::with_capacity(node.inputs.len());
        for i in &node.inputs {
            let (q, s_x, zp_x) = self.ints[i].clone();
            let (mult, shift) = if s_x == s_y {
                (1 << 30, 30)
            } else {
                quantize_multiplier(f64::from(s_x) / f64::from(s_y))
                    .ok_or_else(|| QuantError::node(node, format!("concat multiplier for '{i}' is out of range")))?
            };
            inputs.push(q);
            params.push([zp_x, mult, shift]);
        }
        let out = self.fresh(&format!("{out_value}.q"));
        self.out.nodes.push(Node {
            name: node.name.clone(),
            op: Op::QConcat(QConcat {
                axis,
                inputs: params,
                zero_point: zp_y,
            }),
            inputs,
            outputs: vec![out.clone()],
        });
        self.ints.insert(out_value, (out, s_y, zp_y));
        Ok(())
    }

    fn add(&mut self, node: &Node, f: &Fusion) -> Result<(), QuantError> {
        let (aq, s_a, zp_a) = self.as_int(node, node.input(0).unwrap_or_default())?;
        let (bq, s_b, zp_b) = self.as_int(node, node.input(1).unwrap_or_default())?;
        let out_value = self.final_output(node, f);
        let (s_y, zp_y) = self.act_params(node, &out_value)?;
        let (ra, rb) = (f64::from(s_a) / f64::from(s_y), f64::from(s_b) / f64::from(s_y));
        let shift = (30 - ra.max(rb).log2().floor() as i32 - 1).clamp(0, 62);
        let (Some(ma), Some(mb)) = (fixed_multiplier(ra, shift), fixed_multiplier(rb, shift)) else {
            return Err(QuantError::node(node, "add multipliers are out of range"));
        };
        let q = QAdd {
            a_zero_point: zp_a,
            b_zero_point: zp_b,
            a_multiplier: ma as i32,
            b_multiplier: mb as i32,
            shift,
            out: QOut {
                zero_point: zp_y,
                clamp: clamp_for(f.activation.map(|a| a.0), s_y, zp_y),
            },
        };
        let out = self.fresh(&format!("{out_value}.q"));
        self.out.nodes.push(Node {
            name: node.name.clone(),
            op: Op::QAdd(q),
            inputs: vec![aq, bq],
            outputs: vec![out.clone()],
        });
        self.ints.insert(out_value, (out, s_y, zp_y));
        Ok(())
    }
}
