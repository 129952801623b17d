//! Loading input data for calibration, evaluation and featurization: a `.npy` batch or a
//! directory of images (preprocessed with the package's spec).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use weft_core::{Graph, Tensor};
use weft_image::{Layout, Preprocess};

/// Image files under `dir` (recursively, sorted), with the name of the folder each sits in.
pub fn image_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading directory {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            {
                let class = path
                    .parent()
                    .filter(|p| *p != dir)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                out.push((path, class));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `[height, width]` of a model's image input.
pub fn input_size(graph: &Graph, pre: &Preprocess) -> anyhow::Result<[u32; 2]> {
    let input = graph.inputs.first().context("the model has no input")?;
    let s = &input.shape;
    if s.len() != 4 {
        bail!("input '{}' is not an image tensor (rank {})", input.name, s.len());
    }
    let (h, w) = match pre.layout {
        Layout::Nchw => (s[2], s[3]),
        Layout::Nhwc => (s[1], s[2]),
    };
    match (h, w) {
        (Some(h), Some(w)) => Ok([h as u32, w as u32]),
        _ => pre
            .crop
            .context("the model's input size is symbolic: give a crop size in --preprocess"),
    }
}

/// Loads a `.npy` batch or an image directory as one tensor `[N, ...]`.
pub fn load_tensor(path: &Path, graph: &Graph, pre: &Preprocess) -> anyhow::Result<Tensor> {
    if path.is_dir() {
        let files = image_files(path)?;
        if files.is_empty() {
            bail!("no .jpg/.jpeg/.png images under {}", path.display());
        }
        let size = input_size(graph, pre)?;
        let mut parts = Vec::with_capacity(files.len());
        for (f, _) in &files {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            parts.push(
                pre.apply(&bytes, size, weft_image::DEFAULT_MAX_PIXELS)
                    .with_context(|| format!("{}", f.display()))?,
            );
        }
        return stack(&parts);
    }
    Ok(weft_core::npy::read(path)?.cast(weft_core::DType::F32))
}

/// Concatenates `[1, ...]` tensors along the first axis.
pub fn stack(parts: &[Tensor]) -> anyhow::Result<Tensor> {
    let first = parts.first().context("nothing to stack")?;
    let mut shape = first.shape().to_vec();
    let mut data = Vec::with_capacity(first.len() * parts.len());
    for p in parts {
        if p.shape()[1..] != shape[1..] {
            bail!("inputs of different shapes: {:?} and {:?}", p.shape(), shape);
        }
        data.extend(p.to_f32().iter().copied());
    }
    shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
    Ok(Tensor::from_f32(&shape, data)?)
}

/// Splits `[N, ...]` into batches of at most `batch` rows.
/// Rows of `t` split into batches of exactly `batch` (a model whose batch dimension is
/// fixed): the last batch is filled up with rows from the start of the set (real data, not
/// zeros, so calibration statistics are barely moved).
pub fn split_exact(t: &Tensor, batch: usize) -> anyhow::Result<Vec<Tensor>> {
    let n = *t.shape().first().context("scalar input")?;
    let batch = batch.max(1);
    if n == 0 || n % batch == 0 {
        return split(t, batch);
    }
    let row: usize = t.shape()[1..].iter().product();
    let flat: Vec<f32> = t.to_f32().iter().copied().collect();
    let padded_rows = n.div_ceil(batch) * batch;
    let mut data = flat.clone();
    for i in n..padded_rows {
        let from = i % n;
        data.extend_from_slice(&flat[from * row..(from + 1) * row]);
    }
    let mut shape = t.shape().to_vec();
    shape[0] = padded_rows;
    split(&Tensor::from_f32(&shape, data)?, batch)
}

pub fn split(t: &Tensor, batch: usize) -> anyhow::Result<Vec<Tensor>> {
    let n = *t.shape().first().context("scalar input")?;
    let row: usize = t.shape()[1..].iter().product();
    let all = t.to_f32();
    let flat: Vec<f32> = all.iter().copied().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + batch.max(1)).min(n);
        let mut shape = t.shape().to_vec();
        shape[0] = end - start;
        out.push(Tensor::from_f32(&shape, flat[start * row..end * row].to_vec())?);
        start = end;
    }
    Ok(out)
}

/// An IDX file (the MNIST / Fashion-MNIST format), plain or gzip-compressed: its dims and
/// unsigned-byte data.
pub fn read_idx(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
    use std::io::Read;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(1 << 31)
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{} is not an unsigned-byte IDX file", path.display());
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let n = weft_core::tensor::checked_numel(&dims)?;
    let data = bytes
        .get(header..header + n)
        .with_context(|| format!("{}: the data is shorter than its dims {dims:?}", path.display()))?;
    Ok((dims, data.to_vec()))
}

/// The labels file beside an IDX images file (`...-images-idx3-ubyte` to `...-labels-idx1-ubyte`).
pub fn idx_labels_path(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    name.contains("images-idx3")
        .then(|| images.with_file_name(name.replace("images-idx3", "labels-idx1")))
        .filter(|p| p.exists())
}
