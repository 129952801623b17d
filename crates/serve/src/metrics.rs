//! Prometheus metrics (through `prometheus-client`, which escapes label values and writes
//! the OpenMetrics text format): requests by model, protocol and status; latency histograms
//! for queue, compute and total; batch sizes; device failures; in-flight requests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    protocol: String,
    status: String,
}

/// A served model version and the device that runs it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    model: String,
    version: String,
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn batch_sizes() -> Histogram {
    Histogram::new(BATCH_BUCKETS.iter().copied())
}

type Histograms = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    queue: Histograms,
    compute: Histograms,
    total: Histograms,
    batch: Histograms,
    device_failures: Family<ModelLabel, Counter>,
    devices: Family<DeviceLabels, Gauge>,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            queue: Family::new_with_constructor(latency as fn() -> Histogram),
            compute: Family::new_with_constructor(latency as fn() -> Histogram),
            total: Family::new_with_constructor(latency as fn() -> Histogram),
            batch: Family::new_with_constructor(batch_sizes as fn() -> Histogram),
            device_failures: Family::default(),
            devices: Family::default(),
            in_flight: Gauge::default(),
        };
        let mut registry = Registry::default();
        // counters are written with the `_total` suffix: weft_requests_total, weft_device_failures_total
        registry.register(
            "weft_requests",
            "Inference requests by model, protocol and gRPC status",
            m.requests.clone(),
        );
        registry.register("weft_queue_seconds", "Time requests wait for a batch", m.queue.clone());
        registry.register("weft_compute_seconds", "Device time per batch", m.compute.clone());
        registry.register(
            "weft_request_seconds",
            "Total time per request, decoding to response",
            m.total.clone(),
        );
        registry.register("weft_batch_size", "Requests' rows per executed batch", m.batch.clone());
        registry.register(
            "weft_device_failures",
            "Batches the device failed (each answered with errors and followed by reopening the device)",
            m.device_failures.clone(),
        );
        registry.register("weft_in_flight_requests", "Requests being handled", m.in_flight.clone());
        registry.register(
            "weft_device_info",
            "1 for each served model version, labelled with the device that runs it",
            m.devices.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

fn model(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_string(),
    }
}

fn device_labels(model: &str, version: &str, device: &str) -> DeviceLabels {
    DeviceLabels {
        model: model.to_string(),
        version: version.to_string(),
        device: device.to_string(),
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }

    pub fn request(&self, model_name: &str, protocol: &'static str, code: tonic::Code, total: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model_name.to_string(),
                protocol: protocol.to_string(),
                status: format!("{code:?}"),
            })
            .inc();
        self.total
            .get_or_create(&model(model_name))
            .observe(total.as_secs_f64());
    }

    pub fn queue(&self, model_name: &str, d: Duration) {
        self.queue.get_or_create(&model(model_name)).observe(d.as_secs_f64());
    }

    /// A model version now served on `device`.
    pub fn device_info(&self, model_name: &str, version: &str, device: &str) {
        self.devices
            .get_or_create(&device_labels(model_name, version, device))
            .set(1);
    }

    /// A model version no longer served on `device`.
    pub fn device_gone(&self, model_name: &str, version: &str, device: &str) {
        self.devices.remove(&device_labels(model_name, version, device));
    }

    /// A batch the device failed.
    pub fn device_failure(&self, model_name: &str) {
        self.device_failures.get_or_create(&model(model_name)).inc();
    }

    pub fn batch(&self, model_name: &str, size: usize, compute: Duration) {
        self.batch.get_or_create(&model(model_name)).observe(size as f64);
        self.compute
            .get_or_create(&model(model_name))
            .observe(compute.as_secs_f64());
    }

    /// The metrics as OpenMetrics text (`CONTENT_TYPE`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_counts_add_up() {
        let m = Metrics::default();
        let name = "a \"quoted\"\\model\nname";
        let _f = m.start();
        m.request(name, "kserve", tonic::Code::Ok, Duration::from_millis(3));
        m.request(name, "kserve", tonic::Code::Ok, Duration::from_millis(30));
        m.batch("r8", 2, Duration::from_micros(700));
        m.device_failure("r8");
        m.device_info("r8", "1", "pthread (Portable Computing Language)");
        m.device_info("r8", "2", "reference (CPU oracle)");
        m.device_gone("r8", "2", "reference (CPU oracle)");
        let text = m.render();
        assert!(
            text.contains(
                r#"weft_device_info{model="r8",version="1",device="pthread (Portable Computing Language)"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("CPU oracle"), "{text}");
        assert!(
            text.contains(r#"weft_requests_total{model="a \"quoted\"\\model\nname",protocol="kserve",status="Ok"} 2"#),
            "{text}"
        );
        assert!(!text.contains("model\nname"), "a raw newline in a label value: {text}");
        assert!(
            text.contains(r#"weft_batch_size_bucket{le="2.0",model="r8"} 1"#)
                || text.contains(r#"weft_batch_size_bucket{model="r8",le="2.0"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"weft_device_failures_total{model="r8"} 1"#), "{text}");
        assert!(text.contains("weft_in_flight_requests 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
