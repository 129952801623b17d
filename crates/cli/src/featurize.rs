//! `weft featurize`: batch featurization with a progress bar and throughput at the end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use weft_core::Tensor;
use weft_image::Preprocess;

use crate::data;
use crate::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct FeaturizeArgs {
    /// A package (.weft) or an ONNX model (run on the f32 reference); none: the embedded
    /// default model (weft's Fashion-MNIST featurizer).
    pub model: Option<PathBuf>,
    /// A directory of images (one folder per class gives labels), a .npy batch, or an IDX
    /// images file (labels from the matching labels file beside it).
    #[arg(long)]
    pub images: PathBuf,
    /// Images per run on the device.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// `reference`, `pocl` or `opencl:...` (OpenCL devices run int8 packages).
    #[arg(long, default_value = "reference")]
    pub device: String,
    /// The output to write (default: `features` when the model has it, else the first).
    #[arg(long)]
    pub output_name: Option<String>,
    /// Keep only images whose label is in this comma-separated list.
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<i64>,
    /// Preprocessing for images (default: the package's spec; for ONNX models `none`).
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
    /// Output .npy of float32 features, one row per image.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the labels (int64) as .npy.
    #[arg(long)]
    pub labels_out: Option<PathBuf>,
}

enum Runner {
    Reference(weft_reference::Executor),
    OpenCl(Box<weft_opencl::Session>),
}

impl Runner {
    fn run(&mut self, inputs: &HashMap<String, Tensor>) -> anyhow::Result<Vec<(String, Tensor)>> {
        Ok(match self {
            Runner::Reference(e) => e.run(inputs)?,
            Runner::OpenCl(s) => s.run(inputs)?,
        })
    }
}

/// Images and labels, loaded and preprocessed.
fn load(
    args: &FeaturizeArgs,
    graph: &weft_core::Graph,
    pre: &Preprocess,
) -> anyhow::Result<(Tensor, Option<Vec<i64>>, Vec<String>)> {
    let p = &args.images;
    if p.is_dir() {
        let files = data::image_files(p)?;
        if files.is_empty() {
            bail!("no .jpg/.jpeg/.png images under {}", p.display());
        }
        let mut names: Vec<String> = files.iter().map(|(_, c)| c.clone()).collect();
        names.sort();
        names.dedup();
        let size = data::input_size(graph, pre)?;
        let mut rows = Vec::with_capacity(files.len());
        let mut labels = Vec::with_capacity(files.len());
        let mut progress = Progress::new();
        for (i, (f, class)) in files.iter().enumerate() {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            rows.push(
                pre.apply(&bytes, size, weft_image::DEFAULT_MAX_PIXELS)
                    .with_context(|| format!("{}", f.display()))?,
            );
            labels.push(names.binary_search(class).unwrap_or(0) as i64);
            progress.update("decoding", i + 1, files.len());
        }
        progress.finish();
        let labelled = names.iter().any(|n| !n.is_empty());
        return Ok((data::stack(&rows)?, labelled.then_some(labels), names));
    }
    let is_npy = std::fs::read(p).map(|b| b.starts_with(b"\x93NUMPY")).unwrap_or(false);
    if is_npy {
        return Ok((weft_core::npy::read(p)?.cast(weft_core::DType::F32), None, vec![]));
    }
    let (dims, pixels) = data::read_idx(p)?;
    let [n, h, w] = dims[..] else {
        bail!("{}: IDX images must be [N, H, W], got {dims:?}", p.display())
    };
    let labels = match data::idx_labels_path(p) {
        Some(lp) => {
            let (ld, lv) = data::read_idx(&lp)?;
            if ld != [n] {
                bail!(
                    "{}: {} labels for {n} images",
                    lp.display(),
                    ld.first().copied().unwrap_or(0)
                );
            }
            Some(lv.iter().map(|&v| i64::from(v)).collect())
        }
        None => None,
    };
    let size = data::input_size(graph, pre)?;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let img = image::GrayImage::from_raw(w as u32, h as u32, pixels[i * h * w..(i + 1) * h * w].to_vec())
            .context("bad IDX image")?;
        rows.push(pre.apply_image(&image::DynamicImage::ImageLuma8(img), size)?);
    }
    Ok((data::stack(&rows)?, labels, vec![]))
}

