//! Per-model worker threads: a bounded queue of jobs, coalesced into batches of up to
//! `max_batch` rows within `max_delay`, run on the device, split back per request.
//! Expired requests are dropped before compute.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use weft_core::Tensor;
use weft_package::Package;

use crate::ServeError;
use crate::metrics::Metrics;

/// What runs a model's batches.
pub enum Engine {
    Reference(weft_reference::Executor),
    OpenCl(Box<weft_opencl::Session>),
}

impl Engine {
    fn run(&mut self, inputs: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, String> {
        match self {
            Engine::Reference(e) => e.run(inputs).map_err(|e| e.to_string()),
            Engine::OpenCl(s) => s.run(inputs).map_err(|e| e.to_string()),
        }
    }

    /// Host time the last run spent putting its input on the device (none for the
    /// reference executor, which reads it in place).
    fn last_upload_time(&self) -> Duration {
        match self {
            Engine::Reference(_) => Duration::ZERO,
            Engine::OpenCl(s) => s.last_upload_time(),
        }
    }

    /// Runs a batch of zeros (plans it and triggers any first-launch compilation).
    pub fn warm_up(&mut self, package: &Package, batch: usize) -> Result<(), String> {
        let mut feeds = HashMap::new();
        for input in &package.graph.inputs {
            let shape = input.concrete_shape(batch);
            let zeros = Tensor::from_f32(&shape, vec![0.0; shape.iter().product()]).map_err(|e| e.to_string())?;
            feeds.insert(input.name.clone(), zeros.cast(input.dtype));
        }
        self.run(&feeds).map(|_| ())
    }

    pub fn describe(&self) -> String {
        match self {
            Engine::Reference(_) => "reference (CPU oracle)".into(),
            Engine::OpenCl(s) => format!(
                "{} ({}), int8 hook {}",
                s.device().name,
                s.device().platform,
                s.hook().name()
            ),
        }
    }
}

/// One request's rows, waiting for a batch.
pub struct Job {
    /// Every model input, in the graph's order, all with the same rows.
    pub inputs: Vec<(String, Tensor)>,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<JobResult, ServeError>>,
}

#[derive(Debug)]
pub struct JobResult {
    pub outputs: Vec<(String, Tensor)>,
    pub queue: Duration,
    /// The whole batch's time on the worker (input, network, output).
    pub compute: Duration,
    /// The batch's input preparation: joining the requests' rows, quantizing and uploading.
    pub compute_input: Duration,
    /// The network on the device, its output reads included.
    pub compute_infer: Duration,
    /// Cutting this request's rows out of the batch's outputs.
    pub compute_output: Duration,
    pub batch_rows: usize,
    /// The model version that answered (set by the server).
    pub version: String,
}

/// One batch size's cumulative executions and nanoseconds, as Triton's `batch_stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchCounters {
    pub count: u64,
    pub input_ns: u64,
    pub infer_ns: u64,
    pub output_ns: u64,
}

/// Executions by batch size (rows).
pub type BatchStats = std::sync::Mutex<std::collections::BTreeMap<u64, BatchCounters>>;

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Batching limits.
#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue_depth: usize,
    /// Instances of the model (engines, each with its worker thread) sharing the queue.
    pub instances: usize,
}

/// Opens a fresh engine for a model (after a device failure), warmed up.
pub type Rebuild = Box<dyn FnMut() -> Result<Engine, String> + Send>;

/// How a worker copes with device failures.
pub struct Health {
    /// Opens a replacement engine after a failed batch.
    pub rebuild: Rebuild,
    /// Injected faults (the `WEFT_INJECT_FAULTS` test hook).
    pub faults: crate::fault::FaultPlan,
    /// Failed batches in a row, each followed by a rebuilt engine, before the worker gives
    /// up and reports the device as failed.
    pub max_failures: u32,
    /// Set (with the reason) when the device is beyond recovery: the server stops.
    pub fatal: tokio::sync::watch::Sender<Option<String>>,
}

/// One instance of a model: its own engine and thread, taking batches from the model's
/// shared queue.
pub struct Instance {
    pub engine: Engine,
    pub health: Health,
}

