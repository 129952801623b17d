//! Planning a package's graph for one batch size: which nodes run as kernels and which on
//! the host, where every value lives, and activation buffers reused by liveness.
//!
//! One `Planner` walks the graph in order; its concerns live in the submodules:
//! - `slots`: activation buffers reused by liveness;
//! - `schedule`: the side queue (fork/join of downsampling branches) and the order of a
//!   run's downloads;
//! - `int8`: lowering of the integer graph's nodes (quantize edges, elementwise, pooling,
//!   views) and which of them stay on the host;
//! - `conv`: integer convolution geometry (fold, phase split), the two convolution forms,
//!   their work-group sizes and packed constants;
//! - `float`: lowering of f32 and f16 packages' nodes.
//!
//! This file holds the plan's types, the walk itself and the location bookkeeping all of
//! them share.

use std::collections::{HashMap, HashSet};

use weft_core::Graph;
use weft_core::op::Pool;
use weft_core::shape::Shapes;
use weft_package::Precision;

use crate::error::OpenClError;

mod conv;
mod float;
mod fpga;
mod int8;
mod schedule;
mod slots;

pub use fpga::FPGA_WG;
use schedule::{SideBranch, downloads_first};
use slots::Slots;

/// Geometry of a u8 activation held as NC4HW4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Geom {
    pub fn cb(&self) -> usize {
        self.c.div_ceil(4)
    }
    pub fn bytes(&self) -> usize {
        self.n * self.cb() * 4 * self.h * self.w
    }
}

/// Where a value lives during a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Loc {
    Host,
    /// f32, row-major in the value's shape.
    F32 {
        slot: usize,
    },
    /// IEEE half, row-major in the value's shape (an f16 package's activations).
    F16 {
        slot: usize,
    },
    /// u8 NC4HW4; `shape` is the value's own (possibly flattened) shape.
    U8 {
        slot: usize,
        geom: Geom,
    },
}

/// Which kernel a launch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Integer convolution, lane form: 16 pixels in the lanes, `TM` channels per work-item.
    QConv,
    /// Integer convolution, channel form: 16 channels in the lanes (one group only).
    QConvC,
    QAdd,
    Quantize,
    Dequantize,
    QPool,
    QMean,
    /// Phase split of a stride-2 convolution's input.
    QPhase,
    /// Kernel-width fold of a convolution's input with at most 4 channels.
    QFold,
    /// Max pooling, 16 pixels per work-item.
    QMaxPool,
    /// Depthwise convolution, 16 pixels of a row x one channel block per work-item.
    QDwConv,
    /// One input of a channel concatenation, requantized into its slice of the output.
    QConcat,
    /// Float kernels; `true` is the f16-storage variant.
    FConv(bool),
    FAdd(bool),
    FClamp(bool),
    FPool(bool),
    FMean(bool),
    /// MX layers (`kernels/mx.cl`): activation conversion, then the convolution or fully
    /// connected layer.
    MxAct,
    MxConv,
    /// The FPGA variant's per-layer kernels (`kernels/fpga/`): convolution or fully
    /// connected layer, add, pooling, global mean. The launch's `layer` names the instance.
    WConv,
    WAdd,
    WPool,
    WMean,
}

