//! Model data collection: a sampled share of requests' inputs and outputs written as
//! `.npy` files under `--collect-dir DIR/<model>/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use weft_core::Tensor;

#[derive(Debug)]
pub struct Collector {
    dir: PathBuf,
    rate: f64,
    seen: AtomicU64,
}

impl Collector {
    pub fn new(dir: PathBuf, rate: f64) -> Self {
        Collector {
            dir,
            rate: rate.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
        }
    }

    /// Writes this request's tensors when it falls in the sample (every 1/rate-th request):
    /// `<stamp>_<id>_input.npy` for a single-input model, `..._input_<name>.npy` for each
    /// input of a model with several, and `..._<output>.npy` for each output.
    pub fn maybe_collect(
        &self,
        model: &str,
        request_id: &str,
        inputs: &[(String, Tensor)],
        outputs: &[(String, Tensor)],
    ) {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if self.rate <= 0.0 || ((n as f64 * self.rate).floor() == (((n + 1) as f64) * self.rate).floor()) {
            return;
        }
        let dir = self.dir.join(model);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let base = format!("{stamp}_{request_id}");
        let safe = |name: &str| -> String {
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        };
        match inputs {
            [(_, t)] => {
                let _ = weft_core::npy::write(&dir.join(format!("{base}_input.npy")), t);
            }
            several => {
                for (name, t) in several {
                    let _ = weft_core::npy::write(&dir.join(format!("{base}_input_{}.npy", safe(name))), t);
                }
            }
        }
        for (name, t) in outputs {
            let _ = weft_core::npy::write(&dir.join(format!("{base}_{}.npy", safe(name))), t);
        }
    }
}