pub fn featurize(args: &FeaturizeArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let model = match &args.model {
        Some(p) => p.clone(),
        None => {
            let dir = weft_opencl::cache_dir().join("models");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let p = dir.join(format!("{}.weft", crate::serve::DEFAULT_MODEL_NAME));
            if std::fs::read(&p).ok().as_deref() != Some(crate::serve::DEFAULT_MODEL) {
                std::fs::write(&p, crate::serve::DEFAULT_MODEL).with_context(|| format!("writing {}", p.display()))?;
            }
            eprintln!(
                "no model given: featurizing with the embedded default model ({})",
                crate::serve::DEFAULT_MODEL_NAME
            );
            p
        }
    };
    let loaded = crate::model::open(&model)?;
    let (mut runner, graph, pre) = match loaded {
        crate::model::Loaded::Package(p) => {
            let runner = if args.device == "reference" {
                Runner::Reference(weft_compile::reference_executor(&p)?)
            } else {
                let opts = weft_opencl::SessionOptions {
                    device: args.device.clone(),
                    ..Default::default()
                };
                Runner::OpenCl(Box::new(weft_opencl::Session::new(&p, &opts)?))
            };
            (runner, p.graph.clone(), p.preprocess.clone())
        }
        crate::model::Loaded::Onnx(m) => {
            if args.device != "reference" {
                bail!(
                    "--device {} runs compiled packages; compile the model first",
                    args.device
                );
            }
            let mut g = m.graph;
            weft_reference::optimize(&mut g)?;
            (
                Runner::Reference(weft_reference::Executor::new(g.clone())?),
                g,
                Preprocess::default(),
            )
        }
    };
    let mut pre = args.preprocess.clone().unwrap_or(pre);
    let input = graph
        .inputs
        .first()
        .map(|i| i.name.clone())
        .context("the model has no input")?;
    let channel_dim = if pre.layout == weft_image::Layout::Nchw { 1 } else { 3 };
    if graph.inputs[0].shape.get(channel_dim).copied().flatten() == Some(1) {
        pre.channels = weft_image::ChannelOrder::Gray;
    }
    let out_name = match &args.output_name {
        Some(n) => n.clone(),
        None => graph
            .outputs
            .iter()
            .find(|o| o.name == "features")
            .or(graph.outputs.first())
            .map(|o| o.name.clone())
            .context("the model has no outputs")?,
    };
    if !graph.outputs.iter().any(|o| o.name == out_name) {
        bail!("the model has no output '{out_name}'");
    }
    let (mut x, mut labels, names) = load(args, &graph, &pre)?;
    if !args.classes.is_empty() {
        let l = labels.as_ref().context("--classes needs labelled images")?;
        let keep: Vec<usize> = (0..l.len()).filter(|&i| args.classes.contains(&l[i])).collect();
        let row: usize = x.shape()[1..].iter().product();
        let flat = x.to_f32();
        let flat = flat.as_slice().context("non-contiguous input")?;
        let mut shape = x.shape().to_vec();
        shape[0] = keep.len();
        x = Tensor::from_f32(
            &shape,
            keep.iter()
                .flat_map(|&i| flat[i * row..(i + 1) * row].iter().copied())
                .collect(),
        )?;
        labels = Some(keep.iter().map(|&i| l[i]).collect());
    }
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 {
        bail!("no images to featurize");
    }
    let batches = data::split(&x, args.batch)?;
    let mut progress = Progress::new();
    let mut features: Vec<Tensor> = Vec::with_capacity(batches.len());
    let start = Instant::now();
    let mut done = 0;
    for b in batches {
        done += b.shape()[0];
        let outs = runner.run(&HashMap::from([(input.clone(), b)]))?;
        features.push(
            outs.into_iter()
                .find(|(k, _)| *k == out_name)
                .map(|(_, t)| t)
                .context("output missing")?,
        );
        progress.update("featurizing", done, n);
    }
    progress.finish();
    let secs = start.elapsed().as_secs_f64();
    let feats = data::stack(&features)?;
    let feats = feats.reshaped(&[n, feats.len() / n])?;
    weft_core::npy::write(&args.output, &feats)?;
    if let Some(path) = &args.labels_out {
        let l = labels.context("--labels-out: these images have no labels (use a class-per-folder directory or an IDX file with its labels file)")?;
        weft_core::npy::write(path, &Tensor::from_i64(&[l.len()], l)?)?;
        // the class folders' names beside the labels (line i names label i), which
        // `weft head train` picks up so that a compiled head answers with them
        if names.iter().any(|s| !s.is_empty()) {
            let names_path = crate::head::class_names_path(path);
            std::fs::write(&names_path, names.join("\n") + "\n")
                .with_context(|| format!("writing {}", names_path.display()))?;
        }
    }
    eprintln!(
        "featurized {n} images in {secs:.2} s ({:.1} images/s) on {}; wrote {:?} to {}{}",
        n as f64 / secs.max(1e-9),
        args.device,
        feats.shape(),
        args.output.display(),
        if names.iter().any(|s| !s.is_empty()) {
            format!(" (classes: {})", names.join(", "))
        } else {
            String::new()
        }
    );
    Ok(())
}
