//! weft Graph to ONNX ModelProto (opset 17), loadable by onnxruntime.

use prost::Message;
use weft_core::op::{Activation, Conv, PadMode, Padding, Pool, Unary};
use weft_core::{Graph, Node, Op, Tensor, ValueInfo};

use crate::proto::attribute_proto::AttributeType as At;
use crate::proto::tensor_shape_proto::{Dimension, dimension};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    type_proto,
};
use crate::tensor::{onnx_type, to_proto};
use crate::{OnnxError, Result};

/// The default-domain opset weft writes.
pub const EXPORT_OPSET: i64 = 17;

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(At::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(At::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}
fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(At::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(At::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}
fn us(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

fn padding_attrs(p: &Padding, out: &mut Vec<AttributeProto>) {
    match p {
        Padding::Explicit(pads) => out.push(ints("pads", &us(pads))),
        Padding::SameUpper => out.push(string("auto_pad", "SAME_UPPER")),
        Padding::SameLower => out.push(string("auto_pad", "SAME_LOWER")),
        Padding::Valid => out.push(string("auto_pad", "VALID")),
    }
}

fn conv_attrs(c: &Conv) -> Vec<AttributeProto> {
    let mut a = vec![
        ints("strides", &us(&c.strides)),
        ints("dilations", &us(&c.dilations)),
        int("group", c.group as i64),
    ];
    if let Some(k) = c.kernel_shape {
        a.push(ints("kernel_shape", &us(&k)));
    }
    padding_attrs(&c.padding, &mut a);
    a
}

fn pool_attrs(p: &Pool, average: bool) -> Vec<AttributeProto> {
    let mut a = vec![
        ints("kernel_shape", &us(&p.kernel_shape)),
        ints("strides", &us(&p.strides)),
        int("ceil_mode", i64::from(p.ceil_mode)),
    ];
    if !average {
        a.push(ints("dilations", &us(&p.dilations)));
    } else {
        a.push(int("count_include_pad", i64::from(p.count_include_pad)));
    }
    padding_attrs(&p.padding, &mut a);
    a
}

struct Writer<'g> {
    graph: &'g Graph,
    nodes: Vec<NodeProto>,
    extra: Vec<(String, Tensor)>,
}

impl Writer<'_> {
    fn emit(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[String],
        outputs: &[String],
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.to_vec(),
            output: outputs.to_vec(),
            name: Some(name.to_string()),
            op_type: Some(op_type.to_string()),
            attribute,
            ..Default::default()
        });
    }

    fn fresh(&self, stem: &str) -> String {
        let taken = |c: &str| {
            self.graph.initializers.contains_key(c)
                || self.extra.iter().any(|(n, _)| n == c)
                || self.nodes.iter().any(|n| n.output.iter().any(|o| o == c))
        };
        let mut name = stem.to_string();
        let mut i = 1;
        while taken(&name) || self.graph.nodes.iter().any(|n| n.outputs.contains(&name)) {
            name = format!("{stem}_{i}");
            i += 1;
        }
        name
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let (ins, outs) = (&n.inputs, &n.outputs);
        match &n.op {
            Op::Conv(c) => match c.activation {
                None => self.emit(&n.name, "Conv", ins, outs, conv_attrs(c)),
                Some(act) => {
                    let mid = self.fresh(&format!("{}.preact", n.name));
                    self.emit(&n.name, "Conv", ins, std::slice::from_ref(&mid), conv_attrs(c));
                    match act {
                        Activation::Relu => self.emit(&format!("{}.relu", n.name), "Relu", &[mid], outs, vec![]),
                        Activation::Clip { min, max } => {
                            let lo = self.fresh(&format!("{}.min", n.name));
                            let hi = self.fresh(&format!("{}.max", n.name));
                            self.extra.push((lo.clone(), Tensor::f32_scalar(min)));
                            self.extra.push((hi.clone(), Tensor::f32_scalar(max)));
                            self.emit(&format!("{}.clip", n.name), "Clip", &[mid, lo, hi], outs, vec![]);
                        }
                    }
                }
            },
            Op::BatchNormalization { epsilon } => self.emit(
                &n.name,
                "BatchNormalization",
                ins,
                outs,
                vec![float("epsilon", *epsilon)],
            ),
            Op::MaxPool(p) => self.emit(&n.name, "MaxPool", ins, outs, pool_attrs(p, false)),
            Op::AveragePool(p) => self.emit(&n.name, "AveragePool", ins, outs, pool_attrs(p, true)),
            Op::Flatten { axis } => self.emit(&n.name, "Flatten", ins, outs, vec![int("axis", *axis)]),
            Op::Reshape { allowzero } => self.emit(
                &n.name,
                "Reshape",
                ins,
                outs,
                vec![int("allowzero", i64::from(*allowzero))],
            ),
            Op::Transpose { perm } => self.emit(
                &n.name,
                "Transpose",
                ins,
                outs,
                perm.as_ref().map(|p| vec![ints("perm", &us(p))]).unwrap_or_default(),
            ),
            Op::Gemm(g) => self.emit(
                &n.name,
                "Gemm",
                ins,
                outs,
                vec![
                    float("alpha", g.alpha),
                    float("beta", g.beta),
                    int("transA", i64::from(g.trans_a)),
                    int("transB", i64::from(g.trans_b)),
                ],
            ),
            Op::Softmax { axis, legacy: false } => self.emit(&n.name, "Softmax", ins, outs, vec![int("axis", *axis)]),
            Op::Softmax { axis, legacy: true } => {
                // Opset < 13 meaning: softmax over the flattened trailing dims.
                let (shape, flat, soft) = (
                    self.fresh(&format!("{}.shape", n.name)),
                    self.fresh(&format!("{}.flat", n.name)),
                    self.fresh(&format!("{}.soft", n.name)),
                );
                self.emit(
                    &format!("{}.shape", n.name),
                    "Shape",
                    &ins[..1],
                    std::slice::from_ref(&shape),
                    vec![],
                );
                self.emit(
                    &format!("{}.flatten", n.name),
                    "Flatten",
                    &ins[..1],
                    std::slice::from_ref(&flat),
                    vec![int("axis", *axis)],
                );
                self.emit(
                    &n.name,
                    "Softmax",
                    &[flat],
                    std::slice::from_ref(&soft),
                    vec![int("axis", -1)],
                );
                self.emit(&format!("{}.reshape", n.name), "Reshape", &[soft, shape], outs, vec![]);
            }
            Op::Pad { mode } => {
                let m = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                    PadMode::Wrap => "wrap",
                };
                self.emit(&n.name, "Pad", ins, outs, vec![string("mode", m)]);
            }
            Op::Concat { axis } => self.emit(&n.name, "Concat", ins, outs, vec![int("axis", *axis)]),
            Op::ReduceMean {
                keepdims,
                noop_with_empty_axes,
            } => {
                // Opset 17 takes axes as an attribute.
                let mut attrs = vec![int("keepdims", i64::from(*keepdims))];
                match n.input(1) {
                    Some(axes) => {
                        let t = self.graph.initializers.get(axes).ok_or_else(|| {
                            OnnxError::Invalid(format!("node '{}': ReduceMean axes must be constant to export", n.name))
                        })?;
                        attrs.push(ints("axes", &t.to_i64_vec()));
                    }
                    None if *noop_with_empty_axes => {
                        self.emit(&n.name, "Identity", &ins[..1], outs, vec![]);
                        return Ok(());
                    }
                    None => {}
                }
                self.emit(&n.name, "ReduceMean", &ins[..1], outs, attrs);
            }
            Op::Gather { axis } => self.emit(&n.name, "Gather", ins, outs, vec![int("axis", *axis)]),
            Op::Unary(u) => {
                let attrs = match *u {
                    Unary::HardSigmoid { alpha, beta } => vec![float("alpha", alpha), float("beta", beta)],
                    Unary::LeakyRelu { alpha } | Unary::Elu { alpha } => vec![float("alpha", alpha)],
                    Unary::Selu { alpha, gamma } => vec![float("alpha", alpha), float("gamma", gamma)],
                    _ => vec![],
                };
                self.emit(&n.name, u.name(), ins, outs, attrs);
            }
            Op::Cast { to, .. } => self.emit(&n.name, "Cast", ins, outs, vec![int("to", i64::from(onnx_type(*to)))]),
            Op::Relu
            | Op::Clip
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::MatMul
            | Op::Identity
            | Op::Shape { start: 0, end: None } => self.emit(&n.name, n.op.name(), ins, outs, vec![]),
            Op::Shape { start, end } => {
                let mut attrs = vec![int("start", *start)];
                if let Some(e) = end {
                    attrs.push(int("end", *e));
                }
                self.emit(&n.name, n.op.name(), ins, outs, attrs)
            }
            Op::Quantize { .. }
            | Op::Dequantize { .. }
            | Op::QConv(_)
            | Op::QGemm(_)
            | Op::QAdd(_)
            | Op::QConcat(_)
            | Op::QMaxPool(_)
            | Op::QAveragePool { .. }
            | Op::QMean(_)
            | Op::QuantizeLinear { .. }
            | Op::DequantizeLinear { .. }
            | Op::QLinearConv(_)
            | Op::QLinearMatMul
            | Op::QLinearAdd
            | Op::QLinearGemm { .. }
            | Op::QLinearGlobalAveragePool
            | Op::MxConv(_)
            | Op::MxGemm(_) => {
                return Err(OnnxError::Invalid(format!(
                    "node '{}': {} is not exported; export the float graph",
                    n.name,
                    n.op.name()
                )));
            }
        }
        Ok(())
    }
}

