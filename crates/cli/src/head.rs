//! `weft head train|eval`: a classifier head on features, written as ONNX (Gemm + Softmax).

use std::path::PathBuf;

use anyhow::Context;
use weft_core::Tensor;

#[derive(clap::Subcommand, Debug)]
pub enum HeadCommand {
    /// Train a multinomial logistic-regression head (deterministic with a seed).
    Train {
        /// Features, [N, F] .npy (as `weft featurize` writes them).
        features: PathBuf,
        /// Integer labels, [N] .npy (as `weft featurize --labels-out` writes them).
        labels: PathBuf,
        /// The head to write (ONNX: Gemm then Softmax).
        #[arg(short, long)]
        output: PathBuf,
        /// Class names, one per line, line i naming label i (default: LABELS.classes.txt
        /// beside the labels when `weft featurize` wrote one from class folders).
        #[arg(long)]
        class_names: Option<PathBuf>,
        /// L2 regularization strength.
        #[arg(long, default_value_t = 1e-4)]
        l2: f32,
        /// Passes over the training samples.
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        /// Share of samples held out for validation.
        #[arg(long, default_value_t = 0.1)]
        val_split: f32,
        /// Learning rate of the gradient steps.
        #[arg(long, default_value_t = 0.05)]
        lr: f32,
        /// Seed of the initialisation and the validation split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Accuracy of a head on features and labels.
    Eval {
        /// The head (ONNX, as `weft head train` writes it).
        head: PathBuf,
        /// Features, [N, F] .npy.
        features: PathBuf,
        /// Integer labels, [N] .npy.
        labels: PathBuf,
    },
}

pub fn head(cmd: &HeadCommand) -> anyhow::Result<()> {
    match cmd {
        HeadCommand::Train {
            features,
            labels,
            output,
            class_names,
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
            let mut metadata = vec![("weft.classes".to_string(), serde_json::to_string(&h.classes)?)];
            let names_file = class_names.clone().or_else(|| {
                let p = class_names_path(labels);
                p.is_file().then_some(p)
            });
            if let Some(p) = names_file {
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                let all: Vec<&str> = text.lines().map(str::trim).collect();
                // a name for each class the head has, in the head's class order
                let names = h
                    .classes
                    .iter()
                    .map(|&c| {
                        usize::try_from(c)
                            .ok()
                            .and_then(|i| all.get(i))
                            .map(|s| s.to_string())
                            .with_context(|| format!("{} has no name for label {c}", p.display()))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                eprintln!("class names from {}: {}", p.display(), names.join(", "));
                metadata.push(("weft.class_names".to_string(), serde_json::to_string(&names)?));
            }
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

/// Where `weft featurize` writes the class names for a labels file: `L.npy` -> `L.classes.txt`.
pub fn class_names_path(labels: &std::path::Path) -> PathBuf {
    labels.with_extension("classes.txt")
}

/// The name of each output class, when the head was trained with class names.
pub fn head_class_names(model: &weft_onnx::Model) -> anyhow::Result<Option<Vec<String>>> {
    model
        .metadata
        .iter()
        .find(|(k, _)| k == "weft.class_names")
        .map(|(_, v)| serde_json::from_str(v).context("bad weft.class_names metadata"))
        .transpose()
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
