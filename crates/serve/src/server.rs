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
    /// Instances per model (a repository model's config may set its own).
    pub instances: usize,
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
    /// How long an HTTP client may take for its TLS handshake and each request's headers.
    pub http_header_timeout: Duration,
    /// A Triton-layout model repository (`--model-repository`), served beside `models`.
    pub repository: Option<crate::repository::RepositoryConfig>,
}

/// One served model.
pub struct Model {
    pub name: String,
    /// "1" for `--model` packages; the version directory's name for repository models.
    pub version: String,
    /// This model's batching (a repository model's config may set its own).
    pub policy: BatchPolicy,
    /// Loaded from the model repository (so polling and unloading may remove it).
    pub from_repository: bool,
    pub package: Arc<Package>,
    /// The model's inputs, in the graph's order.
    pub inputs: Vec<InputSpec>,
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
    /// The served models and versions; replaced whole as models load and unload, so a
    /// request holds its model (and drains on it) however the list changes.
    pub models: std::sync::RwLock<Vec<Arc<Model>>>,
    /// Opens models (absent in the placeholder state served while loading).
    pub loader: Option<Arc<Loader>>,
    /// The model repository and its control mode, when serving one.
    pub repository: Option<crate::repository::Repository>,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    pub collector: Option<Collector>,
    pub ready: AtomicBool,
    /// Set with the reason when a device failed beyond recovery.
    pub fatal: tokio::sync::watch::Receiver<Option<String>>,
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
        let version = result.map(|r| r.version.as_str());
        let target = self
            .models()
            .into_iter()
            .filter(|m| m.name == model && version.is_none_or(|v| v == m.version))
            .max_by_key(|m| version_key(&m.version));
        if let Some(m) = target {
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

    /// The models and versions served now.
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.models.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether every loaded model can take requests (and, without a repository, that there
    /// is one: a repository in explicit mode may be ready with none loaded).
    pub fn all_ready(&self) -> bool {
        let models = self.models();
        self.ready.load(Ordering::SeqCst)
            && (self.repository.is_some() || !models.is_empty())
            && models.iter().all(|m| m.worker.is_ready())
    }

    /// A model by name and version. An empty name picks the first model; an empty version
    /// the newest ready version (by number), or the newest when none is ready.
    pub fn model(&self, name: &str, version: &str) -> Result<Arc<Model>, ServeError> {
        let models = self.models();
        let name = match (name.is_empty(), models.first()) {
            (true, Some(first)) => first.name.clone(),
            (true, None) => return Err(ServeError::NotFound("no model is loaded".into())),
            (false, _) => name.to_string(),
        };
        let versions: Vec<&Arc<Model>> = models.iter().filter(|m| m.name == name).collect();
        if versions.is_empty() {
            let mut names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            names.dedup();
            return Err(ServeError::NotFound(format!(
                "unknown model '{name}' (serving: {})",
                names.join(", ")
            )));
        }
        if !version.is_empty() {
            return versions
                .iter()
                .find(|m| m.version == version)
                .map(|m| Arc::clone(m))
                .ok_or_else(|| {
                    let have: Vec<&str> = versions.iter().map(|m| m.version.as_str()).collect();
                    ServeError::NotFound(format!(
                        "model '{name}' has no version '{version}' (serving: {})",
                        have.join(", ")
                    ))
                });
        }
        let newest = |ready_only: bool| {
            versions
                .iter()
                .filter(|m| !ready_only || m.worker.is_ready())
                .max_by_key(|m| version_key(&m.version))
                .map(|m| Arc::clone(m))
        };
        newest(true)
            .or_else(|| newest(false))
            .ok_or_else(|| ServeError::NotFound(format!("unknown model '{name}'")))
    }

    /// Adds a model version, replacing the same name and version if served.
    pub fn insert_model(&self, model: Arc<Model>) {
        if let Ok(mut list) = self.models.write() {
            let (replaced, mut next): (Vec<Arc<Model>>, Vec<Arc<Model>>) = list
                .iter()
                .cloned()
                .partition(|m| m.name == model.name && m.version == model.version);
            for old in replaced
                .iter()
                .filter(|m| m.worker.description != model.worker.description)
            {
                self.metrics
                    .device_gone(&old.name, &old.version, &old.worker.description);
            }
            next.push(model);
            next.sort_by(|a, b| {
                a.name
                    .cmp(&b.name)
                    .then(version_key(&a.version).cmp(&version_key(&b.version)))
            });
            *list = next;
        }
    }

    /// Stops serving the versions `which` selects; requests holding them finish first.
    pub fn remove_models(&self, which: impl Fn(&Model) -> bool) -> Vec<Arc<Model>> {
        let Ok(mut list) = self.models.write() else {
            return vec![];
        };
        let (gone, kept): (Vec<_>, Vec<_>) = list.iter().cloned().partition(|m| which(m));
        for m in &gone {
            self.metrics.device_gone(&m.name, &m.version, &m.worker.description);
        }
        *list = kept;
        gone
    }

    /// Queues `input` for `model` and waits for its rows of the batch result.
    pub async fn infer(
        &self,
        model: &Model,
        inputs: Vec<(String, Tensor)>,
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
        let keep = self.collector.as_ref().map(|_| inputs.clone());
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
            inputs,
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
        if let (Some(c), Some(inputs)) = (&self.collector, keep) {
            c.maybe_collect(&model.name, request_id, &inputs, &result.outputs);
        }
        let mut result = result;
        result.version = model.version.clone();
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

/// Opens models: a package's engine (warmed up at batch 1 and its largest batch), its
/// worker thread and its input checks.
pub struct Loader {
    device: String,
    portable: bool,
    kernels: weft_opencl::KernelSet,
    max_pixels: u64,
    /// The command line's batching, for models whose configuration sets none.
    pub policy: BatchPolicy,
    metrics: Arc<Metrics>,
    faults: crate::fault::FaultPlan,
    fatal: tokio::sync::watch::Sender<Option<String>>,
}

impl Loader {
    pub async fn load(
        &self,
        name: &str,
        version: &str,
        package: Arc<Package>,
        policy: BatchPolicy,
        from_repository: bool,
    ) -> Result<Arc<Model>, ServeError> {
        // a model exported with a fixed batch dimension runs exactly that many rows: its
        // batches are never joined beyond it (nor its requests split)
        let policy = match package
            .graph
            .inputs
            .iter()
            .find_map(|i| i.shape.first().copied().flatten())
        {
            Some(fixed) => BatchPolicy {
                max_batch: fixed.max(1),
                ..policy
            },
            None => policy,
        };
        let inputs = InputSpec::all(&package, self.max_pixels, policy.max_batch)?;
        let (package2, device, portable, kernels) = (package.clone(), self.device.clone(), self.portable, self.kernels);
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
        // a cold start (kernels not cached yet) takes seconds: say what is happening
        tracing::info!(
            model = %name,
            version,
            "loading: opening the device and warming up at batch 1 and {} (first runs compile the kernels)",
            policy.max_batch
        );
        let started = std::time::Instant::now();
        let mut instances = Vec::with_capacity(policy.instances);
        for _ in 0..policy.instances.max(1) {
            let engine = tokio::task::spawn_blocking(open.clone())
                .await
                .map_err(|e| ServeError::Setup(e.to_string()))??;
            let reopen = open.clone();
            instances.push(crate::batcher::Instance {
                engine,
                health: crate::batcher::Health {
                    rebuild: Box::new(move || reopen().map_err(|e| e.to_string())),
                    faults: self.faults.clone(),
                    max_failures: 3,
                    fatal: self.fatal.clone(),
                },
            });
        }
        let worker = Worker::start(name.to_string(), instances, policy, self.metrics.clone());
        self.metrics.device_info(name, version, &worker.description);
        tracing::info!(
            model = %name,
            version,
            precision = %package.precision,
            engine = %worker.description,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "model loaded"
        );
        Ok(Arc::new(Model {
            name: name.to_string(),
            version: version.to_string(),
            policy,
            from_repository,
            package,
            inputs,
            worker,
            stats: Default::default(),
        }))
    }
}

/// Orders versions by number (non-numeric names sort first, by name).
pub fn version_key(v: &str) -> (u64, String) {
    (v.parse().unwrap_or(0), v.to_string())
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
        instances: config.instances.max(1),
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
    let loader = Arc::new(Loader {
        device: config.device.clone(),
        portable: config.portable_kernels,
        kernels: config.kernels,
        max_pixels: config.max_image_pixels,
        policy,
        metrics: metrics.clone(),
        faults,
        fatal: fatal_tx.clone(),
    });
    let placeholder = Arc::new(AppState {
        models: Default::default(),
        loader: None,
        repository: None,
        keys: Keys::new(config.api_keys.clone()),
        metrics: metrics.clone(),
        collector: None,
        ready: AtomicBool::new(false),
        fatal: fatal_rx.clone(),
        log_requests: false,
        max_message_bytes: config.max_message_bytes,
    });
    // HTTP comes up first so /healthz answers and /readyz says "not ready" while models load.
    let http_state = Arc::new(crate::http::HttpState {
        app: std::sync::RwLock::new(placeholder),
    });
    if let Some(listener) = http {
        // the HTTP side uses the gRPC side's certificate: keys never cross the wire in clear
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::http::tls_acceptor(cert, key).map_err(ServeError::Setup)?),
            None => None,
        };
        let listen = crate::http::Listen {
            tls,
            header_timeout: config.http_header_timeout,
        };
        tokio::spawn(crate::http::run(listener, http_state.clone(), listen));
    }
    let mut models = Vec::new();
    for (name, package) in &config.models {
        models.push(loader.load(name, "1", package.clone(), policy, false).await?);
    }
    let state = Arc::new(AppState {
        models: std::sync::RwLock::new(models),
        loader: Some(loader),
        repository: config.repository.clone().map(crate::repository::Repository::new),
        keys: Keys::new(config.api_keys.clone()),
        metrics,
        collector: config.collect.clone().map(|(d, r)| Collector::new(d, r)),
        ready: AtomicBool::new(false),
        fatal: fatal_rx.clone(),
        log_requests: config.log_requests,
        max_message_bytes: config.max_message_bytes,
    });
    if let Some(repo) = &state.repository {
        repo.start(&state).await?;
    }
    state.ready.store(true, Ordering::SeqCst);
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
            for m in watched.models() {
                if m.worker.busy_for().is_some_and(|d| d > timeout) {
                    m.worker.set_unready();
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
