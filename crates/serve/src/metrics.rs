//! Prometheus metrics: requests by model, protocol and status; latency histograms for
//! queue, compute and total; batch sizes; in-flight requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, &b) in buckets.iter().enumerate() {
            if v <= b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, &b) in buckets.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, &'static str, String), u64>,
    queue: BTreeMap<String, Histogram>,
    compute: BTreeMap<String, Histogram>,
    total: BTreeMap<String, Histogram>,
    batch: BTreeMap<String, Histogram>,
    device_failures: BTreeMap<String, u64>,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request(&self, model: &str, protocol: &'static str, code: tonic::Code, total: Duration) {
        let mut m = self.lock();
        *m.requests
            .entry((model.to_string(), protocol, format!("{code:?}")))
            .or_default() += 1;
        m.total
            .entry(model.to_string())
            .or_default()
            .observe(LATENCY_BUCKETS, total.as_secs_f64());
    }

    pub fn queue(&self, model: &str, d: Duration) {
        self.lock()
            .queue
            .entry(model.to_string())
            .or_default()
            .observe(LATENCY_BUCKETS, d.as_secs_f64());
    }

    /// A batch the device failed.
    pub fn device_failure(&self, model: &str) {
        *self.lock().device_failures.entry(model.to_string()).or_default() += 1;
    }

    pub fn batch(&self, model: &str, size: usize, compute: Duration) {
        let mut m = self.lock();
        m.batch
            .entry(model.to_string())
            .or_default()
            .observe(BATCH_BUCKETS, size as f64);
        m.compute
            .entry(model.to_string())
            .or_default()
            .observe(LATENCY_BUCKETS, compute.as_secs_f64());
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP weft_requests_total Inference requests by model, protocol and gRPC status."
        );
        let _ = writeln!(out, "# TYPE weft_requests_total counter");
        for ((model, protocol, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "weft_requests_total{{model=\"{model}\",protocol=\"{protocol}\",status=\"{code}\"}} {n}"
            );
        }
        for (name, help, map, buckets) in [
            (
                "weft_queue_seconds",
                "Time requests wait for a batch.",
                &m.queue,
                LATENCY_BUCKETS,
            ),
            (
                "weft_compute_seconds",
                "Device time per batch.",
                &m.compute,
                LATENCY_BUCKETS,
            ),
            (
                "weft_request_seconds",
                "Total time per request, decoding to response.",
                &m.total,
                LATENCY_BUCKETS,
            ),
            (
                "weft_batch_size",
                "Requests' rows per executed batch.",
                &m.batch,
                BATCH_BUCKETS,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (model, h) in map {
                h.render(&mut out, name, &format!("model=\"{model}\""), buckets);
            }
        }
        let _ = writeln!(
            out,
            "# HELP weft_device_failures_total Batches the device failed (each answered with errors and followed by reopening the device)."
        );
        let _ = writeln!(out, "# TYPE weft_device_failures_total counter");
        for (model, n) in &m.device_failures {
            let _ = writeln!(out, "weft_device_failures_total{{model=\"{model}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP weft_in_flight_requests Requests being handled.");
        let _ = writeln!(out, "# TYPE weft_in_flight_requests gauge");
        let _ = writeln!(
            out,
            "weft_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}