/// The handle requests use to reach a model's worker threads (one per instance).
pub struct Worker {
    tx: SyncSender<Job>,
    /// Each instance's readiness (false while it reopens its device).
    ready: Vec<Arc<AtomicBool>>,
    /// When each instance's batch now on the device started (milliseconds since `epoch`,
    /// plus one; 0 when idle), for the server's device watchdog.
    busy_since: Vec<Arc<std::sync::atomic::AtomicU64>>,
    epoch: Instant,
    pub description: String,
    /// Batches executed.
    pub executions: Arc<std::sync::atomic::AtomicU64>,
    /// Batches executed, by size.
    pub batch_stats: Arc<BatchStats>,
    /// Requests admitted for this model and not yet answered.
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Job {
    /// The request's rows (its batch size).
    fn rows(&self) -> usize {
        self.inputs
            .first()
            .and_then(|(_, t)| t.shape().first().copied())
            .unwrap_or(1)
    }
}

impl Worker {
    /// Starts one thread per instance, all taking batches from one queue: while one
    /// instance runs a batch on its device, the next gathers the following batch.
    pub fn start(name: String, instances: Vec<Instance>, policy: BatchPolicy, metrics: Arc<Metrics>) -> Worker {
        let (tx, rx) = sync_channel::<Job>(policy.queue_depth.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let count = instances.len();
        let description = match instances.first() {
            Some(i) if count > 1 => format!("{} x{count}", i.engine.describe()),
            Some(i) => i.engine.describe(),
            None => "no instances".into(),
        };
        let executions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let batch_stats = Arc::new(BatchStats::default());
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let epoch = Instant::now();
        let mut ready = Vec::with_capacity(count);
        let mut busy_since = Vec::with_capacity(count);
        for (k, Instance { mut engine, mut health }) in instances.into_iter().enumerate() {
            let flag = Arc::new(AtomicBool::new(true));
            let busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (name, metrics, rx) = (name.clone(), metrics.clone(), rx.clone());
            let (exec_count, by_size, waiting, taken) =
                (executions.clone(), batch_stats.clone(), pending.clone(), taken.clone());
            let (flag2, busy2) = (flag.clone(), busy.clone());
            let thread = if count > 1 {
                format!("weft-{name}-{k}")
            } else {
                format!("weft-{name}")
            };
            let spawn = std::thread::Builder::new().name(thread).spawn(move || {
                let mut w = WorkerState {
                    name: &name,
                    metrics: &metrics,
                    ready: &flag2,
                    executions: &exec_count,
                    batch_stats: &by_size,
                    busy: &busy2,
                    epoch,
                    health: &mut health,
                    batches: 0,
                    failures: 0,
                    pending: &waiting,
                    taken: &taken,
                };
                run_worker(&mut w, &mut engine, &rx, policy);
            });
            if spawn.is_err() {
                flag.store(false, Ordering::SeqCst);
            }
            ready.push(flag);
            busy_since.push(busy);
        }
        Worker {
            tx,
            ready,
            busy_since,
            epoch,
            description,
            executions,
            batch_stats,
            pending,
        }
    }

    /// Whether any instance can run a batch.
    pub fn is_ready(&self) -> bool {
        self.ready.iter().any(|r| r.load(Ordering::SeqCst))
    }

    /// Marks every instance not ready (the device stopped responding).
    pub fn set_unready(&self) {
        for r in &self.ready {
            r.store(false, Ordering::SeqCst);
        }
    }

    /// How long the longest-running batch now on a device has been running, if one is.
    pub fn busy_for(&self) -> Option<Duration> {
        self.busy_since
            .iter()
            .filter_map(|b| match b.load(Ordering::SeqCst) {
                0 => None,
                t => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(t - 1))),
            })
            .max()
    }

    /// Queues a job, or answers RESOURCE_EXHAUSTED when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ServeError> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ServeError::ResourceExhausted(
                "the model's request queue is full; retry later".into(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(ServeError::Unavailable("the model is not running".into())),
        }
    }
}