fn value_info(v: &ValueInfo) -> ValueInfoProto {
    let dim = v
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(match d {
                Some(x) => dimension::Value::DimValue(*x as i64),
                None => dimension::Value::DimParam(if i == 0 { "N".into() } else { format!("d{i}") }),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(onnx_type(v.dtype)),
                shape: if v.shape.is_empty() && v.name.is_empty() {
                    None
                } else {
                    Some(TensorShapeProto { dim })
                },
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// Serializes a graph as an ONNX model (IR version 8, opset 17).
pub fn to_bytes(graph: &Graph) -> Result<Vec<u8>> {
    to_bytes_with_metadata(graph, &[])
}

/// Like [`to_bytes`], with `metadata_props` key/value pairs.
pub fn to_bytes_with_metadata(graph: &Graph, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let mut w = Writer {
        graph,
        nodes: Vec::new(),
        extra: Vec::new(),
    };
    for n in &graph.nodes {
        w.node(n)?;
    }
    let mut initializer: Vec<_> = graph.initializers.iter().map(|(name, t)| to_proto(name, t)).collect();
    initializer.extend(w.extra.iter().map(|(name, t)| to_proto(name, t)));
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        producer_name: Some("weft".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| crate::proto::StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        graph: Some(GraphProto {
            node: w.nodes,
            name: Some(if graph.name.is_empty() {
                "weft".into()
            } else {
                graph.name.clone()
            }),
            initializer,
            input: graph.inputs.iter().map(value_info).collect(),
            output: graph.outputs.iter().map(value_info).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// Writes a graph to an ONNX file.
pub fn write(graph: &Graph, path: &std::path::Path) -> Result<()> {
    std::fs::write(path, to_bytes(graph)?).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })
}
