//! The compile pipeline: optimize, then quantize (int8, with calibration or with a
//! pre-quantized model's own parameters), store as f16, or keep f32.

use std::collections::{BTreeMap, HashMap};

use weft_core::op::MxActivations;
use weft_core::{Graph, Tensor};
use weft_image::Preprocess;
use weft_quant::{Calibrator, IntValues, Method, QuantParams};
use weft_reference::Executor;

use crate::report::{Report, build_report};
use crate::{Package, Precision};

/// One calibration or evaluation batch: graph input name to tensor.
pub type Batch = HashMap<String, Tensor>;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Quant(#[from] weft_quant::QuantError),
    #[error(transparent)]
    Exec(#[from] weft_reference::ExecError),
    #[error(transparent)]
    Core(#[from] weft_core::CoreError),
    #[error("{0}")]
    Options(String),
}

/// What to compile and how.
#[derive(Debug)]
pub struct CompileOptions {
    pub name: String,
    pub precision: Precision,
    pub method: Method,
    /// Calibration batches (int8 without given parameters).
    pub calibration: Vec<Batch>,
    /// Parameters from a pre-quantized model; replaces calibration.
    pub given: Option<QuantParams>,
    /// Batches for the accuracy report; `None` writes no report.
    pub evaluation: Option<Vec<Batch>>,
    pub preprocess: Preprocess,
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// MX precisions: what the activations are converted to (`None`: the weights' format).
    pub mx_activations: Option<MxActivations>,
    /// MX precisions: the activations' format at the layers that read the network's input
    /// (`None`: the same as the other layers').
    pub mx_input_activations: Option<MxActivations>,
}

/// Compiles a float graph into a package (and an accuracy report when asked).
pub fn compile(
    mut graph: Graph,
    opts: CompileOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Package, Option<Report>), CompileError> {
    graph.sort()?;
    weft_reference::optimize(&mut graph)?;
    let mut metadata = opts.metadata.clone();
    metadata.insert("precision".into(), opts.precision.to_string());
    let (compiled, ints): (Graph, Option<IntValues>) = match opts.precision {
        Precision::F32 => (graph.clone(), None),
        Precision::F16 => {
            let mut g = graph.clone();
            weft_quant::f16::to_f16_storage(&mut g);
            (g, None)
        }
        Precision::Mx(format) => {
            let acts = opts.mx_activations.unwrap_or(MxActivations::Mx(format));
            let input_acts = opts.mx_input_activations.unwrap_or(acts);
            let (g, summary) = weft_quant::mx::to_mx(&graph, format, acts, input_acts)?;
            metadata.insert("mx_weights".into(), format.name().into());
            metadata.insert("mx_activations".into(), acts.to_string());
            if input_acts != acts && !summary.input_layers.is_empty() {
                metadata.insert(
                    "mx_input_activations".into(),
                    format!("{input_acts} at {}", summary.input_layers.join(", ")),
                );
            }
            let mut layers = format!(
                "{} convolutions and {} fully connected layers in MX",
                summary.convolutions, summary.fully_connected
            );
            if !summary.kept_float.is_empty() {
                layers += &format!("; kept in f32: {}", summary.kept_float.join(", "));
            }
            metadata.insert("mx_layers".into(), layers);
            (g, None)
        }
        Precision::Int8 => {
            let params = match opts.given {
                Some(p) => {
                    metadata.insert("quantization".into(), "pre-quantized model".into());
                    p
                }
                None => {
                    if opts.calibration.is_empty() {
                        return Err(CompileError::Options(
                            "int8 needs calibration data (--calib) or a pre-quantized model".into(),
                        ));
                    }
                    let exec = Executor::new(graph.clone())?;
                    let ranges = Calibrator::new(&exec, opts.method)
                        .run(&opts.calibration, &mut |i, n| progress("calibrating", i, n))?;
                    let n: usize = opts
                        .calibration
                        .iter()
                        .map(|b| b.values().next().map_or(0, |t| t.shape().first().copied().unwrap_or(1)))
                        .sum();
                    metadata.insert("calibration".into(), format!("{} on {n} inputs", opts.method));
                    QuantParams::from_ranges(&ranges)
                }
            };
            let (g, ints) = weft_quant::quantize(&graph, &params)?;
            (g, Some(ints))
        }
    };
    let package = Package {
        name: opts.name,
        precision: opts.precision,
        graph: compiled,
        preprocess: opts.preprocess,
        labels: opts.labels,
        metadata,
    };
    let report = match &opts.evaluation {
        Some(batches) => Some(build_report(&graph, &package, ints.as_ref(), batches, &mut |i, n| {
            progress("evaluating", i, n)
        })?),
        None => None,
    };
    Ok((package, report))
}

/// An executor for a package's graph on the reference device.
pub fn reference_executor(package: &Package) -> Result<Executor, CompileError> {
    Ok(Executor::new(package.graph.clone())?.with_f16_activations(package.precision == Precision::F16))
}
