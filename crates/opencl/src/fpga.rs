//! The FPGA kernel variant's program for a package: one kernel per layer, instantiated from
//! `kernels/fpga/` with the layer's geometry and constants as macros. The same source is
//! what sessions with `KernelSet::Fpga` build (PoCL, Oclgrind: the emulation flow) and what
//! `weft program fpga` hands to an FPGA compiler.

use weft_package::{Package, Precision};

use crate::error::OpenClError;
use crate::plan::{Consts, KernelKind, KernelSet, LayerKernel, Step, Target, plan};

const COMMON: &str = include_str!("../../../kernels/fpga/common.cl");
const WCONV: &str = include_str!("../../../kernels/fpga/wconv.cl");
const WADD: &str = include_str!("../../../kernels/fpga/wadd.cl");
const WPOOL: &str = include_str!("../../../kernels/fpga/wpool.cl");
const WMEAN: &str = include_str!("../../../kernels/fpga/wmean.cl");

pub use crate::plan::FPGA_WG;

/// One layer of the variant's program.
#[derive(Clone, Debug)]
pub struct FpgaLayer {
    /// The graph node it runs.
    pub node: String,
    pub kernel: LayerKernel,
    /// Multiply-accumulates per image (0 for layers without a multiply array).
    pub macs: u64,
    /// The output's shape at batch 1.
    pub shape: Vec<usize>,
}

/// The variant's program for a package.
#[derive(Clone, Debug)]
pub struct FpgaProgram {
    pub source: String,
    pub layers: Vec<FpgaLayer>,
    /// Nodes that run on the host (the edges' float conversions, anything without a kernel).
    pub host_nodes: Vec<String>,
}

/// The planner's view of a device for the variant: its kernels fix their own work-group
/// size, so only that size matters.
pub(crate) fn fpga_target() -> Target {
    Target {
        compute_units: 1,
        max_work_group: FPGA_WG,
        lane_conv: false,
        kernels: KernelSet::Fpga,
    }
}

/// The template source of a layer kernel.
fn template(kind: KernelKind) -> &'static str {
    match kind {
        KernelKind::WConv => WCONV,
        KernelKind::WAdd => WADD,
        KernelKind::WPool => WPOOL,
        _ => WMEAN,
    }
}

/// The program's source: the shared definitions, then each layer's template under its
/// macros (defined before, undefined after).
pub fn fpga_source<'a>(layers: impl IntoIterator<Item = &'a LayerKernel>) -> String {
    let mut s = String::from(COMMON);
    for l in layers {
        s.push_str(&format!(
            "\n// ---- layer kernel {} ----\n#define W_NAME {}\n",
            l.name, l.name
        ));
        for (k, v) in &l.defines {
            s.push_str(&format!("#define {k} {v}\n"));
        }
        s.push_str(template(l.template));
        s.push_str("#undef W_NAME\n");
        for (k, _) in &l.defines {
            s.push_str(&format!("#undef {k}\n"));
        }
    }
    s
}

/// The variant's program for `package` (an int8 package): planned at batch 1 (the kernels'
/// macros do not depend on the batch, which is a launch dimension).
pub fn fpga_program(package: &Package) -> Result<FpgaProgram, OpenClError> {
    fpga_program_packing(package, &mut Consts::new())
}

/// `fpga_program`, packing the plan's constants into `consts` (a session passes its own, so
/// that planning its first batch size finds them packed instead of packing them again).
pub(crate) fn fpga_program_packing(package: &Package, consts: &mut Consts) -> Result<FpgaProgram, OpenClError> {
    if package.precision != Precision::Int8 {
        return Err(OpenClError::Unsupported(format!(
            "the FPGA kernel variant runs int8 packages; '{}' is {}",
            package.name, package.precision
        )));
    }
    let p = plan(&package.graph, 1, consts, Precision::Int8, fpga_target())?;
    let mut layers = Vec::new();
    let mut host_nodes = Vec::new();
    for step in &p.steps {
        match step {
            Step::Launch {
                node,
                layer: Some(l),
                macs,
                shape,
                ..
            } => layers.push(FpgaLayer {
                node: node.clone(),
                kernel: (**l).clone(),
                macs: *macs,
                shape: shape.clone(),
            }),
            Step::Host { node } => host_nodes.push(package.graph.nodes[*node].name.clone()),
            _ => {}
        }
    }
    let source = fpga_source(layers.iter().map(|l| &l.kernel));
    Ok(FpgaProgram {
        source,
        layers,
        host_nodes,
    })
}