impl KernelKind {
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::QConv => "qconv",
            KernelKind::QConvC => "qconvc",
            KernelKind::QAdd => "qadd",
            KernelKind::Quantize => "quantize",
            KernelKind::Dequantize => "dequantize",
            KernelKind::QPool => "qpool",
            KernelKind::QMean => "qmean",
            KernelKind::QPhase => "qphase",
            KernelKind::QFold => "qfold",
            KernelKind::QMaxPool => "qmaxpool",
            KernelKind::QDwConv => "qdwconv",
            KernelKind::QConcat => "qconcat",
            KernelKind::FConv(false) => "fconv_f32",
            KernelKind::FConv(true) => "fconv_f16",
            KernelKind::FAdd(false) => "fadd_f32",
            KernelKind::FAdd(true) => "fadd_f16",
            KernelKind::FClamp(false) => "fclamp_f32",
            KernelKind::FClamp(true) => "fclamp_f16",
            KernelKind::FPool(false) => "fpool_f32",
            KernelKind::FPool(true) => "fpool_f16",
            KernelKind::FMean(false) => "fmean_f32",
            KernelKind::FMean(true) => "fmean_f16",
            KernelKind::MxAct => "mx_act",
            KernelKind::MxConv => "mx_conv",
            KernelKind::WConv => "wconv",
            KernelKind::WAdd => "wadd",
            KernelKind::WPool => "wpool",
            KernelKind::WMean => "wmean",
        }
    }

    /// The kernels a package of the given precision runs.
    pub fn for_precision(precision: Precision) -> Vec<KernelKind> {
        if let Precision::Mx(_) = precision {
            return vec![
                KernelKind::FConv(false),
                KernelKind::FAdd(false),
                KernelKind::FClamp(false),
                KernelKind::FPool(false),
                KernelKind::FMean(false),
                KernelKind::MxAct,
                KernelKind::MxConv,
            ];
        }
        match float_storage(precision) {
            None => vec![
                KernelKind::QConv,
                KernelKind::QConvC,
                KernelKind::QAdd,
                KernelKind::Quantize,
                KernelKind::Dequantize,
                KernelKind::QPool,
                KernelKind::QMean,
                KernelKind::QPhase,
                KernelKind::QFold,
                KernelKind::QMaxPool,
                KernelKind::QDwConv,
                KernelKind::QConcat,
            ],
            Some(h) => vec![
                KernelKind::FConv(h),
                KernelKind::FAdd(h),
                KernelKind::FClamp(h),
                KernelKind::FPool(h),
                KernelKind::FMean(h),
            ],
        }
    }
}

/// How a precision stores float activations on the device: `None` for int8 packages (u8
/// activations; float values stay on the host), `Some(half)` for float packages (IEEE half
/// when `half`, else f32).
pub fn float_storage(precision: Precision) -> Option<bool> {
    match precision {
        Precision::Int8 => None,
        Precision::F32 | Precision::Mx(_) => Some(false),
        Precision::F16 => Some(true),
    }
}

/// One kernel argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Slot(usize),
    /// A packed constant buffer of the session.
    Const(String),
    /// A 16-byte placeholder for an unused buffer argument.
    Dummy,
    I32(i32),
    U32(u32),
    F32(f32),
}

impl Arg {
    /// The activation slot this argument names, if any.
    pub fn slot(&self) -> Option<usize> {
        match self {
            Arg::Slot(s) => Some(*s),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    /// Host float tensor to a device slot, as f32 or (`half`) IEEE half.
    UploadFloat { value: String, slot: usize, half: bool },
    /// Host f32 NCHW tensor quantized on the host (as the reference quantizes) to a device
    /// NC4HW4 u8 slot: a graph input's Quantize.
    UploadQuantized {
        value: String,
        slot: usize,
        geom: Geom,
        scale: f32,
        zero_point: i32,
    },
    /// Host u8 NCHW tensor to a device NC4HW4 slot.
    UploadU8 {
        value: String,
        slot: usize,
        geom: Geom,
        fill: u8,
    },
    Launch {
        node: String,
        kernel: KernelKind,
        args: Vec<Arg>,
        global: [usize; 3],
        /// Work-group size, where the planner chooses one (else the driver does).
        local: Option<[usize; 3]>,
        macs: u64,
        shape: Vec<usize>,
        /// Runs on the side queue (after the last `Fork`, concurrently with the main
        /// queue's launches until the next `Join`).
        side: bool,
        /// The FPGA variant: the layer's own kernel (its name and compile-time macros).
        layer: Option<Box<LayerKernel>>,
    },
    /// The side queue's next launches may start once the main queue's earlier work is done.
    Fork,
    /// The main queue's later work waits for the side queue's launches.
    Join,
    /// Device value back to the host (as the value's shape).
    Download { value: String, loc: Loc, shape: Vec<usize> },
    /// A node evaluated on the host by the reference executor.
    Host { node: usize },
}

/// Which kernels a plan launches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelSet {
    /// The generic kernels (`kernels/*.cl`), one program for every package, with the
    /// device's hooks: what CPUs and GPUs run.
    #[default]
    Default,
    /// The FPGA variant (`kernels/fpga/*.cl`): one kernel per layer with the layer's
    /// geometry and constants compiled in, plain OpenCL C, fixed loop bounds and required
    /// work-group sizes: what an FPGA compiler takes as written, and what emulators run.
    Fpga,
}

impl std::str::FromStr for KernelSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(KernelSet::Default),
            "fpga" => Ok(KernelSet::Fpga),
            other => Err(format!("unknown kernel set '{other}' (default, fpga)")),
        }
    }
}

