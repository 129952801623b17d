//! `weft run`: one inference from .npy files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use weft_core::{DType, Tensor};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// An ONNX model or a .weft package.
    pub model: PathBuf,
    /// Input .npy file; `NAME=FILE` for models with several inputs.
    #[arg(long)]
    pub input: Vec<String>,
    /// Output .npy file.
    #[arg(long, required_unless_present = "output_dir")]
    pub output: Option<PathBuf>,
    /// Write every model output, in the graph's order, as DIR/output_0.npy, output_1.npy, ...
    #[arg(long, conflicts_with_all = ["output", "output_name"])]
    pub output_dir: Option<PathBuf>,
    /// Which model output to write (default: the first).
    #[arg(long)]
    pub output_name: Option<String>,
    /// `reference` (the f32 oracle for ONNX models and f32/f16 packages, the integer
    /// oracle for int8 packages), `pocl`, or `opencl:<platform substring>[:<index>]`.
    #[arg(long, default_value = "reference")]
    pub device: String,
    /// Print per-layer kernel timings (OpenCL devices).
    #[arg(long)]
    pub profile: bool,
    /// Use the portable OpenCL C definition of every target hook (also: WEFT_PORTABLE_KERNELS=1).
    #[arg(long)]
    pub portable_kernels: bool,
    /// `default` (the generic kernels) or `fpga` (the FPGA variant: one kernel per layer,
    /// its geometry compiled in; int8 packages; the emulation flow of an FPGA build).
    #[arg(long, default_value = "default")]
    pub kernels: weft_opencl::KernelSet,
    /// Load a prebuilt program binary (an FPGA image such as .aocx/.xclbin, or one saved by
    /// `weft program build`) instead of building the kernels from source.
    #[arg(long)]
    pub program_binary: Option<PathBuf>,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let loaded = crate::model::open(&args.model)?;
    if args.device == "reference" {
        let executor = match loaded {
            crate::model::Loaded::Onnx(m) => {
                let mut graph = m.graph;
                weft_reference::optimize(&mut graph)?;
                weft_reference::Executor::new(graph)?
            }
            crate::model::Loaded::Package(p) => weft_compile::reference_executor(&p)?,
        };
        let graph = executor.graph();
        let inputs = read_inputs(&args.input, graph)?;
        let out_name = output_name(args, graph)?;
        let start = Instant::now();
        let outputs = executor.run(&inputs)?;
        return finish(args, outputs, &out_name, start.elapsed());
    }
    let crate::model::Loaded::Package(package) = loaded else {
        bail!(
            "--device {} runs compiled packages: compile the model first (`weft compile {} --calib DATA -o model.weft`)",
            args.device,
            args.model.display()
        );
    };
    let opts = weft_opencl::SessionOptions {
        device: args.device.clone(),
        portable: args.portable_kernels,
        kernels: args.kernels,
        program_binary: args.program_binary.clone(),
        profile: args.profile,
        ..Default::default()
    };
    let start = Instant::now();
    let mut session = weft_opencl::Session::new(&package, &opts)?;
    eprintln!(
        "device {} ({}), int8 hook {}, program {:?} in {:.0} ms, session ready in {:.0} ms",
        session.device().name,
        session.device().platform,
        session.hook().name(),
        session.program_source(),
        session.build_time().as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
    let inputs = read_inputs(&args.input, &package.graph)?;
    let out_name = output_name(args, &package.graph)?;
    let batch = inputs
        .values()
        .next()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    session.prepare(batch)?;
    let start = Instant::now();
    let outputs = session.run(&inputs)?;
    let elapsed = start.elapsed();
    if args.profile {
        print_profile(session.last_profile());
    }
    finish(args, outputs, &out_name, elapsed)
}

