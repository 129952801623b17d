//! Request tensors to model inputs: raw FP32 / FP16 tensors as they are, UINT8 tensors as
//! pixels (normalised with the package's spec), encoded JPEG/PNG images decoded and
//! preprocessed on the server; inputs of other types (INT64 ids, INT8 codes) in their own
//! datatype. Every shape, size and framing is checked.

use weft_core::{DType, Tensor};
use weft_image::{Layout, Preprocess};
use weft_package::Package;

use crate::ServeError;

/// KServe's name of a tensor element type.
pub fn kserve_datatype(d: DType) -> &'static str {
    match d {
        DType::F32 => "FP32",
        DType::F16 => "FP16",
        DType::I8 => "INT8",
        DType::U8 => "UINT8",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F64 => "FP64",
        DType::Bool => "BOOL",
        DType::I16 => "INT16",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::BF16 => "BF16",
        // no KServe type; models with them are refused at load (`served_dtype`)
        _ => "BYTES",
    }
}

/// The element types weft serves a model's inputs and outputs in.
pub fn served_dtype(d: DType) -> bool {
    matches!(
        d,
        DType::F32 | DType::F16 | DType::I8 | DType::U8 | DType::I32 | DType::I64
    )
}

/// What one of a model's inputs expects.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    /// The element type the model reads.
    pub dtype: DType,
    /// Full shape, batch first; `None` for symbolic dims.
    pub shape: Vec<Option<usize>>,
    pub preprocess: Preprocess,
    pub max_pixels: u64,
    pub max_batch: usize,
}

fn bad(m: impl Into<String>) -> ServeError {
    ServeError::InvalidArgument(m.into())
}

impl InputSpec {
    /// Every input of the package, in the graph's order.
    pub fn all(package: &Package, max_pixels: u64, max_batch: usize) -> Result<Vec<InputSpec>, ServeError> {
        if package.graph.inputs.is_empty() {
            return Err(ServeError::Setup(format!("model '{}' has no inputs", package.name)));
        }
        let edges = package
            .graph
            .inputs
            .iter()
            .map(|i| ("input", i))
            .chain(package.graph.outputs.iter().map(|o| ("output", o)));
        for (what, v) in edges {
            if !served_dtype(v.dtype) {
                return Err(ServeError::Setup(format!(
                    "model '{}': {what} '{}' has element type {}, which serving does not support \
                     (float32, float16, int8, uint8, int32, int64); `weft run` computes it",
                    package.name, v.name, v.dtype
                )));
            }
        }
        Ok(package
            .graph
            .inputs
            .iter()
            .map(|i| InputSpec {
                name: i.name.clone(),
                dtype: i.dtype,
                shape: i.shape.clone(),
                preprocess: package.preprocess.clone(),
                max_pixels,
                max_batch,
            })
            .collect())
    }

