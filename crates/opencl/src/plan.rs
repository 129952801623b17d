//! Planning a package's graph for one batch size: which nodes run as kernels and which on
//! the host, where every value lives, and activation buffers reused by liveness.

use std::collections::{HashMap, HashSet};

use weft_core::op::Pool;
use weft_core::shape::{Shapes, window};
use weft_core::{Graph, Op};

use crate::error::OpenClError;

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
    /// Float kernels; `true` is the f16-storage variant.
    FConv(bool),
    FAdd(bool),
    FClamp(bool),
    FPool(bool),
    FMean(bool),
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
        }
    }

    /// The kernels a package of the given precision runs.
    pub fn for_precision(float: Option<bool>) -> Vec<KernelKind> {
        match float {
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
    slot_sizes: Vec<usize>,
    free: Vec<usize>,
    /// live value count per slot
    slot_users: Vec<usize>,
    last_use: HashMap<String, usize>,
    /// How many nodes read each value.
    uses: HashMap<String, usize>,
    outputs: HashSet<String>,
    /// A float package: float nodes run as float kernels.
    float: bool,
    /// Float activations are stored as f16.
    half: bool,
    /// Work-groups a launch should have at least, to keep every compute unit busy: 16 per
    /// compute unit (measured on PoCL with 2: 8 left a compute unit idle at the end of a
    /// batch-1 layer often enough to cost 2-3% of ResNet-50's latency; 32 gained nothing).
    min_groups: usize,
    /// The device's largest work-group.
    max_group: usize,
    /// Run every convolution in the lane form (`qconv`).
    lane_conv: bool,
}

/// What the planner needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub compute_units: usize,
    pub max_work_group: usize,
    /// Run every convolution in the lane form (`qconv`), not only grouped ones.
    pub lane_conv: bool,
}

fn words_le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Plans `graph` for inputs of batch `batch`, creating the packed constants it needs in
/// `consts` (shared across batch sizes). `float`: `None` for an int8 package (integer
/// kernels; float nodes on the host), `Some(half)` for a float package (float kernels,
/// activations stored as f16 when `half`).
pub fn plan(
    graph: &Graph,
    batch: usize,
    consts: &mut Consts,
    float: Option<bool>,
    target: Target,
) -> Result<Plan, OpenClError> {
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
    let mut p = Planner {
        graph,
        shapes,
        loc: graph.inputs.iter().map(|i| (i.name.clone(), Loc::Host)).collect(),
        on_host: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        steps: Vec::new(),
        slot_sizes: Vec::new(),
        free: Vec::new(),
        slot_users: Vec::new(),
        last_use,
        uses,
        outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
        float: float.is_some(),
        half: float == Some(true),
        min_groups: 16 * target.compute_units.max(1),
        max_group: target.max_work_group.max(1),
        lane_conv: target.lane_conv,
    };
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
        slot_sizes: p.slot_sizes,
    })
}

/// Within each run of steps that touch only the host (downloads and host nodes, as at a
/// network's outputs), the downloads moved ahead of the host nodes, in order: their values
/// are final once the run starts (host nodes write no device memory), so the session can
/// read them all behind one wait.
fn downloads_first(steps: Vec<Step>) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    let mut hosts = Vec::new();
    for step in steps {
        match step {
            Step::Download { .. } => out.push(step),
            Step::Host { .. } => hosts.push(step),
            _ => {
                out.append(&mut hosts);
                out.push(step);
            }
        }
    }
    out.append(&mut hosts);
    out
}

/// A node planned ahead of its place onto the side queue: the values it produces and the
/// slots it uses, held (not reused) until the main queue joins it.
#[derive(Default)]
struct SideBranch {
    outputs: HashSet<String>,
    held: Vec<usize>,
}