fn output_name(args: &RunArgs, graph: &weft_core::Graph) -> anyhow::Result<String> {
    match &args.output_name {
        Some(n) => {
            if !graph.outputs.iter().any(|o| &o.name == n) {
                bail!(
                    "the model has no output '{n}' (outputs: {})",
                    names(graph.outputs.iter().map(|o| o.name.as_str()))
                );
            }
            Ok(n.clone())
        }
        None => Ok(graph
            .outputs
            .first()
            .map(|o| o.name.clone())
            .context("the model has no outputs")?),
    }
}

fn finish(
    args: &RunArgs,
    outputs: Vec<(String, Tensor)>,
    out_name: &str,
    elapsed: std::time::Duration,
) -> anyhow::Result<()> {
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --output-dir {}", dir.display()))?;
        for (i, (_, tensor)) in outputs.iter().enumerate() {
            weft_core::npy::write(&dir.join(format!("output_{i}.npy")), tensor)?;
        }
        eprintln!(
            "ran {} on {} in {:.1} ms; wrote {} outputs to {}",
            args.model.display(),
            args.device,
            elapsed.as_secs_f64() * 1e3,
            outputs.len(),
            dir.display()
        );
        return Ok(());
    }
    let output = args.output.as_ref().context("give --output or --output-dir")?;
    let (_, tensor) = outputs
        .into_iter()
        .find(|(n, _)| n == out_name)
        .context("output missing after run")?;
    weft_core::npy::write(output, &tensor)?;
    eprintln!(
        "ran {} on {} in {:.1} ms; wrote '{out_name}' {:?} to {}",
        args.model.display(),
        args.device,
        elapsed.as_secs_f64() * 1e3,
        tensor.shape(),
        output.display()
    );
    Ok(())
}

pub fn print_profile(layers: &[weft_opencl::LayerProfile]) {
    println!(
        "{:<36} {:<10} {:>22} {:>14} {:>10} {:>8} {:>8}",
        "layer", "kernel", "shape", "MACs", "us", "GOP/s", "wait us"
    );
    let mut total = (0f64, 0u64);
    let mut waits = 0f64;
    let mut on_host = (0usize, 0f64);
    for l in layers {
        let gops = if l.micros > 0.0 {
            2.0 * l.macs as f64 / (l.micros * 1e3)
        } else {
            0.0
        };
        println!(
            "{:<36} {:<10} {:>22} {:>14} {:>10.1} {:>8.1} {:>8.1}",
            l.node,
            l.kernel,
            format!("{:?}", l.shape),
            l.macs,
            l.micros,
            gops,
            l.wait_micros
        );
        if l.kernel == weft_opencl::HOST {
            on_host.0 += 1;
            on_host.1 += l.micros;
            continue;
        }
        waits += l.wait_micros;
        total.0 += l.micros;
        total.1 += l.macs;
    }
    let gops = if total.0 > 0.0 {
        2.0 * total.1 as f64 / (total.0 * 1e3)
    } else {
        0.0
    };
    println!(
        "{:<36} {:<10} {:>22} {:>14} {:>10.1} {:>8.1} {:>8.1}",
        "total", "", "", total.1, total.0, gops, waits
    );
    if on_host.0 > 0 {
        println!(
            "{:<36} {:<10} {:>22} {:>14} {:>10.1}",
            format!("on the host ({} nodes)", on_host.0),
            weft_opencl::HOST,
            "",
            "",
            on_host.1
        );
    }
    println!(
        "(us: kernel time, or for `host` rows the host's time for a node the plan could not place on the device; \
         wait us: the device idle before the kernel: since the previous one ended, or since the first was enqueued)"
    );
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
        // raw-byte arrays (NumPy has no bfloat16, float8, float4, int4 or int2) are read as
        // the declared type
        let t = weft_core::npy::read_exact(Path::new(&file), Some(decl.dtype))?;
        // Float inputs accept any numeric data (converted), uint8 bools; others need their
        // exact dtype.
        let converts = (decl.dtype.is_float()
            && (!t.dtype().is_storage_only() || matches!(t.dtype(), DType::F64 | DType::Bool)))
            || (decl.dtype == DType::U8 && t.dtype() == DType::Bool);
        if t.dtype() != decl.dtype && !converts {
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
