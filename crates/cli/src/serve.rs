//! `weft serve`: the gRPC service.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use weft_compile::Package;

/// The embedded default model: weft's Fashion-MNIST featurizer and classifier, int8
/// (made by models/fashion/make_package.sh).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../../models/fashion/fashion_resnet.weft");
pub const DEFAULT_MODEL_NAME: &str = "fashion";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A package to serve (named after its file); none serves the embedded default model.
    pub package: Option<PathBuf>,
    /// More packages, as NAME=PATH.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// gRPC port (KServe v2, TensorFlow Serving Predict, health, reflection).
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// HTTP port for /metrics, /healthz and /readyz (0 picks one; see the startup line).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// `auto` (PoCL when present, else the reference, with a warning), `reference`,
    /// `pocl` or `opencl:<platform substring>[:<index>]`; images built by `weft image
    /// build` set WEFT_DEVICE=pocl.
    #[arg(long, env = "WEFT_DEVICE", default_value = "auto")]
    pub device: String,
    /// Use the portable OpenCL C definition of every target hook.
    #[arg(long)]
    pub portable_kernels: bool,
    /// `default` (the generic kernels) or `fpga` (the FPGA variant: one kernel per layer,
    /// its geometry compiled in; int8 packages; the emulation flow of an FPGA build).
    #[arg(long, default_value = "default")]
    pub kernels: weft_opencl::KernelSet,
    /// Largest batch the server forms (and accepts in one request).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// How long the first request of a batch waits for others, in microseconds.
    #[arg(long, default_value_t = 2000)]
    pub max_queue_delay_us: u64,
    /// Requests waiting per model before the server answers RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,
    /// Instances of each model, each with its own engine (device session) and worker
    /// thread, all taking batches from the model's one queue: while one runs a batch the
    /// next is gathered (a repository model's instance_group may set its own).
    #[arg(long, default_value_t = 1)]
    pub instance_count: usize,
    /// An accepted API key (repeat for rotation); also WEFT_API_KEYS (comma-separated).
    #[arg(long = "api-key")]
    pub api_keys: Vec<String>,
    /// Read an accepted API key from this environment variable (repeatable).
    #[arg(long = "api-key-env")]
    pub api_key_envs: Vec<String>,
    /// TLS certificate chain (PEM); with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request message accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_message_bytes: usize,
    /// Largest decoded image, in pixels (larger images are refused before decoding).
    #[arg(long, default_value_t = weft_image::DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,
    /// Write a sample of requests' inputs and outputs as .npy here.
    #[arg(long, requires = "collect_rate")]
    pub collect_dir: Option<PathBuf>,
    /// Share of requests to collect, 0 to 1.
    #[arg(long, requires = "collect_dir")]
    pub collect_rate: Option<f64>,
    /// No per-request log lines.
    #[arg(long)]
    pub quiet: bool,
    /// A model repository in Triton's layout: DIR/NAME/VERSION/model.weft, with an optional
    /// DIR/NAME/config.json or config.pbtxt (max_batch_size, dynamic_batching's
    /// max_queue_delay_microseconds and default_queue_policy.max_queue_size, version_policy
    /// latest / all / specific). Served beside `--model` packages.
    #[arg(long)]
    pub model_repository: Option<PathBuf>,
    /// none: load the repository at start; poll: also rescan it every
    /// --repository-poll-secs (new versions load, warm up and take over; removed ones drain);
    /// explicit: load and unload on request (Triton's repository API) and `--load-model`.
    #[arg(long, default_value = "none", requires = "model_repository")]
    pub model_control_mode: weft_serve::ControlMode,
    /// Seconds between repository scans in poll mode.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    pub repository_poll_secs: f64,
    /// A repository model to load at start in explicit mode (repeatable; `*` for all).
    #[arg(long = "load-model")]
    pub load_models: Vec<String>,
    /// Log lines as `text` (timestamp, level, message, fields) or `json` (one object a line,
    /// fields at the top level, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The least severe level logged: error, warn, info, debug or trace (per-request lines are
    /// info).
    #[arg(long, default_value = "info", value_parser = parse_level)]
    pub log_level: tracing::level_filters::LevelFilter,
    /// Seconds one batch may run on the device; past it the device counts as hung: waiting
    /// requests get UNAVAILABLE, readiness turns off and the server exits with status 1 for
    /// the orchestrator to restart it.
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    pub device_timeout: f64,
    /// Seconds an HTTP client may take for its TLS handshake and each request's headers
    /// (an idle keep-alive connection waiting for its next request included) before the
    /// connection is closed.
    #[arg(long, default_value_t = 75.0, value_parser = positive_seconds)]
    pub http_header_timeout: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_level(s: &str) -> Result<tracing::level_filters::LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => s.parse().map_err(|e| format!("{e}")),
        _ => Err(format!(
            "'{s}' is not a log level (error, warn, info, debug, trace or off)"
        )),
    }
}