/// One layer's kernel in the FPGA variant: the template it instantiates, its function name
/// and its macros (`W_...`), as the program source writes them.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerKernel {
    pub template: KernelKind,
    pub name: String,
    pub defines: Vec<(&'static str, i64)>,
}

#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub slot_sizes: Vec<usize>,
}

/// Output channels per `qconv` work-item (the `TM` macro the program is built with).
pub const QCONV_TM: usize = 16;

/// Output pixels per `qconvc` work-item (the `QC_R` macro the program is built with).
pub const QCONVC_PIXELS: usize = 6;
/// Vectors of 16 output channels per `qconvc` work-item (the `QC_V` macro). 6 x 4 (24
/// accumulators, 4 weight vectors and a broadcast in 32 vector registers) measured fastest
/// on ResNet-50 against 5 x 4, 7 x 3, 8 x 3 and 12 x 2.
pub const QCONVC_VECTORS: usize = 4;
/// Output channels per `qconvc` work-item: its weights are packed with this `TM`.
pub const QCONVC_TM: usize = 16 * QCONVC_VECTORS;

/// Output pixels per image (plus one tile) `qconv` handles: it finds a lane's row with a
/// float division, exact below this.
pub const QCONV_MAX_PIXELS: usize = 1 << 20;

/// Bytes every activation buffer has past its tensor, so that a 16-lane vector load that
/// starts inside the tensor (at most two vectors: 32 words) stays inside the buffer.
pub const SLOT_SLACK: usize = 256;

/// Constant buffers a plan refers to, created by the session: name -> bytes.
pub type Consts = HashMap<String, Vec<u8>>;

struct Planner<'g> {
    graph: &'g Graph,
    shapes: Shapes,
    loc: HashMap<String, Loc>,
    on_host: HashSet<String>,
    steps: Vec<Step>,
    slots: Slots,
    last_use: HashMap<String, usize>,
    /// How many nodes read each value.
    uses: HashMap<String, usize>,
    outputs: HashSet<String>,
    /// The package's precision: float packages run float nodes as float kernels (their
    /// activations stored as f16 for `F16`); int8 packages run float nodes on the host.
    precision: Precision,
    /// Work-groups a launch should have at least, to keep every compute unit busy: 16 per
    /// compute unit (measured on PoCL with 2: 8 left a compute unit idle at the end of a
    /// batch-1 layer often enough to cost 2-3% of ResNet-50's latency; 32 gained nothing).
    min_groups: usize,
    /// The device's largest work-group.
    max_group: usize,
    /// Run every convolution in the lane form (`qconv`).
    lane_conv: bool,
    /// Plan the FPGA variant's per-layer kernels.
    fpga: bool,
}

/// What the planner needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub compute_units: usize,
    pub max_work_group: usize,
    /// Run every convolution in the lane form (`qconv`), not only grouped ones.
    pub lane_conv: bool,
    /// The kernels to plan for.
    pub kernels: KernelSet,
}

fn words_le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Plans `graph` for inputs of batch `batch`, creating the packed constants it needs in
/// `consts` (shared across batch sizes). `precision`: `Int8` runs integer kernels (float
/// nodes on the host); `F32` and `F16` run float kernels (activations stored as f16 for
/// `F16`).
pub fn plan(
    graph: &Graph,
    batch: usize,
    consts: &mut Consts,
    precision: Precision,
    target: Target,
) -> Result<Plan, OpenClError> {
    let mut p = Planner::new(graph, batch, precision, target)?;
    let mut early: HashSet<usize> = HashSet::new();
    let mut branch: Option<SideBranch> = None;
    for (idx, node) in graph.nodes.iter().enumerate() {
        if let Some(b) = &branch
            && node.inputs.iter().any(|i| b.outputs.contains(i))
        {
            let b = branch.take().unwrap_or_default();
            p.join(b);
        }
        if !early.contains(&idx) {
            if branch.is_none()
                && let Some(d) = p.side_candidate(idx, &early)
            {
                early.insert(d);
                branch = Some(p.fork(d, consts)?);
            }
            p.node(idx, consts)?;
        }
        for i in node.inputs.iter().filter(|i| !i.is_empty()) {
            if p.last_use.get(i) == Some(&idx) && !p.outputs.contains(i) {
                p.release(i);
            }
        }
    }
    if let Some(b) = branch {
        p.join(b);
    }
    for o in &graph.outputs {
        p.ensure_on_host(&o.name)?;
    }
    Ok(Plan {
        steps: downloads_first(p.steps),
        slot_sizes: p.slots.into_sizes(),
    })
}

