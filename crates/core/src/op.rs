//! Operator definitions: the op set that ResNet-family models exported from PyTorch,
//! Keras/TensorFlow and weft's own zoo use.
//!
//! Attributes that ONNX moved into inputs over its opsets (Reshape's shape, Pad's pads,
//! Clip's bounds, Squeeze/Unsqueeze/ReduceMean axes) are inputs here too, in the newest
//! form; importers convert older forms into constant inputs.

use crate::DType;
use crate::mx::MxFormat;

/// How a convolution or pooling window is padded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// Explicit pads `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// Pad so that `out = ceil(in / stride)`, extra padding at the end.
    SameUpper,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

impl Padding {
    pub const ZERO: Padding = Padding::Explicit([0; 4]);
}

/// An activation fused into the op that produces its input.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    Relu,
    /// Clip to `[min, max]` (ReLU6 is `Clip(0, 6)`).
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Relu => v.max(0.0),
            Activation::Clip { min, max } => v.max(min).min(max),
        }
    }
}

/// 2-D convolution. Inputs: X `[N,C,H,W]`, W `[M,C/group,kH,kW]`, optional B `[M]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    /// `[kH, kW]`; `None` means taken from the weight shape.
    pub kernel_shape: Option<[usize; 2]>,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
    pub group: usize,
    /// Set by the fusion pass.
    pub activation: Option<Activation>,
}

impl Default for Conv {
    fn default() -> Self {
        Conv {
            kernel_shape: None,
            strides: [1, 1],
            dilations: [1, 1],
            padding: Padding::ZERO,
            group: 1,
            activation: None,
        }
    }
}

/// Max or average pooling over a 2-D window. Input X `[N,C,H,W]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    pub kernel_shape: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
    pub ceil_mode: bool,
    /// AveragePool only: whether padded cells count in the divisor.
    pub count_include_pad: bool,
}

/// General matrix multiply `alpha * A' * B' + beta * C`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Default for Gemm {
    fn default() -> Self {
        Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }
    }
}

/// Element-wise float functions (ONNX's activation and math ops of one input), computed
/// in f32 as ONNX defines them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Unary {
    Sigmoid,
    Tanh,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    LeakyRelu { alpha: f32 },
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    Softplus,
    Softsign,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
}

impl Unary {
    /// The ONNX op type.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Elu { .. } => "Elu",
            Unary::Selu { .. } => "Selu",
            Unary::Softplus => "Softplus",
            Unary::Softsign => "Softsign",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Sqrt => "Sqrt",
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Reciprocal => "Reciprocal",
            Unary::Floor => "Floor",
            Unary::Ceil => "Ceil",
        }
    }

    /// `f(x)`.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Sigmoid => {
                // stable for large |x|
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Unary::Tanh => x.tanh(),
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Unary::Elu { alpha } => {
                if x < 0.0 {
                    alpha * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Unary::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * (alpha * x.exp() - alpha)
                } else {
                    gamma * x
                }
            }
            Unary::Softplus => {
                // ln(1 + e^x) without overflow
                if x > 20.0 { x } else { x.exp().ln_1p() }
            }
            Unary::Softsign => x / (1.0 + x.abs()),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Reciprocal => 1.0 / x,
            Unary::Floor => x.floor(),
            Unary::Ceil => x.ceil(),
        }
    }
}

/// Pad modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Pad's `pads` (begins then ends) over every dim of a rank-`rank` tensor, from pads given
/// for `axes` only (opset 18's axes input; negative axes count from the end).
pub fn full_pads(pads: &[i64], axes: Option<&[i64]>, rank: usize) -> Result<Vec<i64>, String> {
    let Some(axes) = axes else {
        if pads.len() != 2 * rank {
            return Err(format!(
                "{} pads for a rank-{rank} input, expected {}",
                pads.len(),
                2 * rank
            ));
        }
        return Ok(pads.to_vec());
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "{} pads for {} axes, expected {}",
            pads.len(),
            axes.len(),
            2 * axes.len()
        ));
    }
    let mut out = vec![0; 2 * rank];
    let mut seen = vec![false; rank];
    for (i, &a) in axes.iter().enumerate() {
        let d =
            crate::shape::normalize_axis(a, rank).ok_or_else(|| format!("axis {a} out of range for rank {rank}"))?;
        if std::mem::replace(&mut seen[d], true) {
            return Err(format!("axis {a} given twice"));
        }
        out[d] = pads[i];
        out[d + rank] = pads[i + axes.len()];
    }
    Ok(out)
}