/// Installs the process's log subscriber: weft's own events at `level`, other crates' (the
/// HTTP/2 and TLS stack) at warnings and above, written to standard error.
fn init_logging(format: LogFormat, level: tracing::level_filters::LevelFilter) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("weft", level)
        .with_default(level.min(tracing::level_filters::LevelFilter::WARN));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init` fails only if a subscriber is already installed (never, in the binary).
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init(),
    };
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Package> {
    match crate::model::open(path)? {
        crate::model::Loaded::Package(p) => Ok(*p),
        crate::model::Loaded::Onnx(_) => bail!(
            "{} is an ONNX model: compile it first (`weft compile {} -o model.weft`)",
            path.display(),
            path.display()
        ),
    }
}

pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    crate::malloc::return_large_buffers_to_the_system();
    init_logging(args.log_format, args.log_level);
    if args.max_batch == 0 || args.queue_depth == 0 || args.max_message_bytes == 0 || args.instance_count == 0 {
        bail!("--max-batch, --queue-depth, --max-message-bytes and --instance-count must be at least 1");
    }
    if let Some(r) = args.collect_rate
        && !(0.0..=1.0).contains(&r)
    {
        bail!("--collect-rate must be between 0 and 1, got {r}");
    }
    let mut models: Vec<(String, Arc<Package>)> = Vec::new();
    if let Some(p) = &args.package {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        models.push((name, Arc::new(load(p)?)));
    }
    for spec in &args.models {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--model takes NAME=PATH, got '{spec}'"))?;
        if name.is_empty() || models.iter().any(|(n, _)| n == name) {
            bail!("model names must be unique and non-empty ('{name}')");
        }
        models.push((name.to_string(), Arc::new(load(std::path::Path::new(path))?)));
    }
    if let Some(dir) = &args.model_repository
        && !dir.is_dir()
    {
        bail!("--model-repository {}: not a directory", dir.display());
    }
    if models.is_empty() && args.model_repository.is_none() {
        let p = Package::from_bytes(DEFAULT_MODEL).context("the embedded default model")?;
        crate::model::prefer_generic_work_groups(&p);
        models.push((DEFAULT_MODEL_NAME.to_string(), Arc::new(p)));
    }
    let mut keys = args.api_keys.clone();
    for var in &args.api_key_envs {
        let v = std::env::var(var).with_context(|| format!("--api-key-env {var}: the variable is not set"))?;
        keys.push(v);
    }
    if let Ok(v) = std::env::var("WEFT_API_KEYS") {
        keys.extend(v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
        )),
        _ => None,
    };
    let config = weft_serve::ServeConfig {
        models,
        grpc_addr: SocketAddr::new(args.host, args.port),
        http_addr: Some(SocketAddr::new(args.host, args.http_port)),
        device: args.device.clone(),
        portable_kernels: args.portable_kernels,
        kernels: args.kernels,
        max_batch: args.max_batch,
        max_queue_delay: Duration::from_micros(args.max_queue_delay_us),
        queue_depth: args.queue_depth,
        instances: args.instance_count,
        api_keys: keys,
        tls,
        max_message_bytes: args.max_message_bytes,
        collect: args.collect_dir.clone().zip(args.collect_rate),
        max_image_pixels: args.max_image_pixels,
        log_requests: !args.quiet,
        device_timeout: Duration::from_secs_f64(args.device_timeout),
        http_header_timeout: Duration::from_secs_f64(args.http_header_timeout),
        repository: args.model_repository.clone().map(|dir| weft_serve::RepositoryConfig {
            dir,
            mode: args.model_control_mode,
            poll: Duration::from_secs_f64(args.repository_poll_secs),
            load: args.load_models.clone(),
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Registered before anything else, so a SIGTERM during start-up also stops cleanly.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        weft_serve::serve(
            config,
            |s| {
                let http = s
                    .http_addr
                    .map(|a| format!(", HTTP on {a} (/metrics /healthz /readyz)"))
                    .unwrap_or_default();
                tracing::info!("ready; gRPC on {}{http}", s.grpc_addr);
            },
            shutdown,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    tracing::info!("stopped");
    Ok(())
}