impl<'g> Planner<'g> {
    /// A planner for `graph` at batch `batch`, before any node: graph inputs on the host.
    fn new(graph: &'g Graph, batch: usize, precision: Precision, target: Target) -> Result<Self, OpenClError> {
        let input_shapes = graph
            .inputs
            .iter()
            .map(|i| (i.name.clone(), i.concrete_shape(batch)))
            .collect();
        let shapes = weft_core::shape::infer(graph, &input_shapes)?;
        let mut last_use = HashMap::new();
        let mut uses = HashMap::new();
        for (idx, node) in graph.nodes.iter().enumerate() {
            for i in node.inputs.iter().filter(|i| !i.is_empty()) {
                last_use.insert(i.clone(), idx);
                *uses.entry(i.clone()).or_insert(0) += 1;
            }
        }
        Ok(Planner {
            graph,
            shapes,
            loc: graph.inputs.iter().map(|i| (i.name.clone(), Loc::Host)).collect(),
            on_host: graph.inputs.iter().map(|i| i.name.clone()).collect(),
            steps: Vec::new(),
            slots: Slots::default(),
            last_use,
            uses,
            outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
            precision,
            min_groups: 16 * target.compute_units.max(1),
            max_group: target.max_work_group.max(1),
            lane_conv: target.lane_conv,
            fpga: target.kernels == KernelSet::Fpga,
        })
    }
}

impl Planner<'_> {
    fn shape(&self, v: &str) -> Vec<usize> {
        self.shapes.shape(v).map(<[usize]>::to_vec).unwrap_or_default()
    }

    fn alloc(&mut self, bytes: usize) -> usize {
        self.slots.alloc(bytes)
    }

    fn bind(&mut self, value: &str, loc: Loc) {
        if let Loc::F32 { slot } | Loc::F16 { slot } | Loc::U8 { slot, .. } = loc {
            self.slots.add_user(slot);
        }
        self.loc.insert(value.to_string(), loc);
    }

    fn release(&mut self, value: &str) {
        if let Some(Loc::F32 { slot } | Loc::F16 { slot } | Loc::U8 { slot, .. }) = self.loc.get(value).cloned() {
            self.slots.drop_user(slot);
            self.loc.insert(value.to_string(), Loc::Host);
        }
    }

    fn ensure_on_host(&mut self, value: &str) -> Result<(), OpenClError> {
        if self.on_host.contains(value) || self.graph.initializers.contains_key(value) {
            return Ok(());
        }
        let loc = self
            .loc
            .get(value)
            .cloned()
            .ok_or_else(|| OpenClError::Unsupported(format!("value '{value}' has no location")))?;
        if loc != Loc::Host {
            self.steps.push(Step::Download {
                value: value.to_string(),
                loc,
                shape: self.shape(value),
            });
        }
        self.on_host.insert(value.to_string());
        Ok(())
    }

    /// The NC4HW4 geometry of a u8 value on the device, uploading it when it is on the host.
    fn u8_on_device(&mut self, value: &str, fill: u8) -> Result<Geom, OpenClError> {
        match self.loc.get(value) {
            Some(Loc::U8 { geom, .. }) => Ok(*geom),
            _ => {
                let s = self.shape(value);
                let geom = geom_of(&s).ok_or_else(|| {
                    OpenClError::Unsupported(format!("value '{value}' of shape {s:?} is not an image tensor"))
                })?;
                let slot = self.alloc(geom.bytes());
                self.steps.push(Step::UploadU8 {
                    value: value.to_string(),
                    slot,
                    geom,
                    fill,
                });
                self.bind(value, Loc::U8 { slot, geom });
                Ok(geom)
            }
        }
    }

    fn slot_of(&self, value: &str) -> usize {
        match self.loc.get(value) {
            Some(Loc::F32 { slot } | Loc::F16 { slot } | Loc::U8 { slot, .. }) => *slot,
            _ => usize::MAX,
        }
    }

    fn host(&mut self, idx: usize) -> Result<(), OpenClError> {
        let node = &self.graph.nodes[idx];
        for i in node.inputs.clone().iter().filter(|i| !i.is_empty()) {
            self.ensure_on_host(i)?;
        }
        self.steps.push(Step::Host { node: idx });
        for o in node.outputs.clone() {
            self.on_host.insert(o.clone());
            self.loc.insert(o, Loc::Host);
        }
        Ok(())
    }

    fn launch(
        &mut self,
        node: &str,
        kernel: KernelKind,
        args: Vec<Arg>,
        global: [usize; 3],
        macs: u64,
        shape: Vec<usize>,
    ) {
        let global = global.map(|g| g.max(1));
        self.steps.push(Step::Launch {
            node: node.to_string(),
            kernel,
            args,
            global,
            local: None,
            macs,
            shape,
            side: false,
            layer: None,
        });
    }
}