/// An operator with its attributes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    Conv(Conv),
    /// Inputs: X, scale, bias, mean, var.
    BatchNormalization {
        epsilon: f32,
    },
    Relu,
    /// An element-wise float function of one input (Sigmoid, HardSwish, Exp, ...).
    Unary(Unary),
    /// Inputs: X, optional min, optional max.
    Clip,
    Add,
    Sub,
    Mul,
    Div,
    MaxPool(Pool),
    AveragePool(Pool),
    GlobalAveragePool,
    GlobalMaxPool,
    Flatten {
        axis: i64,
    },
    /// Inputs: data, shape.
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// Inputs: data, optional axes.
    Squeeze,
    /// Inputs: data, axes.
    Unsqueeze,
    Gemm(Gemm),
    MatMul,
    /// `legacy` is the opset < 13 meaning: coerce to 2-D at `axis`, softmax each row.
    Softmax {
        axis: i64,
        legacy: bool,
    },
    Identity,
    /// Inputs: data, pads, optional constant value.
    Pad {
        mode: PadMode,
    },
    Concat {
        axis: i64,
    },
    /// Inputs: data, optional axes.
    ReduceMean {
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// The dims `start..end` of the input's shape (negative values count from the end,
    /// then clamped to the rank).
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    Cast {
        to: DType,
        /// To the 8-bit floats: out-of-range values (infinities too) become the largest
        /// finite value rather than infinity or NaN.
        #[serde(default = "yes")]
        saturate: bool,
        /// To E8M0: how values that are not powers of two round.
        #[serde(default)]
        round: crate::minifloat::RoundMode,
    },

    // ---- Integer ops (the quantized graph; arithmetic defined in `crate::quant`) ----
    /// f32 to u8: `clamp(round_half_even(x / scale) + zero_point, 0, 255)`.
    Quantize {
        scale: f32,
        zero_point: i32,
    },
    /// u8 to f32: `(q - zero_point) * scale`.
    Dequantize {
        scale: f32,
        zero_point: i32,
    },
    /// Integer convolution. Inputs: x u8, w i8 `[M,C/g,kH,kW]`, bias i32 `[M]`,
    /// multiplier i32 `[M]`, shift i32 `[M]`, and with a fused residual: r u8 and its
    /// multiplier i64 `[M]`.
    QConv(QConv),
    /// Integer fully connected layer. Inputs: x u8 `[N,K]`, w i8 `[M,K]`, bias i32 `[M]`,
    /// multiplier i32 `[M]`, shift i32 `[M]`.
    QGemm(QGemm),
    /// Integer elementwise add of two u8 tensors (with broadcasting).
    QAdd(QAdd),
    /// Integer concatenation of u8 tensors, each requantized to the output's parameters.
    QConcat(QConcat),
    /// Max pooling on u8; output shares the input's scale and zero point.
    QMaxPool(Pool),
    /// Average pooling on u8; output shares the input's scale and zero point.
    QAveragePool {
        pool: Pool,
        zero_point: i32,
    },
    /// Mean over axes (global average pooling) on u8, requantized:
    /// `clamp(zp_out + rshift_round(sum(x - zp_x) * multiplier, shift))` where the
    /// multiplier folds `s_x / (s_out * count)`. Input 1 holds the axes, as in ReduceMean;
    /// none means every axis after the first two.
    QMean(QMean),

    // ---- ONNX quantized ops, as pre-quantized models carry them (lowered by weft-quant) ----
    /// Inputs: x, y_scale, optional y_zero_point.
    QuantizeLinear {
        axis: i64,
    },
    /// Inputs: x, x_scale, optional x_zero_point.
    DequantizeLinear {
        axis: i64,
    },
    /// Inputs: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, optional bias.
    QLinearConv(Conv),
    /// Inputs: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
    QLinearMatMul,
    /// Inputs: a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp.
    QLinearAdd,
    /// com.microsoft QGemm. Inputs: a, a_scale, a_zp, b, b_scale, b_zp, optional c (i32),
    /// y_scale, y_zp.
    QLinearGemm {
        alpha: f32,
        trans_b: bool,
    },
    /// Inputs: x, x_scale, x_zp, y_scale, y_zp.
    QLinearGlobalAveragePool,

    // ---- MX block floating point (arithmetic in `crate::mx`) ----
    /// Convolution with MX weights. Inputs: x f32 `[N,C,H,W]`, weight element codes u8
    /// `[M,C/g,kH,kW]`, weight scale codes u8 `[M,ceil(C/g/32),kH,kW]` (blocks along the
    /// input channels of a group), optional bias f32 `[M]`.
    MxConv(MxConv),
    /// Fully connected layer with MX weights. Inputs: x f32 `[N,K]`, weight element codes u8
    /// `[M,K]`, weight scale codes u8 `[M,ceil(K/32)]`, optional bias f32 `[M]`.
    MxGemm(MxGemm),
}

/// What an MX layer converts its input activations to before the dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MxActivations {
    /// Blocks of 32 along the input channels (of each group), in this MX format.
    Mx(MxFormat),
    /// Each value rounded to f16 (products and sums in f32).
    F16,
}

impl std::fmt::Display for MxActivations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MxActivations::Mx(m) => m.fmt(f),
            MxActivations::F16 => f.write_str("f16"),
        }
    }
}

/// MX convolution attributes: the geometry (with its fused activation) and the formats.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MxConv {
    pub conv: Conv,
    pub weights: MxFormat,
    pub activations: MxActivations,
}