impl Planner<'_> {
    /// A later node that may run on the side queue while node `idx` runs: an ungrouped
    /// integer convolution whose only activation input is one of `idx`'s inputs, already
    /// on the device (ResNet's downsampling branch beside a block's first convolution).
    /// Kernels of one layer leave compute units idle at their start and end (worker
    /// wake-up, the last work-groups); a second stream of work-groups fills those gaps.
    fn side_candidate(&self, idx: usize, early: &HashSet<usize>) -> Option<usize> {
        let g = self.graph;
        let n = &g.nodes[idx];
        if self.float || !matches!(n.op, Op::QConv(_)) {
            return None;
        }
        let activations = |node: &weft_core::Node| -> Vec<String> {
            node.inputs
                .iter()
                .filter(|i| !i.is_empty() && !g.initializers.contains_key(*i))
                .cloned()
                .collect()
        };
        let xs = activations(n);
        let [x] = xs.as_slice() else { return None };
        if !matches!(self.loc.get(x), Some(Loc::U8 { .. })) {
            return None;
        }
        (idx + 1..g.nodes.len()).find(|&d| {
            let dn = &g.nodes[d];
            !early.contains(&d)
                && matches!(&dn.op, Op::QConv(q) if q.conv.group == 1 && q.residual_zero_point.is_none())
                && activations(dn).as_slice() == std::slice::from_ref(x)
                && dn.outputs.iter().all(|o| !self.outputs.contains(o))
        })
    }

    /// Plans node `d` now, its launches on the side queue after a `Fork`; the slots they
    /// use stay out of reuse until `join`.
    fn fork(&mut self, d: usize, consts: &mut Consts) -> Result<SideBranch, OpenClError> {
        self.steps.push(Step::Fork);
        let first = self.steps.len();
        self.node(d, consts)?;
        let mut held = Vec::new();
        for step in &mut self.steps[first..] {
            if let Step::Launch { side, args, .. } = step {
                *side = true;
                held.extend(args.iter().filter_map(Arg::slot));
            }
        }
        held.sort_unstable();
        held.dedup();
        for &s in &held {
            self.slot_users[s] += 1;
            self.free.retain(|&f| f != s);
        }
        let outputs = self.graph.nodes[d].outputs.iter().cloned().collect();
        Ok(SideBranch { outputs, held })
    }

    /// Waits for the side queue's branch and returns its held slots.
    fn join(&mut self, b: SideBranch) {
        self.steps.push(Step::Join);
        for s in b.held {
            self.drop_user(s);
        }
    }

    fn shape(&self, v: &str) -> Vec<usize> {
        self.shapes.shape(v).map(<[usize]>::to_vec).unwrap_or_default()
    }

    fn alloc(&mut self, bytes: usize) -> usize {
        let bytes = bytes.max(16) + SLOT_SLACK;
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|&(_, &s)| self.slot_sizes[s] >= bytes)
            .min_by_key(|&(_, &s)| self.slot_sizes[s])
            .map(|(i, _)| i);
        let slot = match best {
            Some(i) => self.free.swap_remove(i),
            None => match self
                .free
                .iter()
                .enumerate()
                .max_by_key(|&(_, &s)| self.slot_sizes[s])
                .map(|(i, _)| i)
            {
                // grow the largest free slot rather than adding another
                Some(i) => {
                    let s = self.free.swap_remove(i);
                    self.slot_sizes[s] = bytes;
                    s
                }
                None => {
                    self.slot_sizes.push(bytes);
                    self.slot_users.push(0);
                    self.slot_sizes.len() - 1
                }
            },
        };
        self.slot_users[slot] = 0;
        slot
    }

    fn bind(&mut self, value: &str, loc: Loc) {
        if let Loc::F32 { slot } | Loc::F16 { slot } | Loc::U8 { slot, .. } = loc {
            self.slot_users[slot] += 1;
        }
        self.loc.insert(value.to_string(), loc);
    }

    fn release(&mut self, value: &str) {
        if let Some(Loc::F32 { slot } | Loc::F16 { slot } | Loc::U8 { slot, .. }) = self.loc.get(value).cloned() {
            self.drop_user(slot);
            self.loc.insert(value.to_string(), Loc::Host);
        }
    }

    /// One fewer live value (or side-branch hold) on `slot`; with none left it is free.
    fn drop_user(&mut self, slot: usize) {
        self.slot_users[slot] = self.slot_users[slot].saturating_sub(1);
        if self.slot_users[slot] == 0 && !self.free.contains(&slot) {
            self.free.push(slot);
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

    fn node(&mut self, idx: usize, consts: &mut Consts) -> Result<(), OpenClError> {
        let node = self.graph.nodes[idx].clone();
        let input = |i: usize| node.input(i).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        let c = |name: &str| self.graph.initializers.get(name);
        if self.float && self.float_node(&node, consts)? {
            return Ok(());
        }
        match &node.op {
            Op::Quantize { scale, zero_point } if geom_of(&self.shape(&input(0))).is_some() => {
                let x = input(0);
                let s = self.shape(&x);
                let geom = geom_of(&s).unwrap_or(Geom { n: 0, c: 0, h: 0, w: 0 });
                let Some(Loc::F32 { slot: in_slot }) = self.loc.get(&x).cloned() else {
                    // a float on the host (a graph input): quantized on the host as it is
                    // laid out for the upload, a quarter of the bytes of its floats
                    let slot = self.alloc(geom.bytes());
                    self.steps.push(Step::UploadQuantized {
                        value: x.clone(),
                        slot,
                        geom,
                        scale: *scale,
                        zero_point: *zero_point,
                    });
                    self.bind(&out, Loc::U8 { slot, geom });
                    return Ok(());
                };
                let slot = self.alloc(geom.bytes());
                self.bind(&out, Loc::U8 { slot, geom });
                let args = edge_args(in_slot, slot, geom, *scale, *zero_point);
                self.launch(
                    &node.name,
                    KernelKind::Quantize,
                    args,
                    [1, geom.h, geom.n * geom.cb()],
                    0,
                    out_shape,
                );
            }
            Op::QConv(q)
                if q.conv.group == 1
                    || (q.conv.group > 1
                        && (self.shape(&input(0)).get(1).copied().unwrap_or(1) / q.conv.group) % 4 == 0) =>
            {
                if !self.requant_fits(&node) {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let w = c(&input(1))
                    .ok_or_else(|| OpenClError::Unsupported(format!("{}: weights are not constant", node.name)))?;
                let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
                let g = q.conv.group;
                let wy = window(
                    xg.h,
                    kh,
                    q.conv.strides[0],
                    q.conv.dilations[0],
                    &q.conv.padding,
                    false,
                    0,
                )
                .map_err(OpenClError::Unsupported)?;
                let wx = window(
                    xg.w,
                    kw,
                    q.conv.strides[1],
                    q.conv.dilations[1],
                    &q.conv.padding,
                    false,
                    1,
                )
                .map_err(OpenClError::Unsupported)?;
                let og = Geom {
                    n: xg.n,
                    c: m,
                    h: wy.out,
                    w: wx.out,
                };
                if !self.channel_form(g) && og.h * og.w + 16 > QCONV_MAX_PIXELS {
                    // the lane form finds a lane's row with a float division, exact below the limit
                    return self.host(idx);
                }
                let res = if q.residual_zero_point.is_some() {
                    Some(self.u8_on_device(&input(5), 0)?)
                } else {
                    None
                };
                // The output overwrites the residual in place where this is the residual's
                // last reader: each work-item reads the residual words it then writes, and
                // the lines are in cache already (no write-allocate misses).
                let in_place = match (res, self.loc.get(&input(5))) {
                    (Some(rg), Some(Loc::U8 { slot, .. }))
                        if rg == og
                            && self.last_use.get(&input(5)) == Some(&idx)
                            && !self.outputs.contains(&input(5))
                            && self.slot_users[*slot] == 1
                            && input(5) != input(0) =>
                    {
                        Some(*slot)
                    }
                    _ => None,
                };
                let slot = match in_place {
                    Some(s) => s,
                    None => self.alloc(og.bytes()),
                };
                let geo = ConvGeo {
                    kh,
                    kw,
                    strides: q.conv.strides,
                    dilations: q.conv.dilations,
                    pads: [wy.pad_begin, wx.pad_begin],
                };
                self.conv_launches(
                    &node,
                    consts,
                    xg,
                    og,
                    slot,
                    (m, cg, g),
                    geo,
                    q.x_zero_point,
                    &q.out,
                    res.map(|_| (input(5), input(6), q.residual_zero_point.unwrap_or(0))),
                )?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QGemm(q)
                if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. }))
                    || geom_of(&self.shape(&input(0))).is_some() =>
            {
                if !self.requant_fits(&node) {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let w = c(&input(1))
                    .ok_or_else(|| OpenClError::Unsupported(format!("{}: weights are not constant", node.name)))?;
                let m = w.shape()[0];
                if w.shape()[1] != xg.c * xg.h * xg.w {
                    return self.host(idx);
                }
                let og = Geom {
                    n: xg.n,
                    c: m,
                    h: 1,
                    w: 1,
                };
                let slot = self.alloc(og.bytes());
                let geo = ConvGeo {
                    kh: xg.h,
                    kw: xg.w,
                    strides: [1, 1],
                    dilations: [1, 1],
                    pads: [0, 0],
                };
                self.conv_launches(
                    &node,
                    consts,
                    xg,
                    og,
                    slot,
                    (m, xg.c, 1),
                    geo,
                    q.x_zero_point,
                    &q.out,
                    None,
                )?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QAdd(q) => {
                let a = self.u8_on_device(&input(0), q.a_zero_point as u8)?;
                let b = self.u8_on_device(&input(1), q.b_zero_point as u8)?;
                if a != b {
                    return self.host(idx);
                }
                let slot = self.alloc(a.bytes());
                let args = vec![
                    Arg::Slot(self.slot_of(&input(0))),
                    Arg::Slot(self.slot_of(&input(1))),
                    Arg::Slot(slot),
                    Arg::I32(q.a_zero_point),
                    Arg::I32(q.b_zero_point),
                    Arg::I32(q.a_multiplier),
                    Arg::I32(q.b_multiplier),
                    Arg::I32(q.shift),
                    Arg::I32(q.out.zero_point),
                    Arg::I32(q.out.clamp[0]),
                    Arg::I32(q.out.clamp[1]),
                ];
                self.bind(&out, Loc::U8 { slot, geom: a });
                self.launch(&node.name, KernelKind::QAdd, args, [a.bytes(), 1, 1], 0, out_shape);
            }
            Op::QMaxPool(pool) => self.pool(&node, pool, None, consts)?,
            Op::QAveragePool { pool, zero_point } => self.pool(&node, pool, Some(*zero_point), consts)?,
            Op::QMean(q) => {
                let s = self.shape(&input(0));
                let axes: Vec<usize> = match node.input(1).and_then(c) {
                    Some(t) => t
                        .to_i64_vec()
                        .iter()
                        .filter_map(|&a| weft_core::shape::normalize_axis(a, s.len()))
                        .collect(),
                    None => (2..s.len()).collect(),
                };
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                if s.len() != 4 || sorted != vec![2, 3] {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let og = Geom {
                    n: xg.n,
                    c: xg.c,
                    h: 1,
                    w: 1,
                };
                let slot = self.alloc(og.bytes());
                let args = vec![
                    Arg::Slot(self.slot_of(&input(0))),
                    Arg::Slot(slot),
                    int(xg.cb()),
                    int(xg.h),
                    int(xg.w),
                    Arg::I32(q.x_zero_point),
                    Arg::I32(q.multiplier),
                    Arg::I32(q.shift),
                    Arg::I32(q.out.zero_point),
                    Arg::I32(q.out.clamp[0]),
                    Arg::I32(q.out.clamp[1]),
                ];
                self.bind(&out, Loc::U8 { slot, geom: og });
                self.launch(
                    &node.name,
                    KernelKind::QMean,
                    args,
                    [xg.n * xg.cb(), 1, 1],
                    0,
                    out_shape,
                );
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity
                if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. })) =>
            {
                let Some(Loc::U8 { slot, geom }) = self.loc.get(&input(0)).cloned() else {
                    return self.host(idx);
                };
                // A view when the output keeps the batch and flattens (C, H, W) in order.
                let keeps = out_shape.first() == Some(&geom.n)
                    && out_shape.iter().skip(1).product::<usize>() == geom.c * geom.h * geom.w;
                let spatial_one = geom.h == 1 && geom.w == 1;
                let flat =
                    out_shape.len() == 2 || (out_shape.len() == 4 && out_shape[1] == geom.c && out_shape[2] == geom.h);
                if keeps && (flat || spatial_one) {
                    self.bind(&out, Loc::U8 { slot, geom });
                } else {
                    return self.host(idx);
                }
            }
            // a graph output that no later node reads is dequantized on the host after a u8
            // download (a quarter of the bytes, and no launch)
            Op::Dequantize { .. } if self.outputs.contains(&out) && !self.last_use.contains_key(&out) => {
                return self.host(idx);
            }
            Op::Dequantize { scale, zero_point } if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. })) => {
                let Some(Loc::U8 { slot: in_slot, geom }) = self.loc.get(&input(0)).cloned() else {
                    return self.host(idx);
                };
                let slot = self.alloc(geom.n * geom.c * geom.h * geom.w * 4);
                self.bind(&out, Loc::F32 { slot });
                let args = edge_args(in_slot, slot, geom, *scale, *zero_point);
                self.launch(
                    &node.name,
                    KernelKind::Dequantize,
                    args,
                    [geom.w, geom.h, geom.n * geom.c],
                    0,
                    out_shape,
                );
            }
            _ => return self.host(idx),
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
        });
    }

    /// Whether `qconv`'s folded requantization is exact for this node: shifts 1..=52 and
    /// residual multipliers of at most 2^52 keep every sum inside 63 bits (else the node runs
    /// on the host).
    fn requant_fits(&self, node: &weft_core::Node) -> bool {
        let g = self.graph;
        let constant = |i: usize| node.input(i).and_then(|n| g.initializers.get(n));
        let shifts_ok = constant(4).is_some_and(|t| t.to_i64_vec().iter().all(|s| (1..=52).contains(s)));
        let rmult_ok = match node.input(6).filter(|n| !n.is_empty()) {
            None => true,
            Some(_) => constant(6).is_some_and(|t| t.to_i64_vec().iter().all(|v| v.unsigned_abs() <= 1 << 52)),
        };
        shifts_ok && rmult_ok
    }

    /// Whether a convolution of `group` groups runs in the channel form (`qconvc`): one
    /// group, unless the lane form (`qconv`) is forced.
    fn channel_form(&self, group: usize) -> bool {
        group == 1 && !self.lane_conv
    }

    /// Global and local sizes for `qconvc` over `tiles` pixel tiles (of the whole batch) and
    /// `z` channel blocks: a group's work-items share one channel block's weights (64 x K
    /// bytes, the larger operand) and walk its tiles; as many tiles per group as keep
    /// `min_groups` groups, rounded down to a power of two (few distinct group sizes, so few
    /// compiled variants where PoCL compiles a kernel per local size: float packages; evenly
    /// sized groups measured no faster).
    fn channel_sizes(&self, tiles: usize, z: usize) -> ([usize; 3], [usize; 3]) {
        let want_x = self.min_groups.div_ceil(z).max(1);
        let lx = (tiles / want_x).clamp(1, self.max_group.min(256));
        let lx = if lx.is_power_of_two() {
            lx
        } else {
            lx.next_power_of_two() / 2
        };
        ([tiles.div_ceil(lx) * lx, 1, z], [lx, 1, 1])
    }

    /// Global and local sizes for `qconv` over `tiles` pixel tiles and `z` channel-block
    /// (times image) indices: all of z in one work-group where that leaves enough groups
    /// (the work-items of a group then share one input tile), else z split; tiles padded
    /// to a multiple of the group's tiles (the kernel skips tiles past the plane).
    fn conv_sizes(&self, tiles: usize, z: usize) -> ([usize; 3], [usize; 3]) {
        let cap = self.max_group.min(256);
        let divisors = |n: usize| (1..=n).filter(move |&d| n.is_multiple_of(d));
        // z per group: the largest divisor of z that fits and leaves min_groups groups
        let lz = divisors(z)
            .filter(|&d| d <= cap && tiles * (z / d) >= self.min_groups)
            .max()
            .unwrap_or(1);
        let groups_z = z / lz;
        // tiles per group: as many as keep min_groups groups
        let want_x = self.min_groups.div_ceil(groups_z).max(1);
        let lx = (tiles / want_x).clamp(1, (cap / lz).max(1));
        let gx = tiles.div_ceil(lx) * lx;
        ([gx, 1, z], [lx, 1, lz])
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_launches(
        &mut self,
        node: &weft_core::Node,
        consts: &mut Consts,
        xg: Geom,
        og: Geom,
        slot: usize,
        (m, cg, group): (usize, usize, usize),
        geo: ConvGeo,
        zp_x: i32,
        out: &weft_core::op::QOut,
        residual: Option<(String, String, i32)>,
    ) -> Result<(), OpenClError> {
        let g = self.graph;
        let get = |i: usize| {
            node.input(i)
                .and_then(|n| g.initializers.get(n))
                .ok_or_else(|| OpenClError::Unsupported(format!("{}: input {i} is not constant", node.name)))
        };
        let w = crate::pack::i8_values(get(1)?);
        let bias = crate::pack::i32_values(get(2)?);
        let mg = m / group;
        let per_group = mg * cg * geo.kh * geo.kw;
        let x_slot = self.slot_of(&node.inputs[0]);
        let key = |what: &str| format!("{}#{what}", node.name);
        // A layer with one input channel block (a stem) and a kernel wider than 1 reads a
        // kernel-width fold of its input (`qfold`): a KH x 1 convolution over its words.
        let fold_words = crate::pack::stem_fold_words(group, cg, geo.kw, og.w);
        let folded = fold_words.is_some();
        let shifts = crate::pack::i32_values(get(4)?);
        // every shift at least 32: `qconvc` requantizes through the sums' high words
        let narrow = shifts.iter().all(|&s| s >= 32);
        let channel = self.channel_form(group);
        let tm = if channel { QCONVC_TM } else { QCONV_TM };
        // per-channel constants padded to whole channel-form work-items (vector loads)
        let padded = m.div_ceil(QCONVC_TM) * QCONVC_TM;
        if !consts.contains_key(&key("mult")) {
            let mut mults = crate::pack::i32_values(get(3)?);
            mults.resize(padded, 0);
            consts.insert(key("mult"), words_le(&mults, |v: i32| v.to_le_bytes().to_vec()));
            let mut shifts = shifts.clone();
            // padding channels (multiplier 0) requantize to the zero point at any shift; 32
            // keeps them on the narrow path of `qconvc`
            shifts.resize(padded, 32);
            consts.insert(key("shift"), words_le(&shifts, |v: i32| v.to_le_bytes().to_vec()));
            let mut rmults = vec![0i64; shifts.len()];
            let mut res_zp = 0i64;
            if let Some((_, rmult, zp)) = &residual {
                let t = g.initializers.get(rmult).ok_or_else(|| {
                    OpenClError::Unsupported(format!("{}: residual multiplier is not constant", node.name))
                })?;
                rmults = t.to_i64_vec();
                rmults.resize(padded, 0);
                res_zp = i64::from(*zp);
                consts.insert(key("rmult"), words_le(&rmults, |v: i64| v.to_le_bytes().to_vec()));
            }
            // zp_out * 2^shift + 2^(shift-1) - zp_r * rmult (see kernels/qconv.cl)
            let add: Vec<i64> = shifts
                .iter()
                .zip(rmults.iter().chain(std::iter::repeat(&0)))
                .map(|(&s, &rm)| (i64::from(out.zero_point) << s) + (1i64 << (s - 1)) - res_zp * rm)
                .collect();
            consts.insert(key("radd"), words_le(&add, |v: i64| v.to_le_bytes().to_vec()));
            for gi in 0..group {
                let wg = &w[gi * per_group..(gi + 1) * per_group];
                let bg = &bias[gi * mg..(gi + 1) * mg];
                let weights = crate::pack::ConvGroup {
                    w: wg,
                    bias: bg,
                    m: mg,
                    cg,
                    kh: geo.kh,
                    kw: geo.kw,
                    zp_x,
                };
                let p = if folded {
                    weights.pack_folded(tm)
                } else {
                    weights.pack(tm)
                };
                consts.insert(
                    key(&format!("w{gi}")),
                    words_le(&p.words, |v: i32| v.to_le_bytes().to_vec()),
                );
                // biases are indexed by absolute output channel: store the whole vector once per group
                let mut full = vec![0i32; padded];
                full[gi * mg..(gi + 1) * mg].copy_from_slice(&p.bias);
                consts.insert(
                    key(&format!("b{gi}")),
                    words_le(&full, |v: i32| v.to_le_bytes().to_vec()),
                );
            }
        }
        let (res_arg, rmult_arg, has_res) = match &residual {
            Some((r, _, _)) => (Arg::Slot(self.slot_of(r)), Arg::Const(key("rmult")), 1),
            None => (Arg::Dummy, Arg::Dummy, 0),
        };
        let pad_word = u32::from(zp_x as u8) * 0x0101_0101;
        // Stride-2 layers whose output width is half the input's (rounded up) read a phase
        // split of their input: four stride-1 planes, so the 16 pixels of a work-item are
        // consecutive words (a vector load) instead of a gather.
        let (h2, w2) = (xg.h.div_ceil(2), xg.w.div_ceil(2));
        let phased = !channel && !folded && geo.strides == [2, 2] && geo.dilations == [1, 1] && og.w == w2;
        // what the convolution reads: buffer, channel blocks, size, kernel width, horizontal
        // stride, dilation and padding, and the buffer's words
        let mut g = InGeo {
            slot: x_slot,
            cb: xg.cb(),
            h: xg.h,
            w: xg.w,
            kw: geo.kw,
            sx: geo.strides[1],
            dx: geo.dilations[1],
            pl: geo.pads[1],
        };
        let mut temp = None;
        if let Some(fold_words) = fold_words {
            let fs = self.alloc(xg.n * fold_words * xg.h * og.w * 4);
            self.launch(
                &node.name,
                KernelKind::QFold,
                vec![
                    Arg::Slot(x_slot),
                    Arg::Slot(fs),
                    int(xg.h),
                    int(xg.w),
                    int(og.w),
                    int(geo.kw),
                    int(cg),
                    int(geo.strides[1]),
                    int(geo.dilations[1]),
                    int(geo.pads[1]),
                    Arg::U32(pad_word),
                    int(self.slot_sizes[x_slot] / 4),
                ],
                [og.w.div_ceil(16), xg.h, xg.n],
                0,
                vec![xg.n, 4 * fold_words, xg.h, og.w],
            );
            g = InGeo {
                slot: fs,
                cb: fold_words,
                h: xg.h,
                w: og.w,
                kw: 1,
                sx: 1,
                dx: 1,
                pl: 0,
            };
            temp = Some(fs);
        }
        if phased {
            let mut phases = 0u32;
            for ky in 0..geo.kh {
                for kx in 0..geo.kw {
                    let py = (ky as i64 - geo.pads[0] as i64).rem_euclid(2);
                    let px = (kx as i64 - geo.pads[1] as i64).rem_euclid(2);
                    phases |= 1 << (py * 2 + px);
                }
            }
            let ps = self.alloc(xg.n * 4 * xg.cb() * h2 * w2 * 4);
            self.launch(
                &node.name,
                KernelKind::QPhase,
                vec![
                    Arg::Slot(x_slot),
                    Arg::Slot(ps),
                    int(xg.cb()),
                    int(xg.h),
                    int(xg.w),
                    int(h2),
                    int(w2),
                    Arg::U32(pad_word),
                    Arg::I32(phases as i32),
                ],
                [h2, 4 * xg.cb(), xg.n],
                0,
                vec![xg.n, 4 * xg.c, h2, w2],
            );
            g.slot = ps;
            g.h = h2;
            g.w = w2;
            temp = Some(ps);
        }
        let in_words = self.slot_sizes[g.slot] / 4;
        let cbg = fold_words.unwrap_or(cg.div_ceil(4));
        let macs = (og.n * mg * og.h * og.w * cg * geo.kh * geo.kw) as u64;
        // both forms: buffers of group `gi`, then the input's size (after the batch size in
        // the channel form), the window, the clamp and the residual flag, then per-form extras
        let window = [
            int(og.h),
            int(og.w),
            int(geo.kh),
            int(g.kw),
            int(geo.strides[0]),
            int(g.sx),
            int(geo.dilations[0]),
            int(g.dx),
            int(geo.pads[0]),
            int(g.pl),
            Arg::U32(pad_word),
            Arg::I32(out.clamp[0]),
            Arg::I32(out.clamp[1]),
            Arg::I32(has_res),
        ];
        let buffers = |gi: usize| {
            vec![
                Arg::Slot(g.slot),
                Arg::Const(key(&format!("w{gi}"))),
                Arg::Const(key(&format!("b{gi}"))),
                Arg::Const(key("mult")),
                Arg::Const(key("shift")),
                Arg::Const(key("radd")),
                res_arg.clone(),
                rmult_arg.clone(),
                Arg::Slot(slot),
            ]
        };
        let in_size = [int(g.cb), int(g.h), int(g.w)];
        if channel {
            // tiles of the batch's flattened pixels (a tile may span images)
            let tiles = (og.n * og.h * og.w).div_ceil(QCONVC_PIXELS);
            let (global, local) = self.channel_sizes(tiles, m.div_ceil(QCONVC_TM));
            let mut args = buffers(0);
            args.push(int(og.n));
            args.extend(in_size);
            args.push(int(m));
            args.extend(window);
            args.push(Arg::I32(i32::from(narrow)));
            self.steps.push(Step::Launch {
                node: node.name.clone(),
                kernel: KernelKind::QConvC,
                args,
                global,
                local: Some(local),
                macs,
                shape: vec![og.n, og.c, og.h, og.w],
                side: false,
            });
        } else {
            let (global, local) = self.conv_sizes((og.h * og.w).div_ceil(16), og.n * mg.div_ceil(QCONV_TM));
            for gi in 0..group {
                let mut args = buffers(gi);
                args.extend(in_size.clone());
                args.extend([int(gi * cg / 4), int(cbg), int(mg), int(gi * mg), int(m)]);
                args.extend(window.clone());
                args.extend([int(in_words), Arg::I32(i32::from(phased))]);
                self.steps.push(Step::Launch {
                    node: node.name.clone(),
                    kernel: KernelKind::QConv,
                    args,
                    global,
                    local: Some(local),
                    macs,
                    shape: vec![og.n, og.c, og.h, og.w],
                    side: false,
                });
            }
        }
        if let Some(t) = temp {
            self.free.push(t);
        }
        Ok(())
    }

    fn pool(
        &mut self,
        node: &weft_core::Node,
        pool: &Pool,
        avg_zp: Option<i32>,
        _consts: &mut Consts,
    ) -> Result<(), OpenClError> {
        let x = node.inputs[0].clone();
        let xg = self.u8_on_device(&x, avg_zp.unwrap_or(0) as u8)?;
        let [wy, wx] = weft_core::shape::pool_windows(pool, xg.h, xg.w).map_err(OpenClError::Unsupported)?;
        let og = Geom {
            n: xg.n,
            c: xg.c,
            h: wy.out,
            w: wx.out,
        };
        let slot = self.alloc(og.bytes());
        let out = node.outputs[0].clone();
        if avg_zp.is_none() {
            let x_slot = self.slot_of(&x);
            let mut args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xg.cb()), int(xg.h), int(xg.w)];
            args.extend(pool_window_args(pool, &wy, &wx, false));
            args.push(int(self.slot_sizes[x_slot] / 4));
            self.bind(&out, Loc::U8 { slot, geom: og });
            self.launch(
                &node.name,
                KernelKind::QMaxPool,
                args,
                [1, og.h, og.n * og.cb()],
                0,
                vec![og.n, og.c, og.h, og.w],
            );
            return Ok(());
        }
        let mut args = vec![
            Arg::Slot(self.slot_of(&x)),
            Arg::Slot(slot),
            int(xg.cb()),
            int(xg.h),
            int(xg.w),
        ];
        args.extend(pool_window_args(pool, &wy, &wx, avg_zp.is_some()));
        args.push(Arg::I32(avg_zp.unwrap_or(0)));
        self.bind(&out, Loc::U8 { slot, geom: og });
        self.launch(
            &node.name,
            KernelKind::QPool,
            args,
            [og.w, og.h, og.n * og.cb()],
            0,
            vec![og.n, og.c, og.h, og.w],
        );
        Ok(())
    }
}

