//! The `weft` command: build, inspect and run models.

mod bench;
mod client;
mod compile;
mod data;
mod deploy;
mod featurize;
mod fpga;
mod fpga_build;
mod head;
mod inspect;
mod malloc;
mod model;
mod mx;
mod progress;
mod run;
mod serve;
mod spinwait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    version,
    about = "weft: quantize ResNet-style networks, compile them to FPGA-shaped OpenCL kernels, and serve them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a zoo model (seeded weights) as ONNX.
    Zoo {
        /// One of resnet18, resnet34, resnet50, resnet101, resnet152, resnet8, resnet20.
        name: String,
        /// Seed for the weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fix the batch dimension (default: symbolic).
        #[arg(long)]
        batch: Option<usize>,
        /// Number of classifier outputs (default: 1000, or 10 for the CIFAR nets).
        #[arg(long)]
        num_classes: Option<usize>,
        /// Output ONNX file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show a model's ops, shapes, parameters and multiply-accumulates per layer.
    Inspect {
        /// An ONNX model or a .weft package.
        model: PathBuf,
        /// Batch size used for symbolic batch dimensions.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print the per-layer table too (default: only the summary and the op table).
        #[arg(long)]
        layers: bool,
        /// Print one JSON document instead of the text report (with --layers: the layers too).
        #[arg(long)]
        json: bool,
    },
    /// Quantize (int8, f16) or keep (f32) a model and compile it into a package.
    Compile(compile::CompileArgs),
    /// Run a model or package on .npy inputs and write an output as .npy.
    Run(run::RunArgs),
    /// Convert a tensor to an OCP MX block format (MXINT8, MXFP8/6/4) and back.
    Mx(mx::MxArgs),
    /// Features for many images (directory, .npy or IDX), with a progress bar.
    Featurize(featurize::FeaturizeArgs),
    /// Train or evaluate a classifier head on features.
    Head {
        #[command(subcommand)]
        command: head::HeadCommand,
    },
    /// Serve packages over gRPC (KServe v2, TensorFlow Serving Predict) with HTTP metrics.
    Serve(serve::ServeArgs),
    /// Send an image or tensor to a running `weft serve` (KServe v2) and print the result.
    Client(client::ClientArgs),
    /// List OpenCL platforms and devices, and the int8 hook weft would use on each.
    Devices {
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build an OCI image of the service without a container daemon, or write a Dockerfile.
    Image {
        #[command(subcommand)]
        command: deploy::ImageCommand,
    },
    /// Write (and optionally apply) deployments: ACI, AKS, IoT Edge, or run one locally.
    Deploy {
        #[command(subcommand)]
        command: deploy::DeployCommand,
    },
    /// Time runs of a package on a device (median, spread, images/s, GOP/s).
    Bench(bench::BenchArgs),
    /// Work with the kernel program: `weft program build` saves a device's program binary.
    Program {
        #[command(subcommand)]
        command: ProgramCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ProgramCommand {
    /// Build the kernels for a device and save the program binary (loadable with
    /// --program-binary, as an FPGA image would be).
    Build {
        /// The device: `pocl`, or `opencl:PLATFORM[:INDEX]` (part of a platform's name as
        /// `weft devices` lists it, and the device's index on it).
        #[arg(long, default_value = "pocl")]
        device: String,
        /// Build without device-specific hooks (the OpenCL C 1.2 kernels every device takes).
        #[arg(long)]
        portable_kernels: bool,
        /// `default` (the generic kernels) or `fpga` (the FPGA variant of --package: one
        /// kernel per layer; load it with `--kernels fpga --program-binary FILE`).
        #[arg(long, default_value = "default")]
        kernels: weft_opencl::KernelSet,
        /// The package whose layers the FPGA variant is specialised to (with --kernels fpga).
        #[arg(long)]
        package: Option<PathBuf>,
        /// The program binary to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print the kernels' OpenCL C source with the build options for a device.
    Source {
        /// The device whose build options are printed (as for `program build`).
        #[arg(long, default_value = "pocl")]
        device: String,
        /// The portable build options (no device-specific hooks).
        #[arg(long)]
        portable_kernels: bool,
        /// `default` or `fpga` (the FPGA variant of --package).
        #[arg(long, default_value = "default")]
        kernels: weft_opencl::KernelSet,
        /// The package whose layers the FPGA variant is specialised to (with --kernels fpga).
        #[arg(long)]
        package: Option<PathBuf>,
    },
    /// Write an offline FPGA build directory for an int8 package: the FPGA kernel variant's
    /// source specialised to its layers, build.sh with the vendor compiler's commands
    /// (aoc or v++), plan.json (layers, macros, the --fpga-model estimate) and a README.
    Fpga {
        /// The int8 package (model.weft).
        model: PathBuf,
        /// `intel` (aoc, .aocx) or `xilinx` (v++, .xclbin).
        #[arg(long, value_enum)]
        vendor: fpga_build::Vendor,
        /// arria10-gx1150, stratix10-gx2800 (intel), alveo-u250 (xilinx), or
        /// custom:dsp=N,mhz=F,gbps=B (then --platform is needed).
        #[arg(long)]
        board: String,
        /// The vendor's board or platform name (aoc -board=, v++ --platform), instead of the
        /// reference one weft knows for --board.
        #[arg(long)]
        platform: Option<String>,
        /// The directory to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// The program source `weft program build/source` works on (the generic kernels, or the
/// FPGA variant of a package) and whether it builds with the portable options (the variant
/// has no hooks, as its sessions build it).
fn program_text(
    kernels: weft_opencl::KernelSet,
    package: Option<&std::path::Path>,
    portable_kernels: bool,
) -> anyhow::Result<(String, bool)> {
    match (kernels, package) {
        (weft_opencl::KernelSet::Default, None) => Ok((weft_opencl::kernel_source(), portable_kernels)),
        (weft_opencl::KernelSet::Default, Some(_)) => {
            anyhow::bail!("--package specialises the FPGA variant: add --kernels fpga")
        }
        (weft_opencl::KernelSet::Fpga, None) => {
            anyhow::bail!("--kernels fpga is specialised to a package's layers: add --package MODEL.weft")
        }
        (weft_opencl::KernelSet::Fpga, Some(path)) => {
            let package = crate::model::open_package(path)?;
            Ok((weft_opencl::fpga_program(&package)?.source, true))
        }
    }
}

/// A closed stdout (`weft ... | head`) ends the command quietly, as for other Unix tools,
/// instead of a panic message from `println!`.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // before any thread exists: PoCL reads it when the first device is opened
    weft_opencl::pin_pocl_workers();
    if let Some(warning) = weft_opencl::ensure_writable_cache() {
        eprintln!("{warning}");
    }
    if let Err(e) = spinwait::init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    quiet_broken_pipe();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // `weft serve` sets up its own logging (--log-format, --log-level)
        init_notes();
    }
    let result = match cli.command {
        Command::Zoo {
            name,
            seed,
            batch,
            num_classes,
            output,
        } => zoo(&name, seed, batch, num_classes, &output),
        Command::Inspect {
            model,
            batch,
            layers,
            json,
        } => inspect::inspect(&model, batch, layers, json),
        Command::Compile(args) => compile::compile(&args),
        Command::Run(args) => run::run(&args),
        Command::Mx(args) => mx::mx(&args),
        Command::Featurize(args) => featurize::featurize(&args),
        Command::Head { command } => head::head(&command),
        Command::Devices { json } => devices(json),
        Command::Serve(args) => serve::serve(&args),
        Command::Client(args) => client::client(&args),
        Command::Program { command } => program(command),
        Command::Image { command } => deploy::image(&command),
        Command::Bench(args) => bench::bench(&args),
        Command::Deploy { command } => deploy::deploy(&command),
    };
    spinwait::report();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", said_once(&e));
            ExitCode::FAILURE
        }
    }
}

/// Progress notes from the libraries (a cold kernel compile) and their warnings, on stderr
/// without timestamps.
fn init_notes() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("weft", tracing::level_filters::LevelFilter::INFO)
        .with_default(tracing::level_filters::LevelFilter::WARN);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
}

/// An error's chain of causes joined by ": ", each said once: a cause whose text the
/// message before it already ends with (many libraries print their source inside their own
/// message) is left out.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || out.ends_with(text) {
            continue;
        }
        // a message repeating itself ("tcp connect error: tcp connect error: ...")
        let mut text = text.to_string();
        while let Some((head, tail)) = text.split_once(": ") {
            if tail.starts_with(head) && !head.is_empty() {
                text = tail.to_string();
            } else {
                break;
            }
        }
        if out.ends_with(text.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn zoo(
    name: &str,
    seed: u64,
    batch: Option<usize>,
    num_classes: Option<usize>,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    if batch == Some(0) || num_classes == Some(0) {
        anyhow::bail!("--batch and --num-classes must be at least 1");
    }
    let graph = weft_zoo::build(
        name,
        &weft_zoo::ZooOptions {
            seed,
            batch,
            num_classes,
        },
    )?;
    weft_onnx::export_file(&graph, output)?;
    eprintln!(
        "wrote {name} (seed {seed}, {} parameters) to {}",
        graph.parameter_count(),
        output.display()
    );
    Ok(())
}

fn devices(json: bool) -> anyhow::Result<()> {
    let list = weft_opencl::list_devices()?;
    if json {
        let doc: Vec<serde_json::Value> = list
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device": format!("opencl:{}:{}", d.platform, d.device_index),
                    "platform_index": d.platform_index,
                    "device_index": d.device_index,
                    "platform": d.platform,
                    "platform_version": d.platform_version,
                    "name": d.name,
                    "version": d.version,
                    "driver_version": d.driver_version,
                    "compute_units": d.compute_units,
                    "global_mem_bytes": d.global_mem,
                    "max_work_group": d.max_work_group,
                    "max_alloc_bytes": d.max_alloc,
                    "is_cpu": d.is_cpu,
                    "int8_hook": d.dot_hook(false).name(),
                    "int8_hooks": d.dot_hooks().iter().map(|h| h.name()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for d in &list {
        println!("{}:{}  {} / {}", d.platform_index, d.device_index, d.platform, d.name);
        println!("    --device 'opencl:{}:{}'", d.platform, d.device_index);
        println!(
            "    {} | {} compute units | {} MiB | int8 hook: {}",
            d.version,
            d.compute_units,
            d.global_mem >> 20,
            d.dot_hook(false).name()
        );
    }
    if list.is_empty() {
        println!("no OpenCL devices");
    }
    Ok(())
}

fn program(command: ProgramCommand) -> anyhow::Result<()> {
    match command {
        ProgramCommand::Build {
            device,
            portable_kernels,
            kernels,
            package,
            output,
        } => {
            let (text, portable) = program_text(kernels, package.as_deref(), portable_kernels)?;
            let d = weft_opencl::select_device(&device)?;
            let bytes = weft_opencl::build_binary_of(&d, portable, &text)?;
            std::fs::write(&output, &bytes)?;
            eprintln!(
                "wrote the program binary for {} ({} bytes) to {}",
                d.name,
                bytes.len(),
                output.display()
            );
        }
        ProgramCommand::Source {
            device,
            portable_kernels,
            kernels,
            package,
        } => {
            let (text, portable) = program_text(kernels, package.as_deref(), portable_kernels)?;
            let d = weft_opencl::select_device(&device)?;
            println!(
                "// build options: {}",
                weft_opencl::ProgramOptions::for_device(&d, portable).build_options()
            );
            println!("{text}");
        }
        ProgramCommand::Fpga {
            model,
            vendor,
            board,
            platform,
            output,
        } => {
            let package = crate::model::open_package(&model)?;
            fpga_build::write(&package, vendor, &board, platform.as_deref(), &output)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::said_once;

    /// Every command and every flag of every command says in `--help` what it is for.
    #[test]
    fn every_flag_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{sub_path} (the command)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<super::Cli as clap::CommandFactory>::command(), "weft", &mut missing);
        assert!(missing.is_empty(), "undocumented in --help: {missing:#?}");
    }

    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let e = anyhow::Error::new(io)
            .context(format!("reading x: {text}"))
            .context("loading x");
        assert_eq!(said_once(&e), format!("loading x: reading x: {text}"));
        let e = anyhow::anyhow!("tcp connect error: tcp connect error: Connection refused").context("waiting for h:1");
        assert_eq!(said_once(&e), "waiting for h:1: tcp connect error: Connection refused");
        let e = anyhow::anyhow!("a").context("b").context("c");
        assert_eq!(said_once(&e), "c: b: a");
    }
}
