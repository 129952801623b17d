//! `weft bench`: timed runs of a package (or ONNX model on the reference) at one batch
//! size, for the side-by-side comparison in `bench/compare.py`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use weft_core::{Graph, Tensor};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A package (OpenCL devices and the reference) or an ONNX model (reference only).
    pub model: PathBuf,
    /// `reference`, `pocl` or `opencl:<platform substring>[:<index>]`.
    #[arg(long, default_value = "pocl")]
    pub device: String,
    /// Images per run.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Use the portable OpenCL C definition of every target hook.
    #[arg(long)]
    pub portable_kernels: bool,
    /// `default` (the generic kernels) or `fpga` (the FPGA variant: one kernel per layer,
    /// its geometry compiled in; int8 packages; the emulation flow of an FPGA build).
    #[arg(long, default_value = "default")]
    pub kernels: weft_opencl::KernelSet,
    /// Print one JSON object (times in milliseconds) instead of a summary line.
    #[arg(long)]
    pub json: bool,
    /// Instead of running: estimate the int8 plan on an FPGA board (a model, not a
    /// measurement): arria10-gx1150, stratix10-gx2800, alveo-u250 or custom:dsp=N,mhz=F,gbps=B.
    #[arg(long)]
    pub fpga_model: Option<String>,
    /// Also print per-layer kernel times, each the median over the timed runs (OpenCL
    /// devices; the device is profiled, which can add a little to every launch).
    #[arg(long)]
    pub profile: bool,
}

/// One timed run over the inputs; returns the per-layer profile when profiling.
type RunFn = dyn FnMut(&HashMap<String, Tensor>) -> anyhow::Result<Vec<weft_opencl::LayerProfile>>;

/// Shapes of every value of `graph` with its symbolic batch dimensions set to `batch`.
pub fn infer_at(graph: &Graph, batch: usize) -> anyhow::Result<weft_core::shape::Shapes> {
    let shapes = graph
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.concrete_shape(batch)))
        .collect();
    Ok(weft_core::shape::infer(graph, &shapes)?)
}

/// The inferred shape of a node's first output (empty when unknown).
pub fn output_shape(node: &weft_core::Node, inferred: &weft_core::shape::Shapes) -> Vec<usize> {
    node.outputs
        .first()
        .and_then(|o| inferred.shape(o))
        .unwrap_or(&[])
        .to_vec()
}

/// Multiply-accumulates of one node, from inferred shapes.
pub fn node_macs(node: &weft_core::Node, inferred: &weft_core::shape::Shapes) -> u64 {
    let ins: Vec<Vec<usize>> = node
        .inputs
        .iter()
        .map(|i| inferred.shape(i).map(<[usize]>::to_vec).unwrap_or_default())
        .collect();
    node.op.macs(&ins, &output_shape(node, inferred))
}

/// Multiply-accumulates of one run of `graph` at `batch`.
pub fn graph_macs(graph: &Graph, batch: usize) -> anyhow::Result<u64> {
    let inferred = infer_at(graph, batch)?;
    Ok(graph.nodes.iter().map(|n| node_macs(n, &inferred)).sum())
}

fn inputs(graph: &Graph, batch: usize) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut rng = weft_core::rng::Rng::new(7);
    graph
        .inputs
        .iter()
        .map(|i| {
            let shape = i.concrete_shape(batch);
            let n = shape.iter().product();
            let t = Tensor::from_f32(&shape, rng.normals(n, 1.0))?.cast(i.dtype);
            Ok((i.name.clone(), t))
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.iterations == 0 {
        bail!("--batch and --iterations must be at least 1");
    }
    let loaded = crate::model::open(&args.model)?;
    if let Some(board) = &args.fpga_model {
        let crate::model::Loaded::Package(p) = loaded else {
            bail!("--fpga-model estimates compiled int8 packages: compile the model first");
        };
        return crate::fpga::print(&p.graph, args.batch, board, weft_opencl::QCONV_TM);
    }
    let mut run: Box<RunFn>;
    let graph: Graph;
    let start = Instant::now();
    if args.device == "reference" {
        let exec = match loaded {
            crate::model::Loaded::Onnx(m) => {
                let mut g = m.graph;
                weft_reference::optimize(&mut g)?;
                weft_reference::Executor::new(g)?
            }
            crate::model::Loaded::Package(p) => weft_compile::reference_executor(&p)?,
        };
        graph = exec.graph().clone();
        if args.profile {
            bail!("--profile times OpenCL kernels: use --device pocl or opencl:...");
        }
        run = Box::new(move |x| exec.run(x).map(|_| Vec::new()).map_err(Into::into));
    } else {
        let crate::model::Loaded::Package(p) = loaded else {
            bail!(
                "--device {} runs compiled packages: compile the model first",
                args.device
            );
        };
        let opts = weft_opencl::SessionOptions {
            device: args.device.clone(),
            portable: args.portable_kernels,
            kernels: args.kernels,
            profile: args.profile,
            ..Default::default()
        };
        let mut s = weft_opencl::Session::new(&p, &opts)?;
        s.prepare(args.batch)?;
        graph = p.graph.clone();
        run = Box::new(move |x| {
            s.run(x)?;
            Ok(s.last_profile().to_vec())
        });
    }
    let ready_ms = start.elapsed().as_secs_f64() * 1e3;
    let feeds = inputs(&graph, args.batch).context("making inputs")?;
    let first = Instant::now();
    run(&feeds)?;
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    for _ in 1..args.warmup {
        run(&feeds)?;
    }
    let mut times = Vec::with_capacity(args.iterations);
    let mut layers: Vec<weft_opencl::LayerProfile> = Vec::new();
    let mut layer_times: Vec<Vec<f64>> = Vec::new();
    let mut layer_waits: Vec<Vec<f64>> = Vec::new();
    for _ in 0..args.iterations {
        let t = Instant::now();
        let profile = run(&feeds)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if layers.is_empty() {
            layer_times = vec![Vec::new(); profile.len()];
            layer_waits = vec![Vec::new(); profile.len()];
            layers = profile.clone();
        }
        for ((v, w), l) in layer_times.iter_mut().zip(layer_waits.iter_mut()).zip(&profile) {
            v.push(l.micros);
            w.push(l.wait_micros);
        }
    }
    if args.profile {
        for ((l, v), w) in layers
            .iter_mut()
            .zip(layer_times.iter_mut())
            .zip(layer_waits.iter_mut())
        {
            l.micros = median(v);
            l.wait_micros = median(w);
        }
        crate::run::print_profile(&layers);
    }
    let macs = graph_macs(&graph, args.batch).unwrap_or(0);
    let mut sorted = times.clone();
    let med = median(&mut sorted);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let gops = 2.0 * macs as f64 / (med / 1e3) / 1e9;
    let ips = args.batch as f64 / (med / 1e3);
    if args.json {
        let j = serde_json::json!({
            "model": args.model.display().to_string(),
            "device": args.device,
            "batch": args.batch,
            "ready_ms": ready_ms,
            "first_run_ms": first_ms,
            "times_ms": times,
            "median_ms": med,
            "min_ms": min,
            "max_ms": max,
            "images_per_s": ips,
            "macs": macs,
            "gops": gops,
        });
        println!("{j}");
    } else {
        println!(
            "{} on {} batch {}: median {med:.2} ms (min {min:.2}, max {max:.2}, {} runs), {ips:.1} images/s, {gops:.1} GOP/s; ready in {ready_ms:.0} ms, first run {first_ms:.0} ms",
            args.model.display(),
            args.device,
            args.batch,
            args.iterations
        );
    }
    Ok(())
}
