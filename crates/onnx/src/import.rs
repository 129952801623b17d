//! ONNX ModelProto to weft Graph.

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use weft_core::minifloat::RoundMode;
use weft_core::op::{Conv, Gemm, PadMode, Padding, Pool, Unary};
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};

use crate::attrs::Attrs;
use crate::proto::tensor_proto::DataType as Dt;
use crate::proto::{ModelProto, NodeProto, ValueInfoProto, type_proto};
use crate::tensor::{exact_weft_type, from_proto, type_name};
use crate::{OPSET_RANGE, OnnxError, Result};

/// An imported model: the graph plus what the file said about itself.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub opset: i64,
    pub producer: String,
    pub metadata: Vec<(String, String)>,
}

/// Loads an ONNX file; external data files resolve relative to its directory.
pub fn load(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes, path.parent())
}

/// Imports an ONNX model from its bytes. The graph comes back sorted and shape-checked
/// (symbolic dims taken as 1).
pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model> {
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or_else(|| OnnxError::Invalid("no default-domain opset is imported".into()))?;
    if !OPSET_RANGE.contains(&opset) {
        return Err(OnnxError::UnsupportedModel(format!(
            "opset {opset} is not supported (weft reads opsets {} to {})",
            OPSET_RANGE.start(),
            OPSET_RANGE.end()
        )));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Invalid("the model has no graph".into()))?;
    let mut graph = Graph {
        name: g.name().to_string(),
        ..Default::default()
    };
    for t in &g.initializer {
        if t.name().is_empty() {
            return Err(OnnxError::Invalid("an initializer has no name".into()));
        }
        graph
            .initializers
            .insert(t.name().to_string(), from_proto(t, base_dir)?);
    }
    if !g.sparse_initializer.is_empty() {
        return Err(OnnxError::UnsupportedModel(
            "sparse initializers are not supported".into(),
        ));
    }
    for vi in &g.input {
        if !graph.initializers.contains_key(vi.name()) {
            graph.inputs.push(value_info(vi, true)?);
        }
    }
    for vi in &g.output {
        graph.outputs.push(value_info(vi, false)?);
    }
    let mut ctx = Importer {
        graph: &mut graph,
        opset,
        base_dir,
        narrowed_doubles: narrowed_doubles(g),
        double_casts: Vec::new(),
    };
    for (idx, node) in g.node.iter().enumerate() {
        ctx.node(idx, node)?;
    }
    let double_casts = std::mem::take(&mut ctx.double_casts);
    graph.sort()?;
    let known = weft_core::shape::infer_known(&graph)?;
    // a float64 value held as float32 is exact only when its source fits float32 exactly
    // (int64 would round twice: to float64, then to float32)
    for (node, input) in double_casts {
        if known.values.get(&input).is_none_or(|(dt, _)| *dt == DType::I64) {
            return Err(OnnxError::Unsupported {
                node,
                op_type: "Cast".into(),
                opset,
                what: "Cast to DOUBLE is not supported (only of a value float32 holds exactly, cast straight back to FLOAT or FLOAT16)".into(),
            });
        }
    }
    Ok(Model {
        graph,
        opset,
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        metadata: model
            .metadata_props
            .iter()
            .map(|p| (p.key().to_string(), p.value().to_string()))
            .collect(),
    })
}

fn value_info(vi: &ValueInfoProto, need_shape: bool) -> Result<ValueInfo> {
    let name = vi.name();
    if name.is_empty() {
        return Err(OnnxError::Invalid("a graph input or output has no name".into()));
    }
    let tensor_type = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some(t),
        None if !need_shape => None,
        _ => {
            return Err(OnnxError::UnsupportedModel(format!(
                "'{name}' is not a tensor (sequences, maps and optionals are not supported)"
            )));
        }
    };
    let dtype = match tensor_type {
        Some(t) => exact_weft_type(t.elem_type()).ok_or_else(|| {
            OnnxError::UnsupportedModel(format!(
                "'{name}' has element type {}, which is not supported",
                type_name(t.elem_type())
            ))
        })?,
        None => DType::F32,
    };
    let shape = match tensor_type.and_then(|t| t.shape.as_ref()) {
        Some(s) => s
            .dim
            .iter()
            .map(|d| match d.value {
                Some(crate::proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => Some(v as usize),
                _ => None,
            })
            .collect(),
        None if need_shape => {
            return Err(OnnxError::Invalid(format!("input '{name}' has no shape")));
        }
        None => vec![],
    };
    Ok(ValueInfo::new(name, dtype, shape))
}

