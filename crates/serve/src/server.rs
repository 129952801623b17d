//! Server assembly: models and their workers, gRPC services (KServe, TF Serving, health,
//! reflection) with keys and TLS, the HTTP endpoints, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::metadata::MetadataMap;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use weft_core::Tensor;
use weft_package::Package;

/// The `tracing` target of the one line logged per request (`--quiet` turns it off).
pub const REQUEST_TARGET: &str = "weft_serve::request";

use crate::ServeError;
use crate::auth::Keys;
use crate::batcher::{BatchPolicy, Engine, Job, JobResult, Worker};
use crate::collect::Collector;
use crate::convert::InputSpec;
use crate::metrics::Metrics;
use crate::proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;

/// Everything `weft serve` is told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub models: Vec<(String, Arc<Package>)>,
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// `auto` (PoCL for int8 packages when present, else the reference), `reference`,
    /// `pocl` or `opencl:...`.
    pub device: String,
    pub portable_kernels: bool,
    /// The generic kernels or the FPGA variant (`--kernels fpga`, int8 packages).
    pub kernels: weft_opencl::KernelSet,
    pub max_batch: usize,
    pub max_queue_delay: Duration,
    pub queue_depth: usize,
    pub api_keys: Vec<String>,
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub max_message_bytes: usize,
    pub collect: Option<(PathBuf, f64)>,
    pub max_image_pixels: u64,
    /// Log one JSON line per request.
    pub log_requests: bool,
    /// A batch running longer than this means the device hangs: the server reports it,
    /// answers what is waiting with UNAVAILABLE and stops (for the orchestrator to restart).
    pub device_timeout: Duration,
}

/// One served model.
pub struct Model {
    pub name: String,
    pub package: Arc<Package>,
    pub spec: InputSpec,
    pub worker: Worker,
    pub stats: std::sync::Mutex<ModelCounters>,
}

/// Cumulative counts and nanoseconds, as Triton's ModelStatistics reports them.
#[derive(Debug, Default, Clone)]
pub struct ModelCounters {
    pub inference_count: u64,
    pub success: (u64, u64),
    pub fail: (u64, u64),
    pub queue: (u64, u64),
    pub compute_input: (u64, u64),
    pub compute_infer: (u64, u64),
    pub compute_output: (u64, u64),
    pub last_inference_ms: u64,
}

/// State shared by every handler.
pub struct AppState {
    pub models: Vec<Arc<Model>>,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    pub collector: Option<Collector>,
    pub ready: AtomicBool,
    /// Set with the reason when a device failed beyond recovery.
    pub fatal: tokio::sync::watch::Receiver<Option<String>>,
    pub policy: BatchPolicy,
    pub log_requests: bool,
    /// Largest request accepted (`--max-message-bytes`); larger ones get RESOURCE_EXHAUSTED.
    pub max_message_bytes: usize,
}

static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// A request id unique within this process run.
pub fn request_id() -> String {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-{n:08x}", (start >> 16) as u32)
}

/// The deadline a client set with `grpc-timeout`, if any.
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

impl AppState {
    /// Records a finished request in the metrics and, unless quiet, as one JSON log line.
    pub fn finish(
        &self,
        rid: &str,
        model: &str,
        protocol: &'static str,
        code: tonic::Code,
        start: Instant,
        result: Option<&JobResult>,
    ) {
        let total = start.elapsed();
        self.metrics.request(model, protocol, code, total);
        if let Some(m) = self.models.iter().find(|m| m.name == model) {
            let mut c = m.stats.lock().unwrap_or_else(|e| e.into_inner());
            let ns = total.as_nanos() as u64;
            match result {
                Some(r) => {
                    c.success.0 += 1;
                    c.success.1 += ns;
                    c.queue.0 += 1;
                    c.queue.1 += r.queue.as_nanos() as u64;
                    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                    let c = &mut *c;
                    for (slot, d) in [
                        (&mut c.compute_input, r.compute_input),
                        (&mut c.compute_infer, r.compute_infer),
                        (&mut c.compute_output, r.compute_output),
                    ] {
                        slot.0 += 1;
                        slot.1 += ns(d);
                    }
                    c.inference_count += r
                        .outputs
                        .first()
                        .and_then(|(_, t)| t.shape().first().copied())
                        .unwrap_or(1) as u64;
                    c.last_inference_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                }
                None => {
                    c.fail.0 += 1;
                    c.fail.1 += ns;
                }
            }
        }
        if self.log_requests {
            let (queue, compute, batch) = result.map_or((0.0, 0.0, 0), |r| {
                (r.queue.as_secs_f64() * 1e3, r.compute.as_secs_f64() * 1e3, r.batch_rows)
            });
            tracing::info!(
                target: REQUEST_TARGET,
                request_id = rid,
                model,
                protocol,
                status = ?code,
                batch_rows = batch,
                queue_ms = queue,
                compute_ms = compute,
                total_ms = total.as_secs_f64() * 1e3,
                "request"
            );
        }
    }