/// MX fully connected attributes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MxGemm {
    pub weights: MxFormat,
    pub activations: MxActivations,
    pub activation: Option<Activation>,
}

/// Requantization parameters shared by the integer ops: the output zero point and the
/// clamp range (ReLU and Clip are folded into `clamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QOut {
    pub zero_point: i32,
    pub clamp: [i32; 2],
}

/// Integer convolution attributes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QConv {
    /// Geometry; `activation` is unused (folded into `out.clamp`).
    pub conv: Conv,
    pub x_zero_point: i32,
    /// Zero point of the fused residual input, when there is one.
    pub residual_zero_point: Option<i32>,
    pub out: QOut,
}

/// Integer mean attributes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QMean {
    pub keepdims: bool,
    pub x_zero_point: i32,
    pub multiplier: i32,
    pub shift: i32,
    pub out: QOut,
}

/// Integer fully connected attributes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QGemm {
    pub x_zero_point: i32,
    pub out: QOut,
}

/// Integer add: `out = zp + ((a - zp_a) * a_mult + (b - zp_b) * b_mult + 2^(shift-1)) >> shift`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QAdd {
    pub a_zero_point: i32,
    pub b_zero_point: i32,
    pub a_multiplier: i32,
    pub b_multiplier: i32,
    pub shift: i32,
    pub out: QOut,
}

/// Integer concatenation along `axis`: input `i`'s values become
/// `clamp(zp + rshift_round((x - zp_i) * mult_i, shift_i), 0, 255)` (`inputs[i]` is
/// `[zp_i, mult_i, shift_i]`; equal parameters give `[zp, 2^30, 30]`, the identity).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QConcat {
    pub axis: i64,
    pub inputs: Vec<[i32; 3]>,
    pub zero_point: i32,
}

impl Op {
    /// The ONNX-style op type name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::Unary(u) => u.name(),
            Op::Clip => "Clip",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Softmax { .. } => "Softmax",
            Op::Identity => "Identity",
            Op::Pad { .. } => "Pad",
            Op::Concat { .. } => "Concat",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Cast { .. } => "Cast",
            Op::Quantize { .. } => "Quantize",
            Op::Dequantize { .. } => "Dequantize",
            Op::QConv(_) => "QConv",
            Op::QGemm(_) => "QGemm",
            Op::QAdd(_) => "QAdd",
            Op::QConcat(_) => "QConcat",
            Op::QMaxPool(_) => "QMaxPool",
            Op::QAveragePool { .. } => "QAveragePool",
            Op::QMean(_) => "QMean",
            Op::QuantizeLinear { .. } => "QuantizeLinear",
            Op::DequantizeLinear { .. } => "DequantizeLinear",
            Op::QLinearConv(_) => "QLinearConv",
            Op::QLinearMatMul => "QLinearMatMul",
            Op::QLinearAdd => "QLinearAdd",
            Op::QLinearGemm { .. } => "QGemm",
            Op::QLinearGlobalAveragePool => "QLinearGlobalAveragePool",
            Op::MxConv(_) => "MxConv",
            Op::MxGemm(_) => "MxGemm",
        }
    }

    /// Multiply-accumulates per output element, given the input shapes, for ops that do
    /// them (convolution and matrix products); used by `inspect`.
    pub fn macs(&self, input_shapes: &[Vec<usize>], output_shape: &[usize]) -> u64 {
        let out: u64 = output_shape.iter().map(|&d| d as u64).product();
        match self {
            Op::Conv(Conv { group, .. })
            | Op::QConv(QConv {
                conv: Conv { group, .. },
                ..
            })
            | Op::MxConv(MxConv {
                conv: Conv { group, .. },
                ..
            }) => match input_shapes.get(1) {
                Some(w) if w.len() == 4 => out * (w[1] * w[2] * w[3]) as u64 * u64::from(*group > 0),
                _ => 0,
            },
            Op::Gemm(g) => match input_shapes.first() {
                Some(a) if a.len() == 2 => out * (if g.trans_a { a[0] } else { a[1] }) as u64,
                _ => 0,
            },
            Op::QGemm(_) | Op::MxGemm(_) => match input_shapes.first() {
                Some(a) if a.len() == 2 => out * a[1] as u64,
                _ => 0,
            },
            Op::MatMul => match input_shapes.first() {
                Some(a) if !a.is_empty() => out * a[a.len() - 1] as u64,
                _ => 0,
            },
            _ => 0,
        }
    }
}

/// The range of dims a Shape node with `start` and `end` takes from a rank-`rank` shape.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> std::ops::Range<usize> {
    let r = rank as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (fix(start), fix(end.unwrap_or(r)));
    s..e.max(s)
}

impl Op {
    /// A saturating Cast to `to` (ONNX's defaults).
    pub fn cast(to: DType) -> Op {
        Op::Cast {
            to,
            saturate: true,
            round: crate::minifloat::RoundMode::Up,
        }
    }
}

fn yes() -> bool {
    true
}
