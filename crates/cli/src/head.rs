//! `weft head train|eval`: a classifier head on features, written as ONNX (Gemm + Softmax).

use std::path::PathBuf;

use anyhow::Context;
use weft_core::Tensor;

#[derive(clap::Subcommand, Debug)]
pub enum HeadCommand {
    /// Train a multinomial logistic-regression head (deterministic with a seed).
    Train {
        features: PathBuf,
        labels: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// L2 regularization strength.
        #[arg(long, default_value_t = 1e-4)]
        l2: f32,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        /// Share of samples held out for validation.
        #[arg(long, default_value_t = 0.1)]
        val_split: f32,
        #[arg(long, default_value_t = 0.05)]
        lr: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Accuracy of a head on features and labels.
    Eval {
        head: PathBuf,
        features: PathBuf,
        labels: PathBuf,
    },
}

pub fn head(cmd: &HeadCommand) -> anyhow::Result<()> {
    match cmd {
        HeadCommand::Train {
            features,
            labels,
            output,
            l2,
            epochs,
            val_split,
            lr,
            seed,
        } => {
            let x = weft_core::npy::read(features)?;
            let y = weft_core::npy::read(labels)?;
            let opts = weft_transfer::HeadOptions {
                l2: *l2,
                epochs: *epochs,
                val_split: *val_split,
                learning_rate: *lr,
                seed: *seed,
            };
            let start = std::time::Instant::now();
            let h = weft_transfer::train(&x, &y, &opts)?;
            let metadata = vec![("weft.classes".to_string(), serde_json::to_string(&h.classes)?)];
            std::fs::write(output, weft_onnx::export_with_metadata(&h.graph()?, &metadata)?)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "trained a {}-class head on {} features in {:.2} s: train accuracy {:.2}%{}; wrote {}",
                h.classes.len(),
                x.shape().get(1).copied().unwrap_or(0),
                start.elapsed().as_secs_f64(),
                h.train_accuracy * 100.0,
                h.val_accuracy
                    .map(|v| format!(", validation accuracy {:.2}%", v * 100.0))
                    .unwrap_or_default(),
                output.display()
            );
        }
        HeadCommand::Eval { head, features, labels } => {
            let model = weft_onnx::load(head)?;
            let classes = head_classes(&model)?;
            let exec = weft_reference::Executor::new(model.graph.clone())?;
            let x = weft_core::npy::read(features)?.cast(weft_core::DType::F32);
            let input = model
                .graph
                .inputs
                .first()
                .map(|i| i.name.clone())
                .context("the head has no input")?;
            let outs = exec.run(&[(input, x)].into_iter().collect())?;
            let probs: &Tensor = &outs.last().context("the head has no outputs")?.1;
            let acc = weft_transfer::evaluate(probs, &weft_core::npy::read(labels)?, &classes)?;
            println!("accuracy {:.2}% on {} samples", acc * 100.0, probs.shape()[0]);
        }
    }
    Ok(())
}

/// The label value of each output class, from the head's metadata (else 0..C).
pub fn head_classes(model: &weft_onnx::Model) -> anyhow::Result<Vec<i64>> {
    match model.metadata.iter().find(|(k, _)| k == "weft.classes") {
        Some((_, v)) => Ok(serde_json::from_str(v).context("bad weft.classes metadata")?),
        None => {
            let c = model
                .graph
                .outputs
                .last()
                .and_then(|o| o.shape.last().copied().flatten())
                .unwrap_or(0);
            Ok((0..c as i64).collect())
        }
    }
}