    /// RESOURCE_EXHAUSTED for a request message above `--max-message-bytes`.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), ServeError> {
        if encoded_len > self.max_message_bytes {
            return Err(ServeError::ResourceExhausted(format!(
                "request of {encoded_len} bytes exceeds the server's limit of {} bytes",
                self.max_message_bytes
            )));
        }
        Ok(())
    }

    /// A model by name; an empty name picks the only (or first) model.
    pub fn model(&self, name: &str, version: &str) -> Result<&Arc<Model>, ServeError> {
        if !version.is_empty() && version != "1" {
            return Err(ServeError::NotFound(format!(
                "model '{name}' has no version '{version}' (weft serves version 1)"
            )));
        }
        if name.is_empty() {
            return self
                .models
                .first()
                .ok_or_else(|| ServeError::NotFound("no model is loaded".into()));
        }
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            ServeError::NotFound(format!(
                "unknown model '{name}' (serving: {})",
                self.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Queues `input` for `model` and waits for its rows of the batch result.
    pub async fn infer(
        &self,
        model: &Model,
        input: Tensor,
        deadline: Option<Instant>,
        request_id: &str,
    ) -> Result<JobResult, ServeError> {
        // A model reopening its device after a failure reports not ready (probes route
        // traffic elsewhere) but still queues what arrives: it runs once the device is back.
        if !self.ready.load(Ordering::SeqCst) {
            return Err(ServeError::Unavailable("the server is not ready".into()));
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(ServeError::DeadlineExceeded);
        }
        let (reply, rx) = oneshot::channel();
        let keep = self.collector.as_ref().map(|_| input.clone());
        /// Counts this request as pending for the batcher until it is answered.
        struct Pending<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        model.worker.pending.fetch_add(1, Ordering::SeqCst);
        let _pending = Pending(&model.worker.pending);
        model.worker.submit(Job {
            input,
            deadline,
            enqueued: Instant::now(),
            reply,
        })?;
        let mut fatal = self.fatal.clone();
        let result = tokio::select! {
            r = rx => r.map_err(|_| ServeError::Unavailable("the model stopped".into()))??,
            _ = fatal.wait_for(Option::is_some) => {
                return Err(ServeError::Unavailable("the device failed; the server is restarting".into()));
            }
        };
        if let (Some(c), Some(input)) = (&self.collector, keep) {
            c.maybe_collect(&model.name, request_id, &input, &result.outputs);
        }
        Ok(result)
    }
}

/// Opens the engine for a package on the configured device.
fn engine_for(
    package: &Package,
    device: &str,
    portable: bool,
    kernels: weft_opencl::KernelSet,
) -> Result<Engine, ServeError> {
    let reference = || {
        weft_reference::Executor::new(package.graph.clone())
            .map(|e| Engine::Reference(e.with_f16_activations(package.precision == weft_package::Precision::F16)))
            .map_err(|e| ServeError::Setup(e.to_string()))
    };
    match device {
        "reference" => reference(),
        "auto" => {
            let opts = weft_opencl::SessionOptions {
                device: "pocl".into(),
                portable,
                kernels,
                ..Default::default()
            };
            match weft_opencl::Session::new(package, &opts) {
                Ok(s) => Ok(Engine::OpenCl(Box::new(s))),
                Err(e) => {
                    tracing::warn!(
                        model = %package.name,
                        "PoCL is not available ({e}); serving on the reference executor"
                    );
                    reference()
                }
            }
        }
        other => {
            let opts = weft_opencl::SessionOptions {
                device: other.to_string(),
                portable,
                kernels,
                ..Default::default()
            };
            weft_opencl::Session::new(package, &opts)
                .map(|s| Engine::OpenCl(Box::new(s)))
                .map_err(|e| ServeError::Setup(e.to_string()))
        }
    }
}

/// A running server: its bound addresses and a way to stop it.
#[derive(Debug)]
pub struct Served {
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
}

/// Builds every model's worker, binds the ports and serves until `shutdown` resolves (the
/// CLI passes SIGTERM/SIGINT), then drains in-flight requests. `on_ready` is called with
/// the bound addresses once models are loaded.
pub async fn serve(
    config: ServeConfig,
    on_ready: impl FnOnce(&Served),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let faults = crate::fault::FaultPlan::from_env().map_err(ServeError::Setup)?;
    if !faults.is_empty() {
        tracing::warn!("injecting device faults ({}): a test run", crate::fault::ENV);
    }
    let (fatal_tx, fatal_rx) = tokio::sync::watch::channel(None::<String>);
    let policy = BatchPolicy {
        max_batch: config.max_batch.max(1),
        max_delay: config.max_queue_delay,
        queue_depth: config.queue_depth.max(1),
    };
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(|e| ServeError::Setup(format!("binding {}: {e}", config.grpc_addr)))?;
    let grpc_addr = grpc.local_addr().map_err(|e| ServeError::Setup(e.to_string()))?;
    let http = match config.http_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| ServeError::Setup(format!("binding {a}: {e}")))?,
        ),
        None => None,
    };
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let state = Arc::new(AppState {
        models: Vec::new(),
        keys: Keys::new(config.api_keys.clone()),
        metrics: metrics.clone(),
        collector: config.collect.clone().map(|(d, r)| Collector::new(d, r)),
        ready: AtomicBool::new(false),
        fatal: fatal_rx.clone(),
        policy,
        log_requests: false,
        max_message_bytes: config.max_message_bytes,
    });
    // HTTP comes up first so /healthz answers and /readyz says "not ready" while models load.
    let http_state = Arc::new(crate::http::HttpState {
        app: std::sync::RwLock::new(state.clone()),
    });
    if let Some(listener) = http {
        tokio::spawn(crate::http::run(listener, http_state.clone()));
    }
    let mut models = Vec::new();
    for (name, package) in &config.models {
        let spec = InputSpec::new(package, config.max_image_pixels, policy.max_batch)?;
        let (package2, device, portable, kernels) = (
            package.clone(),
            config.device.clone(),
            config.portable_kernels,
            config.kernels,
        );
        // Opens the engine and runs batch 1 and the largest batch once, so that no request
        // pays for planning or for the device's first-launch kernel compilation. Also how a
        // worker reopens its device after a failure.
        let open = move || -> Result<Engine, ServeError> {
            let mut e = engine_for(&package2, &device, portable, kernels)?;
            for batch in [1, policy.max_batch] {
                e.warm_up(&package2, batch).map_err(ServeError::Setup)?;
            }
            Ok(e)
        };
        let first = open.clone();
        let engine = tokio::task::spawn_blocking(first)
            .await
            .map_err(|e| ServeError::Setup(e.to_string()))??;
        let health = crate::batcher::Health {
            rebuild: Box::new(move || open().map_err(|e| e.to_string())),
            faults: faults.clone(),
            max_failures: 3,
            fatal: fatal_tx.clone(),
        };
        let worker = Worker::start(name.clone(), package.clone(), engine, policy, metrics.clone(), health);
        tracing::info!(model = %name, precision = %package.precision, engine = %worker.description, "model loaded");
        models.push(Arc::new(Model {
            name: name.clone(),
            package: package.clone(),
            spec,
            worker,
            stats: Default::default(),
        }));
    }
    let state = Arc::new(AppState {
        models,
        keys: Keys::new(config.api_keys.clone()),
        metrics,
        collector: config.collect.clone().map(|(d, r)| Collector::new(d, r)),
        ready: AtomicBool::new(true),
        fatal: fatal_rx.clone(),
        policy,
        log_requests: config.log_requests,
        max_message_bytes: config.max_message_bytes,
    });
    if state.keys.is_enabled() {
        tracing::info!(active = config.api_keys.len(), "API keys required");
    }
    if let Ok(mut slot) = http_state.app.write() {
        *slot = state.clone();
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<GrpcInferenceServiceServer<crate::kserve::KServe>>()
        .await;
    health_reporter
        .set_serving::<PredictionServiceServer<crate::tfserving::TfServing>>()
        .await;
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both protocol versions: grpcurl speaks v1, many client libraries still v1alpha.
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    // The transport refuses messages past 4x the limit outright (OUT_OF_RANGE); handlers
    // answer RESOURCE_EXHAUSTED for anything past the limit itself.
    let hard_limit = config.max_message_bytes.saturating_mul(4);
    let kserve = GrpcInferenceServiceServer::new(crate::kserve::KServe { state: state.clone() })
        .max_decoding_message_size(hard_limit)
        .max_encoding_message_size(usize::MAX);
    let tf = PredictionServiceServer::new(crate::tfserving::TfServing { state: state.clone() })
        .max_decoding_message_size(hard_limit)
        .max_encoding_message_size(usize::MAX);
    let mut builder = Server::builder();
    if let Some((cert, key)) = &config.tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| ServeError::Setup(format!("TLS: {e}")))?;
    }
    let served = Served { grpc_addr, http_addr };
    on_ready(&served);
    // Small responses must not wait for the peer's delayed ACK (Nagle): without this every
    // request paid about 40 ms on Linux.
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc), |conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    // The device watchdog: a batch past the device timeout means the device hangs.
    let watched = state.clone();
    let timeout = config.device_timeout;
    let watchdog_fatal = fatal_tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            for m in &watched.models {
                if m.worker.busy_for().is_some_and(|d| d > timeout) {
                    m.worker.ready.store(false, Ordering::SeqCst);
                    let why = format!(
                        "model {}: a batch has run for more than {:.1} s (--device-timeout); the device is not responding",
                        m.name,
                        timeout.as_secs_f64()
                    );
                    tracing::error!("{why}; the server stops so that it can be restarted");
                    watchdog_fatal.send_replace(Some(why));
                    return;
                }
            }
        }
    });
    let ready_flag = state.clone();
    let mut fatal = fatal_rx.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down, finishing in-flight requests"),
            _ = fatal.wait_for(Option::is_some) => tracing::error!("device failed, shutting down"),
        }
        ready_flag.ready.store(false, Ordering::SeqCst);
    };
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(kserve)
        .add_service(tf)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let failed = fatal_rx.borrow().clone();
    match failed {
        Some(why) => Err(ServeError::DeviceFailed(why)),
        None => Ok(()),
    }
}