/// `OH OW KH KW SY SX DY DX PT PL PB PR is_avg include_pad`: the window arguments the
/// `qpool` and `fpool` kernels share.
fn pool_window_args(pool: &Pool, wy: &weft_core::shape::Window, wx: &weft_core::shape::Window, avg: bool) -> Vec<Arg> {
    vec![
        int(wy.out),
        int(wx.out),
        int(pool.kernel_shape[0]),
        int(pool.kernel_shape[1]),
        int(pool.strides[0]),
        int(pool.strides[1]),
        int(pool.dilations[0]),
        int(pool.dilations[1]),
        int(wy.pad_begin),
        int(wx.pad_begin),
        int(wy.pad_end),
        int(wx.pad_end),
        Arg::I32(i32::from(avg)),
        Arg::I32(i32::from(pool.count_include_pad)),
    ]
}

fn int(v: usize) -> Arg {
    Arg::I32(v as i32)
}

/// NC4HW4 geometry for a rank-4 `[N,C,H,W]` or rank-2 `[N,C]` shape.
pub fn geom_of(s: &[usize]) -> Option<Geom> {
    match s {
        [n, c, h, w] => Some(Geom {
            n: *n,
            c: *c,
            h: *h,
            w: *w,
        }),
        [n, c] => Some(Geom {
            n: *n,
            c: *c,
            h: 1,
            w: 1,
        }),
        _ => None,
    }
}

/// What the planner's tests share: small compiled networks and a default device.
#[cfg(test)]
mod testing {
    use std::collections::HashMap;

    use weft_core::Graph;
    use weft_package::Precision;

    use super::{Arg, KernelKind, KernelSet, Plan, Step, Target};

    /// The zoo's `name` (a CIFAR-style 32x32 network) compiled at `precision` (int8 with
    /// MinMax over a few seeded inputs).
    pub(super) fn zoo(name: &str, precision: Precision) -> Graph {
        let g = weft_zoo::build(name, &weft_zoo::ZooOptions::default()).unwrap();
        let mut rng = weft_core::rng::Rng::new(5);
        let x = weft_core::Tensor::from_f32(&[2, 3, 32, 32], rng.normals(2 * 3 * 32 * 32, 1.0)).unwrap();
        let opts = weft_compile::CompileOptions {
            mx_activations: None,
            mx_input_activations: None,
            name: "t".into(),
            precision,
            method: weft_quant::Method::MinMax,
            calibration: vec![HashMap::from([("input".to_string(), x)])],
            given: None,
            evaluation: None,
            preprocess: Default::default(),
            labels: vec![],
            metadata: Default::default(),
        };
        weft_compile::compile(g, opts, &mut |_, _, _| {}).unwrap().0.graph
    }

    /// The zoo's resnet8, int8.
    pub(super) fn resnet8_int8() -> Graph {
        zoo("resnet8", Precision::Int8)
    }

    /// Two compute units, large work-groups, the channel form for ungrouped layers.
    pub(super) fn target() -> Target {
        Target {
            compute_units: 2,
            max_work_group: 4096,
            lane_conv: false,
            kernels: KernelSet::Default,
        }
    }

    /// One launch of a plan: node, kernel, arguments, global and local size.
    pub(super) type Launch<'p> = (&'p str, KernelKind, &'p [Arg], [usize; 3], Option<[usize; 3]>);

    /// Every launch of a plan.
    pub(super) fn launches(plan: &Plan) -> Vec<Launch<'_>> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Launch {
                    node,
                    kernel,
                    args,
                    global,
                    local,
                    ..
                } => Some((node.as_str(), *kernel, args.as_slice(), *global, *local)),
                _ => None,
            })
            .collect()
    }

    /// The nodes a plan runs on the host.
    pub(super) fn host_nodes<'g>(plan: &Plan, graph: &'g Graph) -> Vec<&'g str> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Host { node } => Some(graph.nodes[*node].name.as_str()),
                _ => None,
            })
            .collect()
    }
}
