//! Opening a model file: an ONNX model or a compiled package.

use std::path::Path;

use anyhow::Context;
use weft_compile::Package;

/// A model as given on the command line.
#[derive(Debug)]
pub enum Loaded {
    Onnx(weft_onnx::Model),
    Package(Box<Package>),
}

impl Loaded {
    pub fn graph(&self) -> &weft_core::Graph {
        match self {
            Loaded::Onnx(m) => &m.graph,
            Loaded::Package(p) => &p.graph,
        }
    }
}

/// Opens an ONNX file or a `.weft` package (told apart by the package's magic bytes).
pub fn open(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // a .weft file is a package, whatever it holds: an empty or foreign one is not reported
    // as a broken ONNX model
    let named_package = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("weft"));
    if named_package && !Package::sniff(&bytes) {
        anyhow::bail!(
            "{} is not a weft package ({} bytes, without the package header): make one with `weft compile`",
            path.display(),
            bytes.len()
        );
    }
    if Package::sniff(&bytes) {
        let p = Package::from_bytes(&bytes).with_context(|| format!("loading package {}", path.display()))?;
        prefer_generic_work_groups(&p);
        return Ok(Loaded::Package(Box::new(p)));
    }
    let m = weft_onnx::import(&bytes, path.parent()).with_context(|| format!("loading {}", path.display()))?;
    Ok(Loaded::Onnx(m))
}

/// For an int8 package, PoCL compiles each kernel once for any work-group size (see
/// `weft_opencl::generic_pocl_work_groups`: a cold start half as long, the same speed); float
/// packages keep the per-size compiles their convolution runs faster with.
pub fn prefer_generic_work_groups(p: &Package) {
    if p.precision == weft_compile::Precision::Int8 {
        weft_opencl::generic_pocl_work_groups();
    }
}

/// Opens a `.weft` package; an ONNX model is refused with the command that compiles it.
pub fn open_package(path: &Path) -> anyhow::Result<Package> {
    match open(path)? {
        Loaded::Package(p) => Ok(*p),
        Loaded::Onnx(_) => anyhow::bail!(
            "{} is an ONNX model: compile it first (`weft compile {} --precision int8 --calib DATA -o model.weft`)",
            path.display(),
            path.display()
        ),
    }
}