/// A worker thread's view of its model.
struct WorkerState<'a> {
    name: &'a str,
    metrics: &'a Metrics,
    ready: &'a AtomicBool,
    executions: &'a std::sync::atomic::AtomicU64,
    batch_stats: &'a BatchStats,
    busy: &'a std::sync::atomic::AtomicU64,
    epoch: Instant,
    health: &'a mut Health,
    /// Batches run so far (the fault hook's count).
    batches: u64,
    /// Failed batches in a row.
    failures: u32,
    /// The model's admitted, unanswered requests (all instances').
    pending: &'a std::sync::atomic::AtomicUsize,
    /// Of those, the ones instances have taken from the queue and not yet answered.
    taken: &'a std::sync::atomic::AtomicUsize,
}

fn run_worker(w: &mut WorkerState<'_>, engine: &mut Engine, rx: &std::sync::Mutex<Receiver<Job>>, policy: BatchPolicy) {
    loop {
        // One instance gathers a batch at a time; the others run theirs meanwhile.
        let Ok(queue) = rx.lock() else { return };
        let Ok(first) = queue.recv() else { return };
        let mut jobs = vec![first];
        let mut rows: usize = jobs[0].rows();
        let until = Instant::now() + policy.max_delay;
        let on_the_way = |jobs: &Vec<Job>| {
            w.pending
                .load(Ordering::SeqCst)
                .saturating_sub(w.taken.load(Ordering::SeqCst) + jobs.len())
        };
        while rows < policy.max_batch {
            // Nobody else is on the way: waiting would only add latency.
            if on_the_way(&jobs) == 0 {
                break;
            }
            let now = Instant::now();
            if now >= until {
                // take what is already waiting without blocking
                match queue.try_recv() {
                    Ok(j) => {
                        rows += j.rows();
                        jobs.push(j);
                        continue;
                    }
                    Err(_) => break,
                }
            }
            match queue.recv_timeout(until - now) {
                Ok(j) => {
                    rows += j.rows();
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let held = jobs.len();
        w.taken.fetch_add(held, Ordering::SeqCst);
        drop(queue);
        // Rows beyond max_batch go back into a second round.
        let mut now_jobs = Vec::new();
        let mut later = Vec::new();
        let mut taken = 0;
        for j in jobs {
            let n = j.rows();
            if taken + n <= policy.max_batch || now_jobs.is_empty() {
                taken += n;
                now_jobs.push(j);
            } else {
                later.push(j);
            }
        }
        let mut healthy = run_batch(w, engine, now_jobs);
        for j in later {
            if healthy {
                healthy = run_batch(w, engine, vec![j]);
            } else {
                refuse(j);
            }
        }
        w.taken.fetch_sub(held, Ordering::SeqCst);
        if !healthy {
            // answer what is queued: nothing more will run
            if let Ok(queue) = rx.lock() {
                while let Ok(j) = queue.try_recv() {
                    refuse(j);
                }
            }
            return;
        }
    }
}

/// Answers a job the failed device will not run.
fn refuse(j: Job) {
    let _ = j
        .reply
        .send(Err(ServeError::Unavailable("the device failed; retry later".into())));
}

/// After a failed batch: the model is not ready until a fresh engine is open (up to three
/// tries). Returns false when the device is beyond recovery (too many failed batches in a
/// row, or no engine opens), after reporting it as fatal.
fn recover(w: &mut WorkerState<'_>, engine: &mut Engine, reason: &str) -> bool {
    w.ready.store(false, Ordering::SeqCst);
    w.failures += 1;
    w.metrics.device_failure(w.name);
    tracing::warn!(model = %w.name, failures = w.failures, "device failure: {reason}");
    let give_up = |w: &mut WorkerState<'_>, why: String| {
        tracing::error!(model = %w.name, "{why}; the server stops so that it can be restarted");
        w.health.fatal.send_replace(Some(format!("model {}: {why}", w.name)));
        false
    };
    if w.failures > w.health.max_failures {
        return give_up(w, format!("{} failed batches in a row", w.failures));
    }
    let mut last = String::new();
    for attempt in 1..=3u32 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut w.health.rebuild)) {
            Ok(Ok(fresh)) => {
                *engine = fresh;
                w.ready.store(true, Ordering::SeqCst);
                tracing::info!(model = %w.name, "device reopened, serving again");
                return true;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = "reopening the device panicked".into(),
        }
        tracing::warn!(model = %w.name, "reopening the device (try {attempt} of 3): {last}");
        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
    }
    give_up(w, format!("the device did not reopen: {last}"))
}