    /// The KServe datatype this input is described with.
    pub fn datatype(&self) -> &'static str {
        kserve_datatype(self.dtype)
    }

    /// The request datatypes this input takes, for error messages.
    fn accepted(&self) -> String {
        match self.dtype {
            DType::F32 => "FP32, FP16, UINT8 pixels, or BYTES images".into(),
            DType::F16 => "FP16 or FP32".into(),
            d => kserve_datatype(d).into(),
        }
    }

    /// The model's dims after the batch, as `-1` where symbolic (for metadata).
    pub fn dims(&self) -> Vec<i64> {
        self.shape.iter().skip(1).map(|d| d.map_or(-1, |v| v as i64)).collect()
    }

    /// Image `[height, width]` the model takes.
    pub fn image_size(&self) -> Result<[u32; 2], ServeError> {
        let s = &self.shape;
        let (h, w) = match (self.preprocess.layout, s.len()) {
            (Layout::Nchw, 4) => (s[2], s[3]),
            (Layout::Nhwc, 4) => (s[1], s[2]),
            _ => {
                return Err(bad(format!(
                    "input '{}' is not an image tensor: send a tensor instead",
                    self.name
                )));
            }
        };
        match (
            h.or(self.preprocess.crop.map(|c| c[0] as usize)),
            w.or(self.preprocess.crop.map(|c| c[1] as usize)),
        ) {
            (Some(h), Some(w)) => Ok([h as u32, w as u32]),
            _ => Err(bad("the model's image size is not fixed")),
        }
    }

    /// Checks a request shape against the model's and returns it as usize.
    pub fn check_shape(&self, shape: &[i64]) -> Result<Vec<usize>, ServeError> {
        let want = || {
            format!(
                "[{}]",
                self.shape
                    .iter()
                    .map(|d| d.map_or("-1".into(), |v| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if shape.len() != self.shape.len() {
            return Err(bad(format!(
                "input '{}' has shape {shape:?}, the model takes {}",
                self.name,
                want()
            )));
        }
        let mut out = Vec::with_capacity(shape.len());
        for (i, (&d, m)) in shape.iter().zip(&self.shape).enumerate() {
            let d =
                usize::try_from(d).map_err(|_| bad(format!("input '{}' has a negative dimension {d}", self.name)))?;
            if i == 0 && m.is_some_and(|m| m != d) {
                return Err(bad(format!(
                    "input '{}' has batch {d}; the model's batch dimension is fixed at {}",
                    self.name,
                    m.unwrap_or(0)
                )));
            }
            if i > 0 && m.is_some_and(|m| m != d) {
                return Err(bad(format!(
                    "input '{}' has shape {shape:?}, the model takes {}",
                    self.name,
                    want()
                )));
            }
            out.push(d);
        }
        let batch = out.first().copied().unwrap_or(1);
        if batch == 0 {
            return Err(bad(format!("input '{}' is empty (batch 0)", self.name)));
        }
        if batch > self.max_batch {
            return Err(bad(format!(
                "batch of {batch} exceeds the server's --max-batch {}",
                self.max_batch
            )));
        }
        weft_core::tensor::checked_numel(&out)
            .map_err(|_| bad(format!("input '{}' shape {shape:?} is too large", self.name)))?;
        Ok(out)
    }

    /// A raw tensor of a KServe datatype: for a float input FP32, FP16 or UINT8 (pixels,
    /// normalised); for any other input its own datatype.
    pub fn decode_raw(&self, datatype: &str, shape: &[i64], bytes: &[u8]) -> Result<Tensor, ServeError> {
        let dims = self.check_shape(shape)?;
        let n: usize = dims.iter().product();
        let sent = match (self.dtype, datatype) {
            (DType::F32, "FP32" | "FP16" | "UINT8") | (DType::F16, "FP32" | "FP16") => match datatype {
                "FP32" => DType::F32,
                "FP16" => DType::F16,
                _ => DType::U8,
            },
            (d, dt) if dt == kserve_datatype(d) => d,
            (_, other) => {
                return Err(bad(format!(
                    "datatype {other} is not accepted for input '{}' ({})",
                    self.name,
                    self.accepted()
                )));
            }
        };
        if bytes.len() != n * sent.size_of() {
            return Err(bad(format!(
                "input '{}' of shape {shape:?} needs {} bytes of {datatype}, got {}",
                self.name,
                n * sent.size_of(),
                bytes.len()
            )));
        }
        if self.dtype == DType::F32 && sent == DType::U8 {
            return self.decode_pixels(&dims, bytes);
        }
        Ok(Tensor::from_le_bytes(sent, &dims, bytes)
            .map_err(|e| bad(e.to_string()))?
            .into_dtype(self.dtype))
    }

    /// u8 pixels in the model's layout, normalised as the preprocessing spec says.
    pub fn decode_pixels(&self, dims: &[usize], pixels: &[u8]) -> Result<Tensor, ServeError> {
        let p = &self.preprocess;
        let channel_axis = if p.layout == Layout::Nchw {
            1
        } else {
            dims.len().saturating_sub(1)
        };
        let c = dims.get(channel_axis).copied().unwrap_or(1);
        let inner: usize = dims[channel_axis + 1..].iter().product();
        let span = p.range[1] - p.range[0];
        let pick = |v: &Vec<f32>, i: usize| *v.get(i).or(v.first()).unwrap_or(&0.0);
        let data = pixels
            .iter()
            .enumerate()
            .map(|(i, &px)| {
                let ch = (i / inner.max(1)) % c.max(1);
                (p.range[0] + f32::from(px) / 255.0 * span - pick(&p.mean, ch)) / pick(&p.std, ch)
            })
            .collect();
        Tensor::from_f32(dims, data).map_err(|e| bad(e.to_string()))
    }

    /// Encoded images (JPEG/PNG), one per batch row.
    pub fn decode_images(&self, images: &[&[u8]]) -> Result<Tensor, ServeError> {
        if !self.dtype.is_float() {
            return Err(bad(format!(
                "input '{}' takes {}, not images",
                self.name,
                self.accepted()
            )));
        }
        if images.is_empty() {
            return Err(bad(format!("no image for input '{}'", self.name)));
        }
        if images.len() > self.max_batch {
            return Err(bad(format!(
                "batch of {} images exceeds the server's --max-batch {}",
                images.len(),
                self.max_batch
            )));
        }
        let size = self.image_size()?;
        let mut rows = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            let t = self
                .preprocess
                .apply(img, size, self.max_pixels)
                .map_err(|e| bad(format!("image {i}: {e}")))?;
            rows.push(t);
        }
        let refs: Vec<&Tensor> = rows.iter().collect();
        let t = crate::batcher::concat(&refs)
            .map_err(ServeError::Internal)?
            .into_dtype(self.dtype);
        let want: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        self.check_shape(&want).map_err(|_| bad(format!("preprocessed images have shape {want:?}, which the model does not take: check the package's preprocessing spec")))?;
        Ok(t)
    }
}

/// Runs `f` on tokio's blocking pool. Image decoding and preprocessing are CPU work of
/// milliseconds that would otherwise hold an async worker (and every request queued on it).
pub async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServeError::Internal(format!("the decoding task failed: {e}")))
}

