//! `weft run`: one inference from .npy files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use weft_core::Tensor;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// An ONNX model or a .weft package.
    pub model: PathBuf,
    /// Input .npy file; `NAME=FILE` for models with several inputs.
    #[arg(long, required = true)]
    pub input: Vec<String>,
    /// Output .npy file.
    #[arg(long)]
    pub output: PathBuf,
    /// Which model output to write (default: the first).
    #[arg(long)]
    pub output_name: Option<String>,
    /// Executor: `reference` (the f32 oracle for ONNX models and f32/f16 packages, the
    /// integer oracle for int8 packages).
    #[arg(long, default_value = "reference")]
    pub device: String,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    if args.device != "reference" {
        bail!(
            "unknown device '{}': this build runs models on 'reference'",
            args.device
        );
    }
    let executor = match crate::model::open(&args.model)? {
        crate::model::Loaded::Onnx(m) => {
            let mut graph = m.graph;
            weft_reference::optimize(&mut graph)?;
            weft_reference::Executor::new(graph)?
        }
        crate::model::Loaded::Package(p) => weft_compile::reference_executor(&p)?,
    };
    let graph = executor.graph();
    let inputs = read_inputs(&args.input, graph)?;
    let out_name = match &args.output_name {
        Some(n) => {
            if !graph.outputs.iter().any(|o| &o.name == n) {
                bail!(
                    "the model has no output '{n}' (outputs: {})",
                    names(graph.outputs.iter().map(|o| o.name.as_str()))
                );
            }
            n.clone()
        }
        None => graph
            .outputs
            .first()
            .map(|o| o.name.clone())
            .context("the model has no outputs")?,
    };
    let start = Instant::now();
    let outputs = executor.run(&inputs)?;
    let elapsed = start.elapsed();
    let (_, tensor) = outputs
        .into_iter()
        .find(|(n, _)| *n == out_name)
        .context("output missing after run")?;
    weft_core::npy::write(&args.output, &tensor)?;
    eprintln!(
        "ran {} on {} in {:.1} ms; wrote '{out_name}' {:?} to {}",
        args.model.display(),
        args.device,
        elapsed.as_secs_f64() * 1e3,
        tensor.shape(),
        args.output.display()
    );
    Ok(())
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// Reads `--input` arguments, matching them to graph inputs and converting float data to
/// the input's declared float type.
fn read_inputs(specs: &[String], graph: &weft_core::Graph) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if graph.inputs.iter().any(|i| i.name == n) => (n.to_string(), f.to_string()),
            _ => {
                if graph.inputs.len() != 1 {
                    bail!(
                        "the model has {} inputs ({}): give each as --input NAME=FILE",
                        graph.inputs.len(),
                        names(graph.inputs.iter().map(|i| i.name.as_str()))
                    );
                }
                (graph.inputs[0].name.clone(), spec.clone())
            }
        };
        let decl = graph
            .inputs
            .iter()
            .find(|i| i.name == name)
            .context("input not found")?;
        let t = weft_core::npy::read(Path::new(&file))?;
        // Float inputs accept any numeric data (converted); others need their exact dtype.
        if t.dtype() != decl.dtype && !decl.dtype.is_float() {
            bail!(
                "input '{name}' from {file}: expected {}, the file holds {}",
                decl.dtype,
                t.dtype()
            );
        }
        let t = t.cast(decl.dtype);
        if out.insert(name.clone(), t).is_some() {
            bail!("input '{name}' given twice");
        }
    }
    Ok(out)
}
