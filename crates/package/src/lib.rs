//! The package file `model.weft`: one versioned, checksummed file holding the compiled
//! graph (quantized or float), its packed weights, quantization parameters (inside the
//! integer ops and their constant inputs), input/output names and shapes, the
//! preprocessing spec and class labels.
//!
//! Layout (little-endian):
//!
//! ```text
//! "WEFTPKG\0"  u32 format version  u64 header length  header (JSON)
//! u64 blob length  blob (tensor bytes)  sha256 of everything before (32 bytes)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_core::{DType, Graph, Node, Tensor, ValueInfo};
use weft_image::Preprocess;

/// Magic bytes at the start of every package.
pub const MAGIC: &[u8; 8] = b"WEFTPKG\0";
/// The package format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("not a weft package (bad magic bytes); compile a model with `weft compile`")]
    NotAPackage,
    #[error(
        "package format version {found} is not supported (this weft reads version {FORMAT_VERSION}); recompile the model"
    )]
    Version { found: u32 },
    #[error("the package is truncated")]
    Truncated,
    #[error("the package is damaged (checksum mismatch)")]
    Checksum,
    #[error("the package is damaged: {0}")]
    Corrupt(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Numeric precision of a package's graph. Stored in the header as its name (`int8`,
/// `f16`, `f32`, or an MX format such as `mxfp8_e4m3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Int8,
    F16,
    F32,
    /// Convolutions and fully connected layers with weights in this OCP MX format (the
    /// activations' format is in each MX op); everything else f32.
    Mx(weft_core::mx::MxFormat),
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int8" => Ok(Precision::Int8),
            "f16" => Ok(Precision::F16),
            "f32" => Ok(Precision::F32),
            other => weft_core::mx::MxFormat::parse(other).map(Precision::Mx).ok_or_else(|| {
                format!(
                    "unknown precision '{other}' (int8, f16, f32, mxint8, mxfp8, mxfp8_e4m3, mxfp8_e5m2, mxfp6, mxfp6_e3m2, mxfp6_e2m3, mxfp4)"
                )
            }),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
            Precision::F32 => "f32",
            Precision::Mx(m) => m.name(),
        })
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A compiled model.
#[derive(Clone, Debug, PartialEq)]
pub struct Package {
    pub name: String,
    pub precision: Precision,
    pub graph: Graph,
    pub preprocess: Preprocess,
    /// Class labels for a classifier output, if known.
    pub labels: Vec<String>,
    /// Free-form facts about how the package was made (source model, calibration, ...).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct TensorEntry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    precision: Precision,
    graph_name: String,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    nodes: Vec<Node>,
    tensors: Vec<TensorEntry>,
    preprocess: Preprocess,
    labels: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl Package {
    /// Serializes the package.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut blob = Vec::new();
        let mut tensors = Vec::with_capacity(self.graph.initializers.len());
        for (name, t) in &self.graph.initializers {
            let bytes = t.to_le_bytes();
            // keep every tensor 64-byte aligned inside the blob
            blob.resize(blob.len().next_multiple_of(64), 0);
            tensors.push(TensorEntry {
                name: name.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                offset: blob.len(),
                len: bytes.len(),
            });
            blob.extend_from_slice(&bytes);
        }
        let header = Header {
            name: self.name.clone(),
            precision: self.precision,
            graph_name: self.graph.name.clone(),
            inputs: self.graph.inputs.clone(),
            outputs: self.graph.outputs.clone(),
            nodes: self.graph.nodes.clone(),
            tensors,
            preprocess: self.preprocess.clone(),
            labels: self.labels.clone(),
            metadata: self.metadata.clone(),
        };
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(64 + header.len() + blob.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        out.extend_from_slice(&blob);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses and verifies a package: magic, version, checksum, then that the graph is
    /// well formed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Package, PackageError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(PackageError::NotAPackage);
        }
        let rest = &bytes[MAGIC.len()..];
        let version = u32::from_le_bytes(
            rest.get(..4)
                .ok_or(PackageError::Truncated)?
                .try_into()
                .map_err(|_| PackageError::Truncated)?,
        );
        if version != FORMAT_VERSION {
            return Err(PackageError::Version { found: version });
        }
        if bytes.len() < MAGIC.len() + 4 + 8 + 8 + 32 {
            return Err(PackageError::Truncated);
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        let read_u64 = |at: usize| -> Result<usize, PackageError> {
            let b = body.get(at..at + 8).ok_or(PackageError::Truncated)?;
            usize::try_from(u64::from_le_bytes(b.try_into().map_err(|_| PackageError::Truncated)?))
                .map_err(|_| PackageError::Truncated)
        };
        let header_len = read_u64(12)?;
        let header_end = 20usize.checked_add(header_len).ok_or(PackageError::Truncated)?;
        let blob_len = read_u64(header_end)?;
        let blob_start = header_end + 8;
        let blob_end = blob_start.checked_add(blob_len).ok_or(PackageError::Truncated)?;
        if blob_end != body.len() {
            return Err(if blob_end > body.len() {
                PackageError::Truncated
            } else {
                PackageError::Corrupt("trailing bytes".into())
            });
        }
        if Sha256::digest(body).as_slice() != digest {
            return Err(PackageError::Checksum);
        }
        let header: Header =
            serde_json::from_slice(&body[20..header_end]).map_err(|e| PackageError::Corrupt(format!("header: {e}")))?;
        let blob = &body[blob_start..blob_end];
        let mut graph = Graph {
            name: header.graph_name,
            inputs: header.inputs,
            outputs: header.outputs,
            nodes: header.nodes,
            ..Default::default()
        };
        for e in header.tensors {
            let bytes = e
                .offset
                .checked_add(e.len)
                .and_then(|end| blob.get(e.offset..end))
                .ok_or_else(|| PackageError::Corrupt(format!("tensor '{}' lies outside the data", e.name)))?;
            let t = Tensor::from_le_bytes(e.dtype, &e.shape, bytes)
                .map_err(|err| PackageError::Corrupt(format!("tensor '{}': {err}", e.name)))?;
            graph.initializers.insert(e.name, t);
        }
        graph.sort().map_err(|e| PackageError::Corrupt(e.to_string()))?;
        weft_core::shape::infer(&graph, &Default::default()).map_err(|e| PackageError::Corrupt(e.to_string()))?;
        Ok(Package {
            name: header.name,
            precision: header.precision,
            graph,
            preprocess: header.preprocess,
            labels: header.labels,
            metadata: header.metadata,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), PackageError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| PackageError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Package, PackageError> {
        let bytes = std::fs::read(path).map_err(|source| PackageError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Package::from_bytes(&bytes)
    }

    /// Whether a file starts like a package (used to tell packages from ONNX files).
    pub fn sniff(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Package {
        let graph = weft_zoo::build("resnet8", &weft_zoo::ZooOptions::default()).unwrap();
        Package {
            name: "resnet8".into(),
            precision: Precision::F32,
            graph,
            preprocess: Preprocess::default(),
            labels: vec!["a".into(), "b".into()],
            metadata: [("source".to_string(), "zoo".to_string())].into(),
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        let back = Package::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(back.graph.initializers, p.graph.initializers);
        assert_eq!(back.graph.nodes.len(), p.graph.nodes.len());
        assert_eq!(back.labels, p.labels);
        assert_eq!(back.preprocess, p.preprocess);
    }

    #[test]
    fn damaged_files_give_clear_errors() {
        let bytes = sample().to_bytes();
        assert!(matches!(
            Package::from_bytes(b"PK\x03\x04 a zip"),
            Err(PackageError::NotAPackage)
        ));
        let mut v = bytes.clone();
        v[8] = 99;
        assert!(matches!(
            Package::from_bytes(&v),
            Err(PackageError::Version { found: 99 })
        ));
        let mut v = bytes.clone();
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        assert!(matches!(Package::from_bytes(&v), Err(PackageError::Checksum)));
        for cut in [9, 13, 30, bytes.len() / 3, bytes.len() - 1] {
            assert!(Package::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    /// Writing is deterministic (the same package gives the same bytes) and a loaded package
    /// writes back the bytes it was read from; every tensor sits 64-byte aligned in the blob.
    #[test]
    fn bytes_are_deterministic_and_tensors_aligned() {
        let p = sample();
        let a = p.to_bytes();
        assert_eq!(a, p.to_bytes());
        assert_eq!(Package::from_bytes(&a).unwrap().to_bytes(), a);
        assert!(Package::sniff(&a) && !Package::sniff(b"\x08\x07onnx"));
        let header_len = u64::from_le_bytes(a[12..20].try_into().unwrap()) as usize;
        let header: Header = serde_json::from_slice(&a[20..20 + header_len]).unwrap();
        assert!(!header.tensors.is_empty());
        assert!(header.tensors.iter().all(|t| t.offset % 64 == 0));
    }

    /// save and load through a file; a missing file is an I/O error naming no checksum.
    #[test]
    fn saves_and_loads_files() {
        let dir = std::env::temp_dir().join(format!("weft-package-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.weft");
        let p = sample();
        p.save(&path).unwrap();
        assert_eq!(Package::load(&path).unwrap().to_bytes(), p.to_bytes());
        let err = Package::load(&dir.join("missing.weft")).unwrap_err();
        assert!(
            !matches!(err, PackageError::Checksum | PackageError::NotAPackage),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