struct Importer<'g> {
    graph: &'g mut Graph,
    opset: i64,
    base_dir: Option<&'g Path>,
    /// Outputs of `Cast` to DOUBLE that only `Cast`s back to FLOAT or FLOAT16 read.
    narrowed_doubles: HashSet<String>,
    /// (node, input) of each such Cast imported, checked once the input's dtype is known.
    double_casts: Vec<(String, String)>,
}

/// The outputs of the graph's `Cast`s to DOUBLE whose every reader is a `Cast` to FLOAT or
/// FLOAT16 (a round trip through float64, as some exporters write): weft holds those values
/// as float32, which gives the same result.
fn narrowed_doubles(g: &crate::proto::GraphProto) -> HashSet<String> {
    let to = |n: &NodeProto| n.attribute.iter().find(|a| a.name() == "to").map(|a| a.i());
    let is_cast = |n: &NodeProto| n.op_type() == "Cast" && matches!(n.domain(), "" | "ai.onnx");
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    g.node
        .iter()
        .filter(|n| is_cast(n) && to(n) == Some(Dt::Double as i64))
        .filter_map(|n| n.output.first())
        .filter(|o| !outputs.contains(o.as_str()))
        .filter(|o| {
            let readers: Vec<&NodeProto> = g.node.iter().filter(|r| r.input.contains(o)).collect();
            !readers.is_empty()
                && readers
                    .iter()
                    .all(|r| is_cast(r) && matches!(to(r), Some(t) if t == Dt::Float as i64 || t == Dt::Float16 as i64))
        })
        .cloned()
        .collect()
}