/// The input a `qconv` launch reads, after any fold or phase split.
struct InGeo {
    slot: usize,
    cb: usize,
    h: usize,
    w: usize,
    kw: usize,
    sx: usize,
    dx: usize,
    pl: usize,
}

/// Float packages: which nodes run as float kernels.
impl Planner<'_> {
    fn float_loc(&self, slot: usize) -> Loc {
        if self.half {
            Loc::F16 { slot }
        } else {
            Loc::F32 { slot }
        }
    }

    fn float_bytes(&self, shape: &[usize]) -> usize {
        shape.iter().product::<usize>() * if self.half { 2 } else { 4 }
    }

    /// The slot of a float value on the device, uploading it from the host when needed;
    /// `None` for constants and non-float values (the node then runs on the host).
    fn float_on_device(&mut self, value: &str) -> Option<usize> {
        match self.loc.get(value) {
            Some(Loc::F32 { slot } | Loc::F16 { slot }) => return Some(*slot),
            Some(Loc::U8 { .. }) => return None,
            _ => {}
        }
        if self.graph.initializers.contains_key(value) {
            return None;
        }
        let (dtype, shape) = self.shapes.values.get(value).cloned()?;
        if dtype != weft_core::DType::F32 || shape.is_empty() {
            return None;
        }
        let slot = self.alloc(self.float_bytes(&shape));
        self.steps.push(Step::UploadFloat {
            value: value.to_string(),
            slot,
            half: self.half,
        });
        let loc = self.float_loc(slot);
        self.bind(value, loc);
        Some(slot)
    }

    fn is_float_value(&self, value: &str) -> bool {
        matches!(self.loc.get(value), Some(Loc::F32 { .. } | Loc::F16 { .. }))
            || (!self.graph.initializers.contains_key(value)
                && self
                    .shapes
                    .values
                    .get(value)
                    .is_some_and(|(d, s)| *d == weft_core::DType::F32 && !s.is_empty()))
    }

    fn const_f32(&self, name: Option<&str>) -> Option<Vec<f32>> {
        let t = self.graph.initializers.get(name?)?;
        matches!(t.dtype(), weft_core::DType::F32 | weft_core::DType::F16).then(|| t.to_f32().iter().copied().collect())
    }

    /// A scalar bound of a Clip: its constant input `i`, or `default` when absent.
    fn clip_bound(&self, node: &weft_core::Node, i: usize, default: f32) -> Option<f32> {
        match node.input(i) {
            None | Some("") => Some(default),
            Some(name) => {
                let v = self.const_f32(Some(name))?;
                (v.len() == 1).then(|| v[0])
            }
        }
    }

    /// Plans `node` as float kernels; `false` when it must run on the host.
    fn float_node(&mut self, node: &weft_core::Node, consts: &mut Consts) -> Result<bool, OpenClError> {
        let h = self.half;
        let x = node.input(0).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        let xs = self.shape(&x);
        if !self.is_float_value(&x) || out_shape.is_empty() {
            return Ok(false);
        }
        let key = |what: &str| format!("{}#{what}", node.name);
        match &node.op {
            Op::Conv(conv) if xs.len() == 4 => {
                let Some(wt) = node.input(1).and_then(|n| self.graph.initializers.get(n)) else {
                    return Ok(false);
                };
                let ws = wt.shape().to_vec();
                let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
                let g = conv.group.max(1);
                let bias = match node.input(2) {
                    None | Some("") => Some(vec![0f32; m]),
                    b => self.const_f32(b),
                };
                let Some(bias) = bias.filter(|b| b.len() == m) else {
                    return Ok(false);
                };
                let (lo, hi) = match conv.activation {
                    None => (f32::NEG_INFINITY, f32::INFINITY),
                    Some(weft_core::op::Activation::Relu) => (0.0, f32::INFINITY),
                    Some(weft_core::op::Activation::Clip { min, max }) => (min, max),
                };
                let wy = window(xs[2], kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0)
                    .map_err(OpenClError::Unsupported)?;
                let wx = window(xs[3], kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1)
                    .map_err(OpenClError::Unsupported)?;
                let geo = ConvGeo {
                    kh,
                    kw,
                    strides: conv.strides,
                    dilations: conv.dilations,
                    pads: [wy.pad_begin, wx.pad_begin],
                };
                if !consts.contains_key(&key("w0")) {
                    let w: Vec<f32> = wt.to_f32().iter().copied().collect();
                    let mg = m / g;
                    let per = mg * cg * kh * kw;
                    for gi in 0..g {
                        let p = crate::pack::pack_fconv(&w[gi * per..(gi + 1) * per], mg, cg, kh, kw);
                        consts.insert(key(&format!("w{gi}")), f32_bytes(&p));
                    }
                    consts.insert(key("b"), f32_bytes(&bias));
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                self.fconv_launches(
                    &node.name,
                    x_slot,
                    slot,
                    [xs[0], xs[1], xs[2], xs[3]],
                    [m, g, cg],
                    [wy.out, wx.out],
                    geo,
                    [lo, hi],
                );
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
            }
            Op::Gemm(_) | Op::MatMul if xs.len() == 2 => {
                let Some(wt) = node.input(1).and_then(|n| self.graph.initializers.get(n)) else {
                    return Ok(false);
                };
                if wt.shape().len() != 2 {
                    return Ok(false);
                }
                let (alpha, beta, trans_a, trans_b) = match &node.op {
                    Op::Gemm(g) => (g.alpha, g.beta, g.trans_a, g.trans_b),
                    _ => (1.0, 1.0, false, false),
                };
                let k = xs[1];
                let (wk, m) = if trans_b {
                    (wt.shape()[1], wt.shape()[0])
                } else {
                    (wt.shape()[0], wt.shape()[1])
                };
                if trans_a || wk != k || out_shape != [xs[0], m] {
                    return Ok(false);
                }
                let bias = match (&node.op, node.input(2)) {
                    (Op::Gemm(_), Some(b)) if !b.is_empty() => {
                        self.const_f32(Some(b)).filter(|v| v.len() == m || v.len() == 1)
                    }
                    _ => Some(vec![0.0]),
                };
                let Some(bias) = bias else { return Ok(false) };
                if !consts.contains_key(&key("w0")) {
                    let w = wt.to_f32();
                    // [M, K] row-major, scaled by alpha
                    let mut mk = vec![0f32; m * k];
                    for mo in 0..m {
                        for ki in 0..k {
                            let v = if trans_b { w[[mo, ki]] } else { w[[ki, mo]] };
                            mk[mo * k + ki] = if alpha == 1.0 { v } else { alpha * v };
                        }
                    }
                    consts.insert(key("w0"), f32_bytes(&crate::pack::pack_fconv(&mk, m, k, 1, 1)));
                    let b: Vec<f32> = (0..m)
                        .map(|i| {
                            let v = if bias.len() == 1 { bias[0] } else { bias[i] };
                            if beta == 1.0 { v } else { beta * v }
                        })
                        .collect();
                    consts.insert(key("b"), f32_bytes(&b));
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let geo = ConvGeo {
                    kh: 1,
                    kw: 1,
                    strides: [1, 1],
                    dilations: [1, 1],
                    pads: [0, 0],
                };
                let inf = f32::INFINITY;
                self.fconv_launches(
                    &node.name,
                    x_slot,
                    slot,
                    [xs[0], k, 1, 1],
                    [m, 1, k],
                    [1, 1],
                    geo,
                    [-inf, inf],
                );
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
            }
            Op::Add => {
                let b = node.input(1).unwrap_or_default().to_string();
                if !self.is_float_value(&b) || self.shape(&b) != xs || out_shape != xs {
                    return Ok(false);
                }
                let (Some(a_slot), Some(b_slot)) = (self.float_on_device(&x), self.float_on_device(&b)) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let n = out_shape.iter().product();
                let args = vec![
                    Arg::Slot(a_slot),
                    Arg::Slot(b_slot),
                    Arg::Slot(slot),
                    Arg::F32(f32::NEG_INFINITY),
                    Arg::F32(f32::INFINITY),
                ];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(&node.name, KernelKind::FAdd(h), args, [n, 1, 1], 0, out_shape);
            }
            Op::Relu | Op::Clip => {
                let bounds = match node.op {
                    Op::Relu => Some((0.0, f32::INFINITY)),
                    _ => self
                        .clip_bound(node, 1, f32::NEG_INFINITY)
                        .zip(self.clip_bound(node, 2, f32::INFINITY)),
                };
                let Some((lo, hi)) = bounds else { return Ok(false) };
                if matches!(node.op, Op::Relu) && self.fuse_relu(&x, &out, &node.name) {
                    return Ok(true);
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let n = out_shape.iter().product();
                let args = vec![Arg::Slot(x_slot), Arg::Slot(slot), Arg::F32(lo), Arg::F32(hi)];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(&node.name, KernelKind::FClamp(h), args, [n, 1, 1], 0, out_shape);
            }
            Op::MaxPool(pool) | Op::AveragePool(pool) if xs.len() == 4 && node.outputs.len() == 1 => {
                let [wy, wx] = weft_core::shape::pool_windows(pool, xs[2], xs[3]).map_err(OpenClError::Unsupported)?;
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let mut args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xs[2]), int(xs[3])];
                args.extend(pool_window_args(pool, &wy, &wx, matches!(node.op, Op::AveragePool(_))));
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(
                    &node.name,
                    KernelKind::FPool(h),
                    args,
                    [wx.out, wy.out, xs[0] * xs[1]],
                    0,
                    out_shape,
                );
            }
            Op::GlobalAveragePool | Op::ReduceMean { .. } if xs.len() == 4 => {
                if let Op::ReduceMean { .. } = node.op {
                    let axes: Option<Vec<usize>> = match node.input(1) {
                        None | Some("") => Some(vec![]),
                        Some(a) => self.graph.initializers.get(a).map(|t| {
                            t.to_i64_vec()
                                .iter()
                                .filter_map(|&a| weft_core::shape::normalize_axis(a, 4))
                                .collect()
                        }),
                    };
                    let mut axes = axes.unwrap_or_default();
                    axes.sort_unstable();
                    if axes != [2, 3] {
                        return Ok(false);
                    }
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xs[2] * xs[3])];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(
                    &node.name,
                    KernelKind::FMean(h),
                    args,
                    [xs[0] * xs[1], 1, 1],
                    0,
                    out_shape,
                );
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
                // row-major storage: every reshape is a view
                let Some(loc @ (Loc::F32 { .. } | Loc::F16 { .. })) = self.loc.get(&x).cloned() else {
                    return Ok(false);
                };
                if out_shape.iter().product::<usize>() != xs.iter().product::<usize>() {
                    return Ok(false);
                }
                self.bind(&out, loc);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Folds a ReLU into the elementwise add just launched that produced `x`, when `x` has
    /// no other reader. (Exact in f16 too: rounding commutes with ReLU.)
    fn fuse_relu(&mut self, x: &str, out: &str, relu: &str) -> bool {
        if self.uses.get(x) != Some(&1) || self.outputs.contains(x) {
            return false;
        }
        let Some(loc) = self.loc.get(x).cloned() else {
            return false;
        };
        let x_slot = self.slot_of(x);
        let Some(Step::Launch { node, kernel, args, .. }) = self.steps.last_mut() else {
            return false;
        };
        if !matches!(kernel, KernelKind::FAdd(_)) || args.get(2) != Some(&Arg::Slot(x_slot)) {
            return false;
        }
        args[3] = Arg::F32(0.0);
        node.push('+');
        node.push_str(relu);
        self.bind(out, loc);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn fconv_launches(
        &mut self,
        node: &str,
        x_slot: usize,
        slot: usize,
        [n, c, ih, iw]: [usize; 4],
        [m, group, cg]: [usize; 3],
        [oh, ow]: [usize; 2],
        geo: ConvGeo,
        [lo, hi]: [f32; 2],
    ) {
        let mg = m / group;
        let tp = 8;
        for gi in 0..group {
            let args = vec![
                Arg::Slot(x_slot),
                Arg::Const(format!("{node}#w{gi}")),
                Arg::Const(format!("{node}#b")),
                Arg::Slot(slot),
                int(c),
                int(ih),
                int(iw),
                int(gi * cg),
                int(cg),
                int(mg),
                int(gi * mg),
                int(m),
                int(oh),
                int(ow),
                int(geo.kh),
                int(geo.kw),
                int(geo.strides[0]),
                int(geo.strides[1]),
                int(geo.dilations[0]),
                int(geo.dilations[1]),
                int(geo.pads[0]),
                int(geo.pads[1]),
                Arg::F32(lo),
                Arg::F32(hi),
            ];
            let macs = (n * mg * oh * ow * cg * geo.kh * geo.kw) as u64;
            self.launch(
                node,
                KernelKind::FConv(self.half),
                args,
                [ow.div_ceil(tp), oh, n * mg.div_ceil(16)],
                macs,
                vec![n, m, oh, ow],
            );
        }
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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[derive(Clone, Copy)]
struct ConvGeo {
    kh: usize,
    kw: usize,
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 2],
}

/// Arguments of the `quantize` and `dequantize` kernels.
fn edge_args(in_slot: usize, out_slot: usize, geom: Geom, scale: f32, zero_point: i32) -> Vec<Arg> {
    vec![
        Arg::Slot(in_slot),
        Arg::Slot(out_slot),
        int(geom.c),
        int(geom.cb()),
        int(geom.h),
        int(geom.w),
        Arg::F32(scale),
        Arg::I32(zero_point),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The zoo's resnet8, int8 (MinMax over a few seeded inputs).
    fn resnet8_int8() -> Graph {
        let g = weft_zoo::build("resnet8", &weft_zoo::ZooOptions::default()).unwrap();
        let mut rng = weft_core::rng::Rng::new(5);
        let x = weft_core::Tensor::from_f32(&[2, 3, 32, 32], rng.normals(2 * 3 * 32 * 32, 1.0)).unwrap();
        let opts = weft_compile::CompileOptions {
            name: "r8".into(),
            precision: weft_compile::Precision::Int8,
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

    /// Downloads move ahead of the host nodes of their own host-only run, in order, and never
    /// past a step that touches the device.
    #[test]
    fn downloads_move_ahead_of_host_nodes_within_their_run() {
        let dl = |v: &str| Step::Download {
            value: v.into(),
            loc: Loc::Host,
            shape: vec![],
        };
        let name = |s: &Step| match s {
            Step::Download { value, .. } => format!("d:{value}"),
            Step::Host { node } => format!("h:{node}"),
            Step::Fork => "fork".into(),
            _ => "other".into(),
        };
        let steps = vec![
            dl("a"),
            Step::Host { node: 0 },
            dl("b"),
            Step::Fork,
            Step::Host { node: 1 },
            dl("c"),
            Step::Host { node: 2 },
            dl("d"),
        ];
        let got: Vec<String> = downloads_first(steps).iter().map(name).collect();
        assert_eq!(got, ["d:a", "d:b", "h:0", "fork", "d:c", "d:d", "h:1", "h:2"]);
    }

    /// A convolution launch's output buffer (the last of `QCONV_BUFFERS`).
    fn conv_output(kernel: KernelKind, args: &[Arg]) -> Option<usize> {
        match (kernel, args.get(8)) {
            (KernelKind::QConv | KernelKind::QConvC, Some(Arg::Slot(s))) => Some(*s),
            _ => None,
        }
    }

    /// The same graph with one more convolution before each residual one (a copy of it
    /// without the residual, feeding it): ResNet's bottleneck order, where a block's input is
    /// dead (in graph order) after its downsampling convolution, before the block's next
    /// main convolution allocates its output.
    fn with_middle_convolutions(mut g: Graph) -> Graph {
        let mut i = 0;
        while i < g.nodes.len() {
            if let Op::QConv(q) = &g.nodes[i].op
                && q.residual_zero_point.is_some()
            {
                let c = &g.nodes[i];
                let mid = format!("{}.mid", c.inputs[0]);
                let mut q = q.clone();
                q.residual_zero_point = None;
                let m = weft_core::Node {
                    name: format!("{}.mid", c.name),
                    op: Op::QConv(q),
                    inputs: c.inputs[..5].to_vec(),
                    outputs: vec![mid.clone()],
                };
                g.nodes[i].inputs[0] = mid;
                g.nodes.insert(i, m);
                i += 1;
            }
            i += 1;
        }
        g
    }

    /// What a fork .. join region's launches use: the side's slots and outputs, the main
    /// launches' outputs and slots.
    #[derive(Default)]
    struct Region {
        side_slots: Vec<usize>,
        side_out: Vec<usize>,
        main_out: Vec<usize>,
        main_slots: Vec<Vec<usize>>,
    }

    #[test]
    fn downsampling_branches_run_on_the_side_queue_without_sharing_a_written_slot() {
        let r8 = resnet8_int8();
        let bottleneck = with_middle_convolutions(r8.clone());
        assert!(bottleneck.nodes.len() > r8.nodes.len());
        for (g, batch) in [(&r8, 1), (&r8, 3), (&bottleneck, 1), (&bottleneck, 2)] {
            let target = Target {
                compute_units: 2,
                max_work_group: 4096,
                lane_conv: false,
            };
            let plan = plan(g, batch, &mut Consts::new(), None, target).unwrap();
            let forks = plan.steps.iter().filter(|s| matches!(s, Step::Fork)).count();
            let joins = plan.steps.iter().filter(|s| matches!(s, Step::Join)).count();
            assert!(forks >= 1, "resnet8's downsampling convolutions should fork");
            assert_eq!(forks, joins);
            // Between a fork and its join: the side launches' slots and the main launches'
            // outputs are disjoint, and no main launch reads what the side writes.
            let mut region: Option<Region> = None;
            for step in &plan.steps {
                match step {
                    Step::Fork => {
                        assert!(region.is_none(), "nested fork");
                        region = Some(Default::default());
                    }
                    Step::Join => {
                        let Region {
                            side_slots,
                            side_out,
                            main_out,
                            main_slots,
                        } = region.take().expect("join without fork");
                        assert!(!side_slots.is_empty(), "a fork with no side launch");
                        for o in &main_out {
                            assert!(!side_slots.contains(o), "a main launch writes slot {o} the side uses");
                        }
                        for used in &main_slots {
                            for o in &side_out {
                                assert!(!used.contains(o), "a main launch reads slot {o} the side writes");
                            }
                        }
                    }
                    Step::Launch { kernel, args, side, .. } => {
                        let slots: Vec<usize> = args.iter().filter_map(Arg::slot).collect();
                        match (&mut region, side) {
                            (Some(r), true) => {
                                r.side_slots.extend(&slots);
                                r.side_out.extend(conv_output(*kernel, args));
                            }
                            (Some(r), false) => {
                                r.main_out.extend(conv_output(*kernel, args));
                                r.main_slots.push(slots);
                            }
                            (None, s) => assert!(!s, "a side launch outside a fork"),
                        }
                    }
                    _ => {}
                }
            }
            assert!(region.is_none(), "a fork without its join");
        }
    }
}