/// Runs one batch and answers its jobs. Returns false when the device failed beyond
/// recovery.
fn run_batch(w: &mut WorkerState<'_>, engine: &mut Engine, jobs: Vec<Job>) -> bool {
    let (name, metrics, ready, executions) = (w.name, w.metrics, w.ready, w.executions);
    let start = Instant::now();
    let (live, expired): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| j.deadline.is_none_or(|d| d > start) && !j.reply.is_closed());
    for j in expired {
        let _ = j.reply.send(Err(ServeError::DeadlineExceeded));
    }
    if live.is_empty() {
        return true;
    }
    let counts: Vec<usize> = live.iter().map(Job::rows).collect();
    let rows = counts.iter().sum();
    // each input's rows joined across the batch's requests
    let joined_feeds = (0..live[0].inputs.len())
        .map(|k| {
            let parts: Vec<&Tensor> = live.iter().filter_map(|j| j.inputs.get(k).map(|(_, t)| t)).collect();
            Ok((live[0].inputs[k].0.clone(), concat(&parts)?))
        })
        .collect::<Result<HashMap<String, Tensor>, String>>();
    let feeds = match joined_feeds {
        Ok(f) => f,
        Err(e) => {
            for j in live {
                let _ = j.reply.send(Err(ServeError::Internal(e.clone())));
            }
            return true;
        }
    };
    let joined = start.elapsed();
    w.batches += 1;
    let fault = w.health.faults.at(w.batches).cloned();
    w.busy.store(w.epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    // A panic in the device call (a driver bug) fails this batch, not the server.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match fault {
            Some(crate::fault::Fault::Fail) => return Err("injected device fault".to_string()),
            Some(crate::fault::Fault::Panic) => panic!("injected device panic"),
            Some(crate::fault::Fault::Hang(d)) => std::thread::sleep(d),
            None => {}
        }
        engine.run(&feeds)
    }));
    w.busy.store(0, Ordering::SeqCst);
    let ran = start.elapsed();
    let upload = engine.last_upload_time();
    let compute_input = joined + upload;
    let compute_infer = ran.saturating_sub(joined).saturating_sub(upload);
    let result = match result {
        Ok(r) => r.map_err(|e| (e, false)),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err((format!("the device call panicked: {what}"), true))
        }
    };
    match result {
        Ok(outputs) => {
            w.failures = 0;
            ready.store(true, Ordering::SeqCst);
            executions.fetch_add(1, Ordering::Relaxed);
            let mut offset = 0;
            let mut answers = Vec::with_capacity(live.len());
            // each output's bytes once, then every request's rows cut from them
            let serialized = Instant::now();
            let whole: Vec<(&String, &Tensor, Vec<u8>)> = outputs
                .iter()
                .map(|(k, t)| (k, t, if live.len() > 1 { t.to_le_bytes() } else { Vec::new() }))
                .collect();
            let share = serialized.elapsed() / live.len() as u32;
            for (j, n) in live.into_iter().zip(counts) {
                let cut = Instant::now();
                let outs = whole
                    .iter()
                    .map(|(k, t, bytes)| Ok(((*k).clone(), rows_of(t, bytes, offset, n)?)))
                    .collect::<Result<Vec<_>, String>>();
                offset += n;
                answers.push((j, outs, cut.elapsed() + share));
            }
            let compute = start.elapsed();
            metrics.batch(name, rows, compute);
            let output_total: Duration = answers.iter().map(|(_, _, d)| *d).sum();
            if let Ok(mut stats) = w.batch_stats.lock() {
                let c = stats.entry(rows as u64).or_default();
                c.count += 1;
                c.input_ns += ns(compute_input);
                c.infer_ns += ns(compute_infer);
                c.output_ns += ns(output_total);
            }
            for (j, outs, compute_output) in answers {
                let queue = start.saturating_duration_since(j.enqueued);
                metrics.queue(name, queue);
                let _ = j.reply.send(
                    outs.map(|outputs| JobResult {
                        outputs,
                        queue,
                        compute,
                        compute_input,
                        compute_infer,
                        compute_output,
                        batch_rows: rows,
                        version: String::new(),
                    })
                    .map_err(ServeError::Internal),
                );
            }
        }
        Err((e, panicked)) => {
            tracing::warn!(model = %name, rows, "device failure on a batch: {e}");
            for j in live {
                // a device error is worth a retry (UNAVAILABLE); a panic is a bug (INTERNAL)
                let err = if panicked {
                    ServeError::Internal(format!("device failure: {e}"))
                } else {
                    ServeError::Unavailable("the device failed on this batch; retry".into())
                };
                let _ = j.reply.send(Err(err));
            }
            return recover(w, engine, &e);
        }
    }
    true
}