impl Importer<'_> {
    /// Adds a constant and returns its name.
    fn constant(&mut self, stem: &str, t: Tensor) -> String {
        let name = self.graph.fresh_name(stem);
        self.graph.initializers.insert(name.clone(), t);
        name
    }

    fn node(&mut self, idx: usize, n: &NodeProto) -> Result<()> {
        let name = if n.name().is_empty() {
            format!("{}_{idx}", n.op_type())
        } else {
            n.name().to_string()
        };
        let a = Attrs {
            node: n,
            name: name.clone(),
            opset: self.opset,
        };
        let microsoft_ok =
            n.domain() == "com.microsoft" && matches!(n.op_type(), "QLinearAdd" | "QLinearGlobalAveragePool" | "QGemm");
        if !matches!(n.domain(), "" | "ai.onnx") && !microsoft_ok {
            return Err(a.unsupported(format!("operators of domain '{}' are not supported", n.domain())));
        }
        let mut inputs: Vec<String> = n.input.clone();
        let outputs: Vec<String> = n.output.clone();
        if outputs.first().is_none_or(|o| o.is_empty()) {
            return Err(a.invalid("the node has no output"));
        }
        let v = self.opset;
        let single_output = |a: &Attrs| -> Result<()> {
            if outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(a.unsupported("outputs after the first are not supported"));
            }
            Ok(())
        };
        let op = match n.op_type() {
            "Constant" => {
                let t = if let Some(t) = a.tensor("value")? {
                    from_proto(t, self.base_dir)?
                } else if a.has("value_float") {
                    Tensor::f32_scalar(a.float("value_float", 0.0)?)
                } else if let Some(f) = a.floats("value_floats")? {
                    Tensor::from_f32(&[f.len()], f)?
                } else if a.has("value_int") {
                    Tensor::from_i64(&[], vec![a.int("value_int", 0)?])?
                } else if let Some(i) = a.ints("value_ints")? {
                    Tensor::i64_vec(&i)
                } else {
                    return Err(
                        a.unsupported("a Constant other than value, value_float(s) or value_int(s) is not supported")
                    );
                };
                if self.graph.initializers.insert(outputs[0].clone(), t).is_some() {
                    return Err(OnnxError::Graph(weft_core::CoreError::DuplicateValue(
                        outputs[0].clone(),
                    )));
                }
                return Ok(());
            }
            "Conv" => Op::Conv(conv(&a)?),
            "BatchNormalization" => {
                if a.int("spatial", 1)? != 1 || a.int("training_mode", 0)? != 0 {
                    return Err(a.unsupported(
                        "training mode (or spatial=0) is not supported: only inference-mode BatchNormalization",
                    ));
                }
                Op::BatchNormalization {
                    epsilon: a.float("epsilon", 1e-5)?,
                }
            }
            "Relu" => Op::Relu,
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            "Tanh" => Op::Unary(Unary::Tanh),
            "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
                alpha: a.float("alpha", 0.2)?,
                beta: a.float("beta", 0.5)?,
            }),
            "HardSwish" => Op::Unary(Unary::HardSwish),
            "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            }),
            "Elu" => Op::Unary(Unary::Elu {
                alpha: a.float("alpha", 1.0)?,
            }),
            "Selu" => Op::Unary(Unary::Selu {
                alpha: a.float("alpha", 1.673_263_2)?,
                gamma: a.float("gamma", 1.050_701)?,
            }),
            "Softplus" => Op::Unary(Unary::Softplus),
            "Softsign" => Op::Unary(Unary::Softsign),
            "Exp" => Op::Unary(Unary::Exp),
            "Log" => Op::Unary(Unary::Log),
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Neg" => Op::Unary(Unary::Neg),
            "Abs" => Op::Unary(Unary::Abs),
            "Reciprocal" => Op::Unary(Unary::Reciprocal),
            "Floor" => Op::Unary(Unary::Floor),
            "Ceil" => Op::Unary(Unary::Ceil),
            "Clip" => {
                if v < 11 {
                    let min = self.constant(&format!("{name}.min"), Tensor::f32_scalar(a.float("min", f32::MIN)?));
                    let max = self.constant(&format!("{name}.max"), Tensor::f32_scalar(a.float("max", f32::MAX)?));
                    inputs = vec![inputs.first().cloned().unwrap_or_default(), min, max];
                }
                Op::Clip
            }
            "Add" => Op::Add,
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            "Div" => Op::Div,
            "MaxPool" => {
                single_output(&a)?;
                if a.int("storage_order", 0)? != 0 {
                    return Err(a.unsupported("column-major storage_order is not supported"));
                }
                Op::MaxPool(pool(&a, false)?)
            }
            "AveragePool" => Op::AveragePool(pool(&a, true)?),
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "GlobalMaxPool" => Op::GlobalMaxPool,
            "Flatten" => Op::Flatten {
                axis: a.int("axis", 1)?,
            },
            "Reshape" => {
                if v < 5 {
                    let shape = a.ints("shape")?.ok_or_else(|| a.invalid("Reshape without shape"))?;
                    let s = self.constant(&format!("{name}.shape"), Tensor::i64_vec(&shape));
                    inputs.truncate(1);
                    inputs.push(s);
                }
                Op::Reshape {
                    allowzero: a.int("allowzero", 0)? != 0,
                }
            }
            "Transpose" => Op::Transpose {
                perm: a
                    .ints("perm")?
                    .map(|p| {
                        p.iter()
                            .map(|&x| usize::try_from(x).map_err(|_| a.invalid(format!("negative perm {x}"))))
                            .collect::<Result<Vec<_>>>()
                    })
                    .transpose()?,
            },
            "Squeeze" | "Unsqueeze" => {
                if v < 13
                    && let Some(axes) = a.ints("axes")?
                {
                    let s = self.constant(&format!("{name}.axes"), Tensor::i64_vec(&axes));
                    inputs.truncate(1);
                    inputs.push(s);
                }
                if n.op_type() == "Squeeze" {
                    Op::Squeeze
                } else {
                    Op::Unsqueeze
                }
            }
            "Gemm" => Op::Gemm(Gemm {
                alpha: a.float("alpha", 1.0)?,
                beta: a.float("beta", 1.0)?,
                trans_a: a.int("transA", 0)? != 0,
                trans_b: a.int("transB", 0)? != 0,
            }),
            "MatMul" => Op::MatMul,
            "Softmax" => {
                if v < 13 {
                    Op::Softmax {
                        axis: a.int("axis", 1)?,
                        legacy: true,
                    }
                } else {
                    Op::Softmax {
                        axis: a.int("axis", -1)?,
                        legacy: false,
                    }
                }
            }
            "Identity" => Op::Identity,
            "Dropout" => {
                single_output(&a)?;
                if let Some(mode) = inputs.get(2).filter(|s| !s.is_empty()) {
                    let inference = self
                        .graph
                        .initializers
                        .get(mode)
                        .is_some_and(|t| t.to_i64_vec().iter().all(|&v| v == 0));
                    if !inference {
                        return Err(a.unsupported(
                            "training mode (a training_mode input that is not a constant false) is not supported",
                        ));
                    }
                }
                inputs.truncate(1);
                Op::Identity
            }
            "Pad" => {
                let mode = match a.string("mode")?.as_deref().unwrap_or("constant") {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    "wrap" => PadMode::Wrap,
                    other => return Err(a.unsupported(format!("pad mode '{other}' is not supported"))),
                };
                if v < 11 {
                    let pads = a.ints("pads")?.ok_or_else(|| a.invalid("Pad without pads"))?;
                    let p = self.constant(&format!("{name}.pads"), Tensor::i64_vec(&pads));
                    let value = self.constant(&format!("{name}.value"), Tensor::f32_scalar(a.float("value", 0.0)?));
                    inputs = vec![inputs.first().cloned().unwrap_or_default(), p, value];
                }
                Op::Pad { mode }
            }
            "Concat" => Op::Concat {
                axis: a.int("axis", 0).and_then(|x| {
                    if a.has("axis") {
                        Ok(x)
                    } else {
                        Err(a.invalid("Concat without axis"))
                    }
                })?,
            },
            "ReduceMean" => {
                if v < 18
                    && let Some(axes) = a.ints("axes")?
                {
                    let s = self.constant(&format!("{name}.axes"), Tensor::i64_vec(&axes));
                    inputs.truncate(1);
                    inputs.push(s);
                }
                Op::ReduceMean {
                    keepdims: a.int("keepdims", 1)? != 0,
                    noop_with_empty_axes: a.int("noop_with_empty_axes", 0)? != 0,
                }
            }
            "Shape" => Op::Shape {
                start: a.int("start", 0)?,
                end: if a.has("end") { Some(a.int("end", 0)?) } else { None },
            },
            "Gather" => Op::Gather {
                axis: a.int("axis", 0)?,
            },
            "Cast" if a.int("to", 0)? == Dt::Double as i64 && self.narrowed_doubles.contains(&outputs[0]) => {
                self.double_casts
                    .push((name.clone(), inputs.first().cloned().unwrap_or_default()));
                Op::cast(DType::F32)
            }
            "Cast" => {
                let to = a.int("to", 0)?;
                let dtype = i32::try_from(to)
                    .ok()
                    .and_then(exact_weft_type)
                    .ok_or_else(|| a.unsupported(format!("Cast to {} is not supported", type_name(to as i32))))?;
                let round = match a.string("round_mode")?.as_deref() {
                    None | Some("up") => RoundMode::Up,
                    Some("down") => RoundMode::Down,
                    Some("nearest") => RoundMode::Nearest,
                    Some(other) => {
                        return Err(a.invalid(format!("round_mode '{other}' is not one of up, down, nearest")));
                    }
                };
                Op::Cast {
                    to: dtype,
                    saturate: a.int("saturate", 1)? != 0,
                    round,
                }
            }
            "QuantizeLinear" => {
                if a.int("saturate", 1)? != 1 || a.has("block_size") && a.int("block_size", 0)? != 0 {
                    return Err(a.unsupported("blocked or non-saturating quantization is not supported"));
                }
                if a.has("precision") && a.int("precision", 0)? != 0 {
                    return Err(a.unsupported("the precision attribute is not supported"));
                }
                let out_type = a.int("output_dtype", 0)?;
                if out_type != 0 {
                    let dt = i32::try_from(out_type).ok().and_then(exact_weft_type);
                    let zp = match dt {
                        Some(dt) if quantized_type(dt) => {
                            Tensor::wrap_i64(weft_core::tensor::array_from(&[], vec![0i64])?, dt)
                        }
                        _ => {
                            return Err(a.unsupported(format!(
                                "quantizing to {} is not supported (only 8-, 16-, 4- and 2-bit integers and 8- and 4-bit floats)",
                                type_name(out_type as i32)
                            )));
                        }
                    };
                    if inputs.get(2).is_none_or(|s| s.is_empty()) {
                        let z = self.constant(&format!("{name}.zero_point"), zp);
                        inputs.resize(2, String::new());
                        inputs.push(z);
                    }
                }
                Op::QuantizeLinear {
                    axis: a.int("axis", 1)?,
                }
            }
            "DequantizeLinear" => {
                if a.has("block_size") && a.int("block_size", 0)? != 0 {
                    return Err(a.unsupported("blocked quantization is not supported"));
                }
                Op::DequantizeLinear {
                    axis: a.int("axis", 1)?,
                }
            }
            "QLinearConv" => Op::QLinearConv(conv(&a)?),
            "QLinearMatMul" => Op::QLinearMatMul,
            "QGemm" => {
                if a.int("transA", 0)? != 0 {
                    return Err(a.unsupported("transposed A is not supported"));
                }
                if inputs.get(7).is_none_or(|s| s.is_empty()) {
                    return Err(a.unsupported("a float output (no y_scale) is not supported"));
                }
                Op::QLinearGemm {
                    alpha: a.float("alpha", 1.0)?,
                    trans_b: a.int("transB", 0)? != 0,
                }
            }
            "QLinearAdd" => Op::QLinearAdd,
            "QLinearGlobalAveragePool" => {
                if a.int("channels_last", 0)? != 0 {
                    return Err(a.unsupported("channels_last is not supported"));
                }
                Op::QLinearGlobalAveragePool
            }
            other => return Err(a.unsupported(format!("operator '{other}' is not supported"))),
        };
        let outputs = if matches!(op, Op::BatchNormalization { .. }) {
            single_output(&a)?;
            outputs[..1].to_vec()
        } else {
            outputs
        };
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            outputs,
        });
        Ok(())
    }
}

