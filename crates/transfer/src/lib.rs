//! Transfer learning: a multinomial logistic-regression head trained on features
//! (deterministic, seeded), written as a float graph (Gemm + Softmax) that other tools
//! can use as ONNX, and merged behind a featurizer so one package answers with both
//! `features` and `probabilities`.

use ndarray::{Array1, Array2, Axis};
use weft_core::op::Gemm;
use weft_core::rng::Rng;
use weft_core::{DType, Graph, Node, Op, Tensor, ValueInfo};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Core(#[from] weft_core::CoreError),
}

/// Training settings.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    pub l2: f32,
    pub epochs: usize,
    pub val_split: f32,
    pub learning_rate: f32,
    pub seed: u64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            l2: 1e-4,
            epochs: 300,
            val_split: 0.1,
            learning_rate: 0.05,
            seed: 0,
        }
    }
}

/// A trained head: `probabilities = softmax(features @ weight^T + bias)`.
#[derive(Clone, Debug)]
pub struct Head {
    /// `[classes, features]`
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
    /// The label value of each class row.
    pub classes: Vec<i64>,
    pub train_accuracy: f32,
    pub val_accuracy: Option<f32>,
}

fn softmax_rows(z: &mut Array2<f32>) {
    for mut row in z.rows_mut() {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - m).exp());
        let sum: f32 = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

fn accuracy(x: &Array2<f32>, y: &[usize], w: &Array2<f32>, b: &Array1<f32>) -> f32 {
    if y.is_empty() {
        return 0.0;
    }
    let z = x.dot(&w.t()) + b;
    let hits = z
        .rows()
        .into_iter()
        .zip(y)
        .filter(|&(ref row, &t)| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
                .0
                == t
        })
        .count();
    hits as f32 / y.len() as f32
}

/// Trains a head on `features` `[N, F]` and integer `labels` `[N]`.
pub fn train(features: &Tensor, labels: &Tensor, opts: &HeadOptions) -> Result<Head, TransferError> {
    let shape = features.shape();
    if shape.len() != 2 {
        return Err(TransferError::Data(format!("features must be [N, F], got {shape:?}")));
    }
    let (n, f) = (shape[0], shape[1]);
    let label_values = labels.to_i64_vec();
    if label_values.len() != n {
        return Err(TransferError::Data(format!(
            "{} labels for {n} feature rows",
            label_values.len()
        )));
    }
    if n < 2 || f == 0 {
        return Err(TransferError::Data(
            "need at least 2 samples with at least 1 feature".into(),
        ));
    }
    if !(0.0..0.9).contains(&opts.val_split)
        || opts.epochs == 0
        || opts.learning_rate.is_nan()
        || opts.learning_rate <= 0.0
        || opts.l2 < 0.0
    {
        return Err(TransferError::Data(
            "--val-split must be in [0, 0.9), --epochs and --lr positive, --l2 non-negative".into(),
        ));
    }
    let mut classes: Vec<i64> = label_values.clone();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 {
        return Err(TransferError::Data("the labels hold fewer than 2 classes".into()));
    }
    let y: Vec<usize> = label_values
        .iter()
        .map(|v| classes.binary_search(v).unwrap_or(0))
        .collect();
    let x_all = features
        .to_f32()
        .into_shape_with_order((n, f))
        .map_err(|e| TransferError::Data(e.to_string()))?;
    if x_all.iter().any(|v| !v.is_finite()) {
        return Err(TransferError::Data("features contain NaN or infinity".into()));
    }
    // Seeded shuffle, then split off validation rows.
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(opts.seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let n_val = ((n as f32) * opts.val_split) as usize;
    let (train_idx, val_idx) = order.split_at(n - n_val);
    let x = x_all.select(Axis(0), train_idx);
    let yt: Vec<usize> = train_idx.iter().map(|&i| y[i]).collect();
    // Standardize on the training rows; folded into the weights at the end.
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(f));
    let std = x.var_axis(Axis(0), 0.0).mapv(|v| v.sqrt().max(1e-6));
    let xs = (&x - &mean) / &std;
    let c = classes.len();
    let nt = xs.nrows() as f32;
    let mut onehot = Array2::<f32>::zeros((xs.nrows(), c));
    for (i, &t) in yt.iter().enumerate() {
        onehot[[i, t]] = 1.0;
    }
    let mut w = Array2::<f32>::zeros((c, f));
    let mut b = Array1::<f32>::zeros(c);
    // Adam on the full batch: deterministic.
    let (mut mw, mut vw, mut mb, mut vb) = (
        Array2::<f32>::zeros((c, f)),
        Array2::<f32>::zeros((c, f)),
        Array1::<f32>::zeros(c),
        Array1::<f32>::zeros(c),
    );
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    for t in 1..=opts.epochs {
        let mut p = xs.dot(&w.t()) + &b;
        softmax_rows(&mut p);
        let d = (p - &onehot) / nt;
        let gw = d.t().dot(&xs) + &(&w * opts.l2);
        let gb = d.sum_axis(Axis(0));
        mw = &mw * b1 + &(&gw * (1.0 - b1));
        vw = &vw * b2 + &(&gw * &gw * (1.0 - b2));
        mb = &mb * b1 + &(&gb * (1.0 - b1));
        vb = &vb * b2 + &(&gb * &gb * (1.0 - b2));
        let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        w = &w - &((&mw / c1) / ((&vw / c2).mapv(f32::sqrt) + eps) * opts.learning_rate);
        b = &b - &((&mb / c1) / ((&vb / c2).mapv(f32::sqrt) + eps) * opts.learning_rate);
    }
    // Fold the standardization: w' = w / std, b' = b - w' . mean
    let w_folded = &w / &std;
    let b_folded = &b - &w_folded.dot(&mean);
    let train_accuracy = accuracy(&x, &yt, &w_folded, &b_folded);
    let val_accuracy = (!val_idx.is_empty()).then(|| {
        let xv = x_all.select(Axis(0), val_idx);
        let yv: Vec<usize> = val_idx.iter().map(|&i| y[i]).collect();
        accuracy(&xv, &yv, &w_folded, &b_folded)
    });
    Ok(Head {
        weight: w_folded,
        bias: b_folded,
        classes,
        train_accuracy,
        val_accuracy,
    })
}

