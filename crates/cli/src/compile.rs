//! `weft compile`: quantize and compile a model into a package.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use weft_compile::{Batch, CompileOptions, Precision};
use weft_core::mx::MxFormat;
use weft_core::op::MxActivations;
use weft_image::Preprocess;
use weft_quant::Method;

use crate::data;
use crate::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// An ONNX model (float, or pre-quantized QDQ / QOperator).
    pub model: PathBuf,
    /// int8, f16, f32, or an OCP MX format: mxint8, mxfp8 (E4M3), mxfp8_e5m2, mxfp6 (E2M3),
    /// mxfp6_e3m2, mxfp4 (MX needs no calibration data).
    #[arg(long, default_value = "int8")]
    pub precision: Precision,
    /// MX precisions: the activations' format at the MX layers: `same` (the weights'),
    /// `int8` (MXINT8), `f16`, or any MX format name.
    #[arg(long, default_value = "same")]
    pub mx_activations: String,
    /// MX precisions: the activations' format at the layers that read the network's input
    /// (no convolution or matrix product before them): `int8` (MXINT8; 8-bit pixels do not
    /// fit narrower elements), `same` (as --mx-activations), `f16`, or any MX format name.
    #[arg(long, default_value = "int8")]
    pub mx_input_activations: String,
    /// Calibration data: a .npy batch [N, ...] or a directory of images.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// minmax, percentile (99.99; or percentile:P) or entropy.
    #[arg(long, default_value = "percentile")]
    pub calib_method: Method,
    /// Preprocessing spec stored in the package: PRESET[,key=value...] (presets: imagenet,
    /// brainwave, none; keys: resize, crop, range, mean, std, channels, layout).
    #[arg(long, default_value = "none")]
    pub preprocess: Preprocess,
    /// Class labels, one per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Write an accuracy report (per-layer SQNR, cosine similarity, top-1 agreement) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Data for the report (default: the calibration data).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// A classifier head (ONNX, as `weft head train` writes) to attach behind the
    /// featurizer: the package then answers with the features and the head's outputs.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// The featurizer output the head reads.
    #[arg(long, default_value = "features")]
    pub features_output: String,
    /// Batch size for calibration and evaluation runs.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Output package.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn compile(args: &CompileArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let model = weft_onnx::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let (graph, given) = if weft_quant::prequantized::is_prequantized(&model.graph) {
        if args.precision != Precision::Int8 {
            bail!("{} is pre-quantized: it compiles to int8 only", args.model.display());
        }
        let (float, params) = weft_quant::prequantized::extract(&model.graph)?;
        (float, Some(params))
    } else {
        (model.graph, None)
    };
    if graph.inputs.len() != 1 && (args.calib.is_some() || args.eval.is_some()) {
        bail!("calibration data can only be given for models with one input");
    }
    let mut head_labels = Vec::new();
    let graph = match &args.head {
        Some(h) => {
            let head = weft_onnx::load(h).with_context(|| format!("loading head {}", h.display()))?;
            // the class names the head was trained with, else its label values
            head_labels = match crate::head::head_class_names(&head)? {
                Some(names) => names,
                None => crate::head::head_classes(&head)?
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            };
            weft_transfer::attach_head(&graph, &args.features_output, &head.graph)?
        }
        None => graph,
    };
    // A model exported with a fixed batch dimension (often 1) takes data only in batches of
    // that size: calibration and evaluation run in it, the last batch filled up.
    let fixed_batch = graph.inputs.first().and_then(|i| i.shape.first().copied().flatten());
    let mut told_preprocess = false;
    let mut batches = |path: &PathBuf, what: &str| -> anyhow::Result<Vec<Batch>> {
        if path.is_dir() && args.preprocess == Preprocess::default() && !told_preprocess {
            // images under `none` are only stretched to the input's size and put in 0..1:
            // right for a model trained that way, silently wrong for an ImageNet one
            eprintln!(
                "warning: --preprocess none: the {what} images are resized to the input's size and \
                 scaled to 0..1, without mean/std normalisation; a model trained on ImageNet wants \
                 --preprocess imagenet (torchvision: 0..1, mean/std) or brainwave (0..255 minus \
                 the mean), and the package keeps the choice for serving"
            );
            told_preprocess = true;
        }
        let t = data::load_tensor(path, &graph, &args.preprocess)?;
        let n = t.shape().first().copied().unwrap_or(0);
        if what == "calibration" && n < 32 {
            eprintln!("warning: {n} calibration sample(s); 32 or more give steadier int8 ranges");
        }
        let name = graph.inputs[0].name.clone();
        let split = match fixed_batch {
            Some(b) => {
                if b != args.batch {
                    eprintln!("note: the model's batch dimension is fixed at {b}: {what} runs in batches of {b}");
                }
                data::split_exact(&t, b)?
            }
            None => data::split(&t, args.batch)?,
        };
        Ok(split.into_iter().map(|b| HashMap::from([(name.clone(), b)])).collect())
    };
    let calibration = match &args.calib {
        Some(p) => batches(p, "calibration")?,
        None => Vec::new(),
    };
    let evaluation = match (&args.report, &args.eval) {
        (None, _) => None,
        (Some(_), Some(e)) => Some(batches(e, "evaluation")?),
        (Some(_), None) if !calibration.is_empty() => Some(calibration.clone()),
        (Some(_), None) => bail!("--report needs --eval data (or --calib)"),
    };
    let labels = match &args.labels {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        None => head_labels,
    };
    let name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let metadata = [
        (
            "source".to_string(),
            args.model
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        ),
        ("source_opset".to_string(), model.opset.to_string()),
        ("source_producer".to_string(), model.producer.clone()),
    ]
    .into();
    let mx_activations = mx_activations_flag("--mx-activations", args.precision, &args.mx_activations)?;
    let mx_input_activations = match (args.precision, args.mx_input_activations.as_str()) {
        // the default: ignored by the other precisions
        (Precision::Mx(_), _) | (_, "same") => {
            mx_activations_flag("--mx-input-activations", args.precision, &args.mx_input_activations)?
                .or(mx_activations)
        }
        (_, "int8") => None,
        (p, other) => bail!("--mx-input-activations {other} applies to MX precisions, not {p}"),
    };
    if matches!(args.precision, Precision::Mx(_)) && args.calib.is_some() {
        eprintln!("note: MX precisions need no calibration data; --calib serves only the report");
    }
    let opts = CompileOptions {
        mx_activations,
        mx_input_activations,
        name,
        precision: args.precision,
        method: args.calib_method,
        calibration,
        given,
        evaluation,
        preprocess: args.preprocess.clone(),
        labels,
        metadata,
    };
    let mut progress = Progress::new();
    let (package, report) = weft_compile::compile(graph, opts, &mut |stage, i, n| progress.update(stage, i, n))?;
    progress.finish();
    // a package must load: values a node needs as constants (Reshape's shape, Squeeze's
    // axes, Pad's pads) cannot be graph inputs of a compiled model
    if let Err(e @ weft_core::CoreError::Dynamic { .. }) = weft_core::shape::infer(&package.graph, &Default::default())
    {
        anyhow::bail!("{e}; `weft run` on the ONNX model itself computes it");
    }
    package.save(&args.output)?;
    eprintln!(
        "compiled {} ({}) to {} in {:.1} s",
        args.model.display(),
        package.precision,
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    if let (Some(path), Some(report)) = (&args.report, report) {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        for o in &report.outputs {
            eprintln!(
                "  {}: cosine {:.5} (min {:.5}), top-1 agreement {}",
                o.name,
                o.cosine_similarity,
                o.min_cosine_similarity,
                o.top1_agreement
                    .map_or("n/a".to_string(), |t| format!("{:.1}%", t * 100.0))
            );
        }
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// Parses an MX activation flag's value (`same` gives `None`).
fn mx_activations_flag(flag: &str, precision: Precision, value: &str) -> anyhow::Result<Option<MxActivations>> {
    Ok(match (precision, value) {
        (_, "same") => None,
        (Precision::Mx(_), "f16") => Some(MxActivations::F16),
        (Precision::Mx(_), "int8") => Some(MxActivations::Mx(MxFormat::Int8)),
        (Precision::Mx(_), other) => match MxFormat::parse(other) {
            Some(f) => Some(MxActivations::Mx(f)),
            None => bail!("{flag} {other}: not supported (same, int8, f16, or an MX format name)"),
        },
        (p, other) => bail!("{flag} {other} applies to MX precisions, not {p}"),
    })
}