/// Splits KServe BYTES raw contents (4-byte little-endian length, then the bytes).
pub fn split_bytes(raw: &[u8], count: usize) -> Result<Vec<&[u8]>, ServeError> {
    let mut out = Vec::with_capacity(count.min(1024));
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad("malformed BYTES tensor: truncated length prefix"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if len > rest.len() {
            return Err(bad("malformed BYTES tensor: an element is longer than the data"));
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    if out.len() != count {
        return Err(bad(format!(
            "BYTES tensor holds {} elements, its shape says {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// A tensor's little-endian bytes as element type `d` (no intermediate copy when it has it).
pub fn le_bytes_as(t: &Tensor, d: DType) -> Vec<u8> {
    if t.dtype() == d {
        t.to_le_bytes()
    } else {
        t.cast(d).to_le_bytes()
    }
}

/// Several request tensors as the model's feeds: each input exactly once, in the graph's
/// order, all with the same batch size.
pub fn feeds(specs: &[InputSpec], mut given: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, ServeError> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let i = given
            .iter()
            .position(|(n, _)| n == &s.name)
            .ok_or_else(|| bad(format!("input '{}' is missing", s.name)))?;
        out.push(given.swap_remove(i));
    }
    if let Some((n, _)) = given.first() {
        return Err(bad(format!(
            "input '{n}' is given twice or is not one of the model's ({})",
            names(specs)
        )));
    }
    let batch = |t: &Tensor| t.shape().first().copied().unwrap_or(1);
    if let Some((first, t0)) = out.first()
        && let Some((other, t)) = out.iter().find(|(_, t)| batch(t) != batch(t0))
    {
        return Err(bad(format!(
            "inputs disagree on the batch size: '{first}' has {}, '{other}' has {}",
            batch(t0),
            batch(t)
        )));
    }
    Ok(out)
}

/// The model's input names, for error messages.
pub fn names(specs: &[InputSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("'{}'", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_framing() {
        let mut raw = Vec::new();
        for s in [&b"abc"[..], b"", b"xy"] {
            raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
            raw.extend_from_slice(s);
        }
        assert_eq!(split_bytes(&raw, 3).unwrap(), vec![&b"abc"[..], b"", b"xy"]);
        assert!(split_bytes(&raw, 2).is_err());
        assert!(split_bytes(&raw[..raw.len() - 1], 3).is_err());
        assert!(split_bytes(&[255, 255, 255, 255, 1], 1).is_err());
    }
}
