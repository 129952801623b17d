//! Calibration: per-tensor activation ranges from running calibration data through the f32
//! reference. Methods: `minmax`, `percentile` (clip the tails) and `entropy` (the threshold
//! minimising the KL divergence between the clipped and the quantized distributions, as
//! TensorRT's int8 calibrator does).

use std::collections::HashMap;
use std::str::FromStr;

use weft_core::Tensor;
use weft_reference::Executor;

use crate::QuantError;

/// Activation range per value name.
pub type Ranges = HashMap<String, (f32, f32)>;

const BINS: usize = 2048;

/// How ranges are chosen from the observed values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// Keep this percentile of values (for example 99.99) at each end.
    Percentile(f64),
    Entropy,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(Method::MinMax),
            "entropy" => Ok(Method::Entropy),
            "percentile" => Ok(Method::Percentile(99.99)),
            other => match other.strip_prefix("percentile:").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                _ => Err(format!(
                    "unknown calibration method '{other}' (minmax, percentile[:P], entropy)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::MinMax => write!(f, "minmax"),
            Method::Percentile(p) => write!(f, "percentile:{p}"),
            Method::Entropy => write!(f, "entropy"),
        }
    }
}

#[derive(Debug, Clone)]
struct Stats {
    lo: f32,
    hi: f32,
    /// Histogram over `[lo, hi]` for percentile, or of `|x|` over `[0, max(|lo|, hi)]` for
    /// entropy; filled in the second pass.
    hist: Vec<u64>,
}

/// Collects statistics over calibration batches.
#[derive(Debug)]
pub struct Calibrator<'e> {
    executor: &'e Executor,
    method: Method,
}

impl<'e> Calibrator<'e> {
    pub fn new(executor: &'e Executor, method: Method) -> Self {
        Calibrator { executor, method }
    }

