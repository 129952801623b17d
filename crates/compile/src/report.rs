//! The accuracy report of a compiled package against its f32 source: per-layer SQNR,
//! output cosine similarity and top-1 agreement.

use std::collections::HashMap;

use serde::Serialize;
use weft_core::{Graph, Tensor};
use weft_quant::IntValues;
use weft_reference::Executor;

use crate::Package;
use crate::compile::{Batch, CompileError, reference_executor};

#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub value: String,
    pub sqnr_db: f64,
}

#[derive(Debug, Serialize)]
pub struct OutputReport {
    pub name: String,
    pub cosine_similarity: f64,
    pub min_cosine_similarity: f64,
    pub max_abs_error: f64,
    /// Share of samples whose argmax matches the f32 model's (outputs with 2+ classes).
    pub top1_agreement: Option<f64>,
    pub samples: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub precision: String,
    pub samples: usize,
    pub outputs: Vec<OutputReport>,
    pub layers: Vec<LayerReport>,
}

#[derive(Default)]
struct OutAcc {
    cosines: Vec<f64>,
    max_err: f64,
    top1_hits: usize,
    cols: usize,
}

#[derive(Default)]
struct Acc {
    signal: f64,
    noise: f64,
}

/// Runs the f32 graph and the package side by side over `batches`.
pub fn build_report(
    float_graph: &Graph,
    package: &Package,
    ints: Option<&IntValues>,
    batches: &[Batch],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report, CompileError> {
    let float_exec = Executor::new(float_graph.clone())?;
    let pkg_exec = reference_executor(package)?;
    let mut layers: HashMap<String, Acc> = HashMap::new();
    let mut outs: HashMap<String, OutAcc> = HashMap::new();
    let mut samples = 0;
    let q_to_float: HashMap<&str, (&str, f32, i32)> = ints
        .map(|m| {
            m.iter()
                .map(|(f, (q, s, z))| (q.as_str(), (f.as_str(), *s, *z)))
                .collect()
        })
        .unwrap_or_default();
    for (i, batch) in batches.iter().enumerate() {
        let mut reference: HashMap<String, Tensor> = HashMap::new();
        let want = float_exec.run_observed(batch, &mut |name, t| {
            if matches!(t, Tensor::F32(_)) {
                reference.insert(name.to_string(), t.clone());
            }
        })?;
        let got = pkg_exec.run_observed(batch, &mut |name, t| {
            let (float_name, deq) = match (q_to_float.get(name), t) {
                (Some(&(f, s, z)), Tensor::U8(a)) => (f, a.mapv(|q| (i32::from(q) - z) as f32 * s)),
                (None, Tensor::F32(a)) if ints.is_none() => (name, a.clone()),
                _ => return,
            };
            if let Some(r) = reference.get(float_name).and_then(|r| r.as_f32().ok())
                && r.shape() == deq.shape()
            {
                let e = layers.entry(float_name.to_string()).or_default();
                for (&a, &b) in r.iter().zip(deq.iter()) {
                    e.signal += f64::from(a) * f64::from(a);
                    e.noise += f64::from(a - b) * f64::from(a - b);
                }
            }
        })?;
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            let (w, g) = (w.to_f32(), g.to_f32());
            let rows = w.shape().first().copied().unwrap_or(1).max(1);
            let cols = w.len() / rows;
            let e = outs.entry(name.clone()).or_default();
            e.cols = cols;
            let (ws, gs) = (
                w.iter().copied().collect::<Vec<_>>(),
                g.iter().copied().collect::<Vec<_>>(),
            );
            for r in 0..rows {
                let (a, b) = (&ws[r * cols..(r + 1) * cols], &gs[r * cols..(r + 1) * cols]);
                e.cosines.push(cosine(a, b));
                if argmax(a) == argmax(b) {
                    e.top1_hits += 1;
                }
            }
            e.max_err = ws
                .iter()
                .zip(&gs)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(e.max_err, f64::max);
        }
        samples += batch
            .values()
            .next()
            .and_then(|t| t.shape().first().copied())
            .unwrap_or(1);
        progress(i + 1, batches.len());
    }
    let mut layer_reports: Vec<LayerReport> = layers
        .into_iter()
        .map(|(value, a)| LayerReport {
            value,
            sqnr_db: if a.noise > 0.0 {
                10.0 * (a.signal / a.noise).log10()
            } else {
                f64::INFINITY
            },
        })
        .collect();
    let order: HashMap<&str, usize> = float_graph
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    layer_reports.sort_by_key(|l| order.get(l.value.as_str()).copied().unwrap_or(usize::MAX));
    let outputs = float_graph
        .outputs
        .iter()
        .filter_map(|o| {
            let a = outs.remove(&o.name)?;
            let rows = a.cosines.len();
            Some(OutputReport {
                name: o.name.clone(),
                cosine_similarity: a.cosines.iter().sum::<f64>() / rows.max(1) as f64,
                min_cosine_similarity: a.cosines.iter().copied().fold(1.0, f64::min),
                max_abs_error: a.max_err,
                top1_agreement: (a.cols > 1).then(|| a.top1_hits as f64 / rows.max(1) as f64),
                samples: rows,
            })
        })
        .collect();
    Ok(Report {
        precision: package.precision.to_string(),
        samples,
        outputs,
        layers: layer_reports,
    })
}

/// Cosine similarity of two vectors (1 when both are zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) },
        )
        .0
}