/// Concatenates tensors of one element type along the first axis.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor, String> {
    let first = parts.first().ok_or("empty batch")?;
    if let [only] = parts {
        return Ok((*only).clone());
    }
    let mut shape = first.shape().to_vec();
    let mut bytes = Vec::new();
    let mut n = 0;
    for p in parts {
        if p.shape().get(1..) != first.shape().get(1..) || p.dtype() != first.dtype() {
            return Err(format!(
                "batch rows of different types or shapes: {} {:?} and {} {:?}",
                p.dtype(),
                p.shape(),
                first.dtype(),
                first.shape()
            ));
        }
        n += p.shape().first().copied().unwrap_or(1);
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    if let Some(s) = shape.first_mut() {
        *s = n;
    }
    Tensor::from_le_bytes(first.dtype(), &shape, &bytes).map_err(|e| e.to_string())
}

/// Rows `offset .. offset + n` of a tensor, in its own element type, cut from its
/// little-endian `bytes` (unused when the rows are the whole tensor).
pub fn rows_of(t: &Tensor, bytes: &[u8], offset: usize, n: usize) -> Result<Tensor, String> {
    let total = t.shape().first().copied().unwrap_or(1).max(1);
    if offset == 0 && n == total {
        return Ok(t.clone());
    }
    let row = t.len() / total * t.dtype().size_of();
    let slice = bytes
        .get(offset * row..(offset + n) * row)
        .ok_or("output rows out of range")?;
    let mut shape = t.shape().to_vec();
    if let Some(s) = shape.first_mut() {
        *s = n;
    }
    Tensor::from_le_bytes(t.dtype(), &shape, slice).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::DType;

    #[test]
    fn concat_and_rows_keep_the_element_type() {
        let a = Tensor::from_le_bytes(DType::I64, &[1, 2], &[1i64, -2].map(i64::to_le_bytes).concat()).unwrap();
        let b = Tensor::from_le_bytes(DType::I64, &[2, 2], &[3i64, 4, 5, 6].map(i64::to_le_bytes).concat()).unwrap();
        let j = concat(&[&a, &b]).unwrap();
        assert_eq!(j.dtype(), DType::I64);
        assert_eq!(j.shape(), &[3, 2]);
        assert_eq!(j.to_i64_vec(), vec![1, -2, 3, 4, 5, 6]);
        let r = rows_of(&j, &j.to_le_bytes(), 1, 2).unwrap();
        assert_eq!(r.dtype(), DType::I64);
        assert_eq!(r.to_i64_vec(), vec![3, 4, 5, 6]);
        let h = Tensor::from_f32(&[2, 1], vec![0.5, 1.5]).unwrap().cast(DType::F16);
        assert_eq!(
            rows_of(&h, &h.to_le_bytes(), 1, 1).unwrap().to_le_bytes(),
            h.to_le_bytes()[2..].to_vec()
        );
        assert!(concat(&[&a, &h]).is_err());
        assert!(rows_of(&j, &j.to_le_bytes(), 2, 2).is_err());
    }
}