    /// Runs every batch (each a map of graph input name to tensor) and returns the range of
    /// every float value. `progress` is called after each batch of each pass.
    pub fn run(
        &self,
        batches: &[HashMap<String, Tensor>],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Ranges, QuantError> {
        if batches.is_empty() {
            return Err(QuantError::Calibration("no calibration data".into()));
        }
        let passes = if self.method == Method::MinMax { 1 } else { 2 };
        let total = batches.len() * passes;
        let mut stats: HashMap<String, Stats> = HashMap::new();
        for (i, batch) in batches.iter().enumerate() {
            self.executor.run_observed(batch, &mut |name, t| {
                if let Tensor::F32(a) = t {
                    let (lo, hi) = a
                        .iter()
                        .filter(|v| v.is_finite())
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
                    if lo > hi {
                        return;
                    }
                    let e = stats.entry(name.to_string()).or_insert(Stats {
                        lo,
                        hi,
                        hist: Vec::new(),
                    });
                    e.lo = e.lo.min(lo);
                    e.hi = e.hi.max(hi);
                }
            })?;
            progress(i + 1, total);
        }
        if passes == 2 {
            for s in stats.values_mut() {
                s.hist = vec![0; BINS];
            }
            let entropy = self.method == Method::Entropy;
            for (i, batch) in batches.iter().enumerate() {
                self.executor.run_observed(batch, &mut |name, t| {
                    let (Tensor::F32(a), Some(s)) = (t, stats.get_mut(name)) else {
                        return;
                    };
                    let (base, width) = hist_frame(s, entropy);
                    // Exact zeros (ReLU's half of the values) are representable exactly and
                    // would dominate the KL search, so entropy leaves them out.
                    for &v in a.iter().filter(|v| v.is_finite() && !(entropy && **v == 0.0)) {
                        let x = if entropy { v.abs() } else { v };
                        let bin = (((x - base) / width) as usize).min(BINS - 1);
                        s.hist[bin] += 1;
                    }
                })?;
                progress(batches.len() + i + 1, total);
            }
        }
        Ok(stats.into_iter().map(|(name, s)| (name, self.range(&s))).collect())
    }

    fn range(&self, s: &Stats) -> (f32, f32) {
        match self.method {
            Method::MinMax => (s.lo, s.hi),
            Method::Percentile(p) => {
                let (base, width) = hist_frame(s, false);
                let total: u64 = s.hist.iter().sum();
                let tail = ((1.0 - p / 100.0) * total as f64) as u64;
                let mut acc = 0;
                let mut lo_bin = 0;
                for (i, &c) in s.hist.iter().enumerate() {
                    acc += c;
                    if acc > tail {
                        lo_bin = i;
                        break;
                    }
                }
                acc = 0;
                let mut hi_bin = BINS - 1;
                for (i, &c) in s.hist.iter().enumerate().rev() {
                    acc += c;
                    if acc > tail {
                        hi_bin = i;
                        break;
                    }
                }
                let lo = if s.lo >= 0.0 {
                    s.lo
                } else {
                    base + width * lo_bin as f32
                };
                (lo.max(s.lo), (base + width * (hi_bin + 1) as f32).min(s.hi))
            }
            Method::Entropy => {
                let (_, width) = hist_frame(s, true);
                let levels = if s.lo >= 0.0 { 255 } else { 128 };
                let t = width * kl_threshold_bins(&s.hist, levels) as f32;
                (s.lo.max(-t), s.hi.min(t))
            }
        }
    }
}

/// Start and bin width of a value's histogram.
fn hist_frame(s: &Stats, entropy: bool) -> (f32, f32) {
    if entropy {
        let m = s.lo.abs().max(s.hi.abs()).max(1e-12);
        (0.0, m / BINS as f32)
    } else {
        (s.lo, ((s.hi - s.lo) / BINS as f32).max(1e-12))
    }
}

/// Number of histogram bins to keep so that quantizing them to `levels` levels loses the
/// least information (KL divergence).
fn kl_threshold_bins(hist: &[u64], levels: usize) -> usize {
    let n = hist.len();
    if hist.iter().sum::<u64>() == 0 || n <= levels {
        return n;
    }
    let mut best = (f64::INFINITY, n);
    let mut i = levels;
    while i <= n {
        let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        let outliers: u64 = hist[i..].iter().sum();
        p[i - 1] += outliers as f64;
        // Q: merge the i bins into `levels` groups, spread each group's mass over its
        // non-empty bins.
        let mut q = vec![0f64; i];
        for g in 0..levels {
            let start = g * i / levels;
            let end = ((g + 1) * i / levels).max(start + 1).min(i);
            let mass: f64 = hist[start..end].iter().map(|&c| c as f64).sum();
            let nonzero = hist[start..end].iter().filter(|&&c| c > 0).count();
            if nonzero > 0 {
                for j in start..end {
                    if hist[j] > 0 {
                        q[j] = mass / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let mut kl = 0.0;
        for (&pj, &qj) in p.iter().zip(&q) {
            if pj > 0.0 {
                let pn = pj / ps;
                let qn = if qj > 0.0 { qj / qs } else { 1e-12 };
                kl += pn * (pn / qn).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
        i += 16;
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse() {
        assert_eq!("minmax".parse::<Method>().unwrap(), Method::MinMax);
        assert_eq!("percentile:99.9".parse::<Method>().unwrap(), Method::Percentile(99.9));
        assert!("percentile:10".parse::<Method>().is_err());
        assert!("kl".parse::<Method>().is_err());
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // Mostly small values plus a few far outliers: the threshold lands well below max.
        let mut hist = vec![0u64; BINS];
        for (i, h) in hist.iter_mut().enumerate().take(200) {
            *h = 10_000 - (i as u64) * 40;
        }
        hist[BINS - 1] = 3;
        let t = kl_threshold_bins(&hist, 255);
        assert!(t < BINS / 2, "{t}");
        assert!(t >= 255);
    }
}