/// Convolution attributes (Conv and QLinearConv share them).
fn conv(a: &Attrs) -> Result<Conv> {
    let kernel = a.usizes("kernel_shape", 2)?;
    Ok(Conv {
        kernel_shape: kernel.map(|k| [k[0], k[1]]),
        strides: a.pair("strides", 1)?,
        dilations: a.pair("dilations", 1)?,
        padding: padding(a)?,
        group: usize::try_from(a.int("group", 1)?)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| a.invalid("group must be positive"))?,
        activation: None,
    })
}

fn padding(a: &Attrs) -> Result<Padding> {
    match a.string("auto_pad")?.as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => Ok(match a.usizes("pads", 4)? {
            Some(p) => Padding::Explicit([p[0], p[1], p[2], p[3]]),
            None => Padding::ZERO,
        }),
        "SAME_UPPER" => Ok(Padding::SameUpper),
        "SAME_LOWER" => Ok(Padding::SameLower),
        "VALID" => Ok(Padding::Valid),
        other => Err(a.invalid(format!(
            "auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
        ))),
    }
}

fn pool(a: &Attrs, average: bool) -> Result<Pool> {
    let k = a
        .usizes("kernel_shape", 2)?
        .ok_or_else(|| a.unsupported("pooling without kernel_shape is not supported (only 2-D pooling)"))?;
    Ok(Pool {
        kernel_shape: [k[0], k[1]],
        strides: a.pair("strides", 1)?,
        dilations: a.pair("dilations", 1)?,
        padding: padding(a)?,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
        count_include_pad: average && a.int("count_include_pad", 0)? != 0,
    })
}

/// The types QuantizeLinear may produce.
fn quantized_type(dt: DType) -> bool {
    matches!(
        dt,
        DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::U4 | DType::I4 | DType::U2 | DType::I2
    ) || (dt.mini().is_some() && dt != DType::F8E8M0)
}