/// Accuracy of a head graph's probabilities against labels (label values, as trained).
pub fn evaluate(probabilities: &Tensor, labels: &Tensor, classes: &[i64]) -> Result<f32, TransferError> {
    let p = probabilities.to_f32();
    let y = labels.to_i64_vec();
    if p.ndim() != 2 || p.shape()[0] != y.len() {
        return Err(TransferError::Data(format!(
            "{} labels for probabilities of shape {:?}",
            y.len(),
            p.shape()
        )));
    }
    let hits = p
        .rows()
        .into_iter()
        .zip(&y)
        .filter(|(row, t)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a })
                .0;
            classes.get(best) == Some(t)
        })
        .count();
    Ok(hits as f32 / y.len().max(1) as f32)
}

/// Name of the head's input and output values.
pub const HEAD_INPUT: &str = "features";
pub const HEAD_OUTPUT: &str = "probabilities";

impl Head {
    /// The head as a float graph: Gemm (transB) then Softmax.
    pub fn graph(&self) -> Result<Graph, TransferError> {
        let (c, f) = self.weight.dim();
        let mut g = Graph {
            name: "weft_head".into(),
            ..Default::default()
        };
        g.inputs
            .push(ValueInfo::new(HEAD_INPUT, DType::F32, vec![None, Some(f)]));
        g.outputs
            .push(ValueInfo::new(HEAD_OUTPUT, DType::F32, vec![None, Some(c)]));
        g.initializers.insert(
            "head.weight".into(),
            Tensor::from_f32(&[c, f], self.weight.iter().copied().collect())?,
        );
        g.initializers
            .insert("head.bias".into(), Tensor::from_f32(&[c], self.bias.to_vec())?);
        g.nodes.push(Node::new(
            "head.gemm",
            Op::Gemm(Gemm {
                trans_b: true,
                ..Gemm::default()
            }),
            &[HEAD_INPUT, "head.weight", "head.bias"],
            &["head.logits"],
        ));
        g.nodes.push(Node::new(
            "head.softmax",
            Op::Softmax {
                axis: -1,
                legacy: false,
            },
            &["head.logits"],
            &[HEAD_OUTPUT],
        ));
        Ok(g)
    }
}

/// Appends `head` (a graph with one input and outputs) behind `featurizer`'s output
/// `features_output`. The result's outputs are the features and the head's outputs.
pub fn attach_head(featurizer: &Graph, features_output: &str, head: &Graph) -> Result<Graph, TransferError> {
    if !featurizer.outputs.iter().any(|o| o.name == features_output) {
        return Err(TransferError::Data(format!(
            "the featurizer has no output '{features_output}'"
        )));
    }
    let [head_in] = head.inputs.as_slice() else {
        return Err(TransferError::Data(format!(
            "the head must have exactly one input, has {}",
            head.inputs.len()
        )));
    };
    let mut g = featurizer.clone();
    let rename = |v: &str| -> String {
        if v == head_in.name {
            features_output.to_string()
        } else if v.is_empty() || head.outputs.iter().any(|o| o.name == v) {
            v.to_string()
        } else {
            format!("head/{v}")
        }
    };
    for (name, t) in &head.initializers {
        g.initializers.insert(rename(name), t.clone());
    }
    for n in &head.nodes {
        let mut n = n.clone();
        n.name = format!("head/{}", n.name);
        n.inputs = n.inputs.iter().map(|i| rename(i)).collect();
        n.outputs = n.outputs.iter().map(|o| rename(o)).collect();
        g.nodes.push(n);
    }
    let features = featurizer.outputs.iter().find(|o| o.name == features_output).cloned();
    // the head's answer first: clients and `weft run` take the first output by default
    g.outputs = head.outputs.iter().cloned().chain(features).collect();
    g.sort()?;
    weft_core::shape::infer(&g, &Default::default())?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_separable_classes_deterministically() {
        let mut rng = Rng::new(1);
        let n = 600;
        let mut feats = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % 3) as i64 + 5;
            for d in 0..4 {
                feats.push(rng.normal() * 0.3 + if d as i64 == class - 5 { 3.0 } else { 0.0 });
            }
            labels.push(class);
        }
        let x = Tensor::from_f32(&[n, 4], feats).unwrap();
        let y = Tensor::from_i64(&[n], labels).unwrap();
        let h = train(&x, &y, &HeadOptions::default()).unwrap();
        let h2 = train(&x, &y, &HeadOptions::default()).unwrap();
        assert_eq!(h.weight, h2.weight);
        assert_eq!(h.classes, vec![5, 6, 7]);
        assert!(h.train_accuracy > 0.98 && h.val_accuracy.unwrap() > 0.95);
        assert!(
            train(
                &x,
                &Tensor::from_i64(&[3], vec![1, 2, 3]).unwrap(),
                &HeadOptions::default()
            )
            .is_err()
        );
        assert!(
            train(
                &x,
                &Tensor::from_i64(&[n], vec![1; n]).unwrap(),
                &HeadOptions::default()
            )
            .is_err()
        );
    }
}
