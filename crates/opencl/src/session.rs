//! A package bound to a device: program, packed constants, per-batch plans, runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::ptr;
use std::time::{Duration, Instant};

use opencl3::command_queue::{CL_QUEUE_PROFILING_ENABLE, CommandQueue};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::ClMem;
use opencl3::memory::{Buffer, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{CL_BLOCKING, CL_NON_BLOCKING};
use weft_core::{DType, Graph, Tensor};
use weft_package::{Package, Precision};

use crate::device::{DeviceInfo, select_device};
use crate::error::OpenClError;
use crate::pack::{from_nc4hw4, quantize_nc4hw4, to_nc4hw4};
use crate::plan::{Arg, Consts, FPGA_WG, KernelKind, KernelSet, Loc, Plan, Step, plan};
use crate::program::{ProgramOptions, ProgramSource, binary_of, build, kernel_source};

/// How to open a session.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// `pocl` or `opencl:<platform substring>[:<index>]`.
    pub device: String,
    /// Force the portable OpenCL C definition of every target hook.
    pub portable: bool,
    /// Load this prebuilt program binary (an FPGA image) instead of building from source.
    pub program_binary: Option<PathBuf>,
    /// Record per-kernel timings (OpenCL event profiling).
    pub profile: bool,
    /// Testing aid: give every activation buffer this many guard bytes past its end, filled
    /// with a pattern that each run checks, so a kernel writing out of bounds is an error.
    pub guard_bytes: usize,
    /// Testing aid: fill every activation buffer (slack included) with this byte before
    /// each run, so a kernel whose result depends on memory the run never wrote (padding,
    /// slack, a previous run's values) no longer matches the reference. Without it the
    /// buffers are zero-filled once when a batch size is planned: no kernel ever reads
    /// memory that was never written, on any device.
    pub poison: Option<u8>,
    /// Run every convolution in the lane form (`qconv`: 16 pixels per vector) instead of
    /// the channel form (`qconvc`: 16 channels per vector) that ungrouped ones use by
    /// default; also set by `WEFT_LANE_CONV=1`. For comparisons and tests.
    pub lane_conv: bool,
    /// Which kernels to run: the generic ones, or the FPGA variant (one kernel per layer,
    /// int8 packages only), as `--kernels fpga` asks.
    pub kernels: KernelSet,
}

const GUARD_BYTE: u8 = 0xA5;

/// Timing of one layer in a profiled run: a kernel, or a node the plan runs on the host
/// (`kernel` is then [`HOST`] and `micros` the host's time for it).
#[derive(Clone, Debug)]
pub struct LayerProfile {
    pub node: String,
    pub kernel: &'static str,
    pub shape: Vec<usize>,
    pub macs: u64,
    pub micros: f64,
    /// Device idle time before this kernel started: since the previous kernel's end, or
    /// for the run's first kernel since it was enqueued (launch cost, host work between).
    pub wait_micros: f64,
}

/// The `kernel` of a profiled node that ran on the host (by the reference executor), with
/// its op: `host:Pad`.
pub const HOST: &str = "host";

struct Prepared {
    plan: Plan,
    slots: Vec<Buffer<u8>>,
    /// One kernel object per launch step (by step index), its arguments set once here: a
    /// run only enqueues them.
    launches: Vec<Option<Kernel>>,
}

/// A package on an OpenCL device. Runs take `&mut self`: one run at a time.
pub struct Session {
    max_group: usize,
    device: DeviceInfo,
    context: Context,
    queue: CommandQueue,
    /// A second in-order queue for the plan's side launches (`Step::Fork` .. `Step::Join`).
    side_queue: CommandQueue,
    program: Program,
    options: ProgramOptions,
    source: ProgramSource,
    build_time: Duration,
    graph: Graph,
    consts: HashMap<String, Buffer<u8>>,
    pending_consts: Consts,
    dummy: Buffer<u8>,
    plans: HashMap<usize, Prepared>,
    profile: bool,
    last_profile: Vec<LayerProfile>,
    /// Host time the last run spent putting its inputs on the device (host quantization and
    /// the blocking writes).
    last_upload: Duration,
    guard_bytes: usize,
    poison: Option<u8>,
    lane_conv: bool,
    kernels: KernelSet,
    precision: Precision,
    /// Graph inputs no node (and no output) reads, such as CastLike's `like`: checked for
    /// type and shape only, so they may be empty.
    unread_inputs: std::collections::HashSet<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device.name)
            .field("hook", &self.options.hook)
            .field("source", &self.source)
            .finish()
    }
}

// SAFETY: every OpenCL object here is a reference-counted handle that the OpenCL
// specification allows to be used from any thread; `Session` methods that set kernel
// arguments take `&mut self`, so no two threads set arguments at once.
unsafe impl Send for Session {}

/// The bytes of a float value as an upload writes them: f32 or IEEE half, little-endian.
/// A contiguous f32 tensor on a little-endian host is its own bytes (no copy).
fn float_bytes(t: &Tensor, half: bool) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    if let (false, Tensor::F32(a)) = (half, t)
        && let Some(v) = a.as_slice()
    {
        return std::borrow::Cow::Borrowed(bytemuck::cast_slice(v));
    }
    std::borrow::Cow::Owned(t.cast(if half { DType::F16 } else { DType::F32 }).to_le_bytes())
}

/// The bytes an upload step writes for the host tensor `t` (the value `value`): floats as
/// f32 or f16, a float input quantized into NC4HW4, or u8 laid out NC4HW4.
fn upload_bytes<'a>(step: &Step, value: &str, t: &'a Tensor) -> Result<std::borrow::Cow<'a, [u8]>, OpenClError> {
    use std::borrow::Cow;
    Ok(match step {
        Step::UploadFloat { half, .. } => float_bytes(t, *half),
        Step::UploadQuantized {
            geom,
            scale,
            zero_point,
            ..
        } => {
            let floats = match t {
                Tensor::F32(a) => a.as_slice().map(Cow::Borrowed),
                _ => None,
            }
            .unwrap_or_else(|| Cow::Owned(t.to_f32().iter().copied().collect()));
            let bytes = quantize_nc4hw4(&floats, geom.n, geom.c, geom.h * geom.w, *scale, *zero_point);
            Cow::Owned(bytes.ok_or_else(|| OpenClError::Input {
                name: value.to_string(),
                message: format!("{} values where the plan has {geom:?}", floats.len()),
            })?)
        }
        Step::UploadU8 { geom, fill, .. } => Cow::Owned(to_nc4hw4(
            &t.cast(DType::U8).to_le_bytes(),
            geom.n,
            geom.c,
            geom.h,
            geom.w,
            *fill,
        )),
        _ => return Err(OpenClError::Unsupported(format!("'{value}': not an upload step"))),
    })
}

/// Fills the first `bytes` bytes of `buffer` with `byte` and waits.
fn fill(queue: &CommandQueue, buffer: &mut Buffer<u8>, byte: u8, bytes: usize) -> Result<(), OpenClError> {
    // SAFETY: a fill of a range inside the buffer (every slot has at least `bytes` bytes)
    // with a one-byte pattern that lives across the call; waited for before returning.
    let event = unsafe { queue.enqueue_fill_buffer(buffer, &[byte], 0, bytes, &[]) }
        .map_err(|e| OpenClError::api("clEnqueueFillBuffer", e))?;
    event.wait().map_err(|e| OpenClError::api("clWaitForEvents", e))
}

fn create_kernel(program: &Program, name: &str) -> Result<Kernel, OpenClError> {
    Kernel::create(program, name).map_err(|e| OpenClError::api(format!("clCreateKernel({name})"), e))
}

fn buffer(context: &Context, flags: u64, bytes: usize) -> Result<Buffer<u8>, OpenClError> {
    // SAFETY: a plain device allocation with no host pointer.
    unsafe { Buffer::<u8>::create(context, flags, bytes.max(16), ptr::null_mut()) }
        .map_err(|e| OpenClError::api(format!("clCreateBuffer({bytes} bytes)"), e))
}

impl Session {
    /// Opens a session for a package on the device named by `opts.device`.
    pub fn new(package: &Package, opts: &SessionOptions) -> Result<Session, OpenClError> {
        let device = select_device(&opts.device)?;
        let d = Device::new(device.id);
        let context = Context::from_device(&d).map_err(|e| OpenClError::api("clCreateContext", e))?;
        let queue = CommandQueue::create_default_with_properties(
            &context,
            if opts.profile { CL_QUEUE_PROFILING_ENABLE } else { 0 },
            0,
        )
        .map_err(|e| OpenClError::api("clCreateCommandQueue", e))?;
        // (profiled runs keep every launch on the main queue: no profiling here)
        let side_queue = CommandQueue::create_default_with_properties(&context, 0, 0)
            .map_err(|e| OpenClError::api("clCreateCommandQueue", e))?;
        let fpga = opts.kernels == KernelSet::Fpga;
        // the FPGA variant's program is the package's own: one kernel per layer
        // constants the FPGA variant's program planning packs; batch 1's plan reuses them
        let mut packed = Consts::new();
        let text = if fpga {
            if device.max_work_group < FPGA_WG {
                return Err(OpenClError::Unsupported(format!(
                    "the FPGA kernel variant needs work-groups of {FPGA_WG}; {} allows {}",
                    device.name, device.max_work_group
                )));
            }
            crate::fpga::fpga_program_packing(package, &mut packed)?.source
        } else {
            kernel_source()
        };
        let options = ProgramOptions::for_device(
            &device,
            fpga || opts.portable || std::env::var_os("WEFT_PORTABLE_KERNELS").is_some_and(|v| v != "0"),
        );
        let start = Instant::now();
        let (program, source) = build(&context, &device, &options, opts.program_binary.as_deref(), &text)?;
        let build_time = start.elapsed();
        // every kernel the package needs must be in the program (a prebuilt binary may lack
        // some; the FPGA variant's are checked as each batch size is planned); the largest
        // work-group a convolution launch may use on this device
        let mut max_group = device.max_work_group.max(1);
        if !fpga {
            for k in KernelKind::for_precision(package.precision) {
                let kernel = create_kernel(&program, k.name())?;
                if matches!(k, KernelKind::QConv | KernelKind::QConvC) {
                    max_group = max_group.min(kernel.get_work_group_size(device.id).unwrap_or(max_group).max(1));
                }
            }
        }
        let dummy = buffer(&context, CL_MEM_READ_WRITE, 16)?;
        let mut s = Session {
            max_group,
            device,
            context,
            queue,
            side_queue,
            program,
            options,
            source,
            build_time,
            unread_inputs: package
                .graph
                .inputs
                .iter()
                .filter(|i| {
                    !package.graph.nodes.iter().any(|n| n.inputs.contains(&i.name))
                        && !package.graph.outputs.iter().any(|o| o.name == i.name)
                })
                .map(|i| i.name.clone())
                .collect(),
            graph: package.graph.clone(),
            consts: HashMap::new(),
            pending_consts: packed,
            dummy,
            plans: HashMap::new(),
            profile: opts.profile,
            last_profile: Vec::new(),
            last_upload: Duration::ZERO,
            guard_bytes: opts.guard_bytes,
            poison: opts.poison,
            lane_conv: opts.lane_conv || std::env::var_os("WEFT_LANE_CONV").is_some_and(|v| v != "0"),
            kernels: opts.kernels,
            precision: package.precision,
        };
        // Plan batch 1 now so weights are packed and uploaded before the first request.
        s.prepare(1)?;
        Ok(s)
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    pub fn hook(&self) -> crate::DotHook {
        self.options.hook
    }

    pub fn program_source(&self) -> &ProgramSource {
        &self.source
    }

    /// Time spent building or loading the program.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// The program binary for this device (to ship as a prebuilt image).
    pub fn program_binary(&self) -> Result<Vec<u8>, OpenClError> {
        binary_of(&self.program)
    }

    /// Per-layer timings of the last run (with `profile` on).
    /// Host time the last `run` spent uploading its inputs (quantizing them on the host and
    /// the blocking writes); the rest of the run is the network and its output reads.
    pub fn last_upload_time(&self) -> Duration {
        self.last_upload
    }

    pub fn last_profile(&self) -> &[LayerProfile] {
        &self.last_profile
    }

    /// Plans (and allocates buffers for) a batch size ahead of use.
    pub fn prepare(&mut self, batch: usize) -> Result<(), OpenClError> {
        if self.plans.contains_key(&batch) {
            return Ok(());
        }
        let target = crate::plan::Target {
            compute_units: self.device.compute_units.max(1) as usize,
            max_work_group: self.max_group,
            lane_conv: self.lane_conv,
            kernels: self.kernels,
        };
        // constants are shared across batch sizes: the planner packs only those not uploaded
        // yet (it skips names already present), and uploaded buffers are never replaced (the
        // prepared plans' kernel objects refer to them)
        for name in self.consts.keys() {
            self.pending_consts.entry(name.clone()).or_default();
        }
        let plan = plan(&self.graph, batch, &mut self.pending_consts, self.precision, target)?;
        for (name, bytes) in std::mem::take(&mut self.pending_consts) {
            if self.consts.contains_key(&name) {
                continue;
            }
            let mut b = buffer(&self.context, CL_MEM_READ_ONLY, bytes.len())?;
            // SAFETY: blocking write of a host slice that outlives the call.
            unsafe { self.queue.enqueue_write_buffer(&mut b, CL_BLOCKING, 0, &bytes, &[]) }
                .map_err(|e| OpenClError::api("clEnqueueWriteBuffer", e))?;
            self.consts.insert(name, b);
        }
        let mut slots = plan
            .slot_sizes
            .iter()
            .map(|&n| buffer(&self.context, CL_MEM_READ_WRITE, n.max(16) + self.guard_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        // every byte of every slot written once before any kernel can read it: slack past a
        // tensor (read by whole-vector loads and discarded) is then defined memory too
        for (slot, &n) in slots.iter_mut().zip(&plan.slot_sizes) {
            fill(&self.queue, slot, 0, n.max(16))?;
        }
        if self.guard_bytes > 0 {
            let pattern = vec![GUARD_BYTE; self.guard_bytes];
            for (slot, &n) in slots.iter_mut().zip(&plan.slot_sizes) {
                // SAFETY: blocking write of a host slice into the buffer's guard region.
                unsafe {
                    self.queue
                        .enqueue_write_buffer(slot, CL_BLOCKING, n.max(16), &pattern, &[])
                }
                .map_err(|e| OpenClError::api("clEnqueueWriteBuffer", e))?;
            }
        }
        let launches = plan
            .steps
            .iter()
            .map(|step| match step {
                Step::Launch {
                    kernel, args, layer, ..
                } => {
                    let name = layer.as_ref().map_or(kernel.name(), |l| l.name.as_str());
                    self.bound_kernel(name, args, &slots).map(Some).map_err(|e| match (&self.source, layer) {
                        (ProgramSource::Binary(path), Some(_)) => OpenClError::Binary {
                            path: path.display().to_string(),
                            message: format!(
                                "it has no kernel '{name}' of this package's FPGA variant ({e}); build one for it with \
                                 `weft program build --kernels fpga --package MODEL.weft` or `weft program fpga`"
                            ),
                        },
                        _ => e,
                    })
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.plans.insert(batch, Prepared { plan, slots, launches });
        Ok(())
    }

    /// A new kernel object for one launch with every argument set.
    fn bound_kernel(&self, name: &str, args: &[Arg], slots: &[Buffer<u8>]) -> Result<Kernel, OpenClError> {
        let k = create_kernel(&self.program, name)?;
        for (i, a) in args.iter().enumerate() {
            let i = i as u32;
            // SAFETY: argument types match the kernel signatures in kernels/*.cl (buffer
            // handles for pointers, i32/u32/f32 for scalars); the buffers outlive the kernel
            // object (both live in the session, the slots in the same `Prepared`).
            unsafe {
                match a {
                    Arg::Slot(s) => k.set_arg(i, &slots[*s].get()),
                    Arg::Const(name) => k.set_arg(i, &self.consts.get(name).unwrap_or(&self.dummy).get()),
                    Arg::Dummy => k.set_arg(i, &self.dummy.get()),
                    Arg::I32(v) => k.set_arg(i, v),
                    Arg::U32(v) => k.set_arg(i, v),
                    Arg::F32(v) => k.set_arg(i, v),
                }
            }
            .map_err(|e| OpenClError::api(format!("clSetKernelArg({name}, {i})"), e))?;
        }
        Ok(k)
    }

    /// Runs the package on named inputs; returns the graph outputs in order.
    pub fn run(&mut self, inputs: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, OpenClError> {
        let batch = self.check_inputs(inputs)?;
        self.prepare(batch)?;
        let mut prepared = self
            .plans
            .remove(&batch)
            .ok_or_else(|| OpenClError::Unsupported("plan missing".into()))?;
        let result = self.execute(&mut prepared, inputs);
        self.plans.insert(batch, prepared);
        result
    }

    fn check_inputs(&self, inputs: &HashMap<String, Tensor>) -> Result<usize, OpenClError> {
        let mut batch = None;
        for decl in &self.graph.inputs {
            let t = inputs.get(&decl.name).ok_or_else(|| OpenClError::Input {
                name: decl.name.clone(),
                message: "not given".into(),
            })?;
            let ok = t.dtype() == decl.dtype
                && t.shape().len() == decl.shape.len()
                && decl.shape.iter().zip(t.shape()).all(|(d, &s)| d.is_none_or(|d| d == s));
            if let Some(i) = (1..decl.shape.len()).find(|&i| ok && decl.shape[i].is_none() && t.shape()[i] != 1) {
                return Err(OpenClError::Input {
                    name: decl.name.clone(),
                    message: format!(
                        "dimension {i} is symbolic in the model and {} here: only the first (batch) dimension may vary on OpenCL devices (not supported: other free dimensions; export the model with them fixed)",
                        t.shape()[i]
                    ),
                });
            }
            if ok && self.unread_inputs.contains(&decl.name) {
                continue;
            }
            if ok && t.shape().contains(&0) {
                return Err(OpenClError::Input {
                    name: decl.name.clone(),
                    message: format!(
                        "empty tensors (shape {:?} has a dimension of size 0) are not supported on OpenCL devices",
                        t.shape()
                    ),
                });
            }
            if !ok {
                let want: Vec<String> = decl
                    .shape
                    .iter()
                    .map(|d| d.map_or("?".into(), |d| d.to_string()))
                    .collect();
                return Err(OpenClError::Input {
                    name: decl.name.clone(),
                    message: format!(
                        "expected {} [{}], got {} {:?}",
                        decl.dtype,
                        want.join(", "),
                        t.dtype(),
                        t.shape()
                    ),
                });
            }
            // the batch is the first dimension the graph leaves free; inputs whose first
            // dimension is fixed (weights given as inputs, masks) do not take part
            if decl.shape.first().is_some_and(Option::is_none) {
                let b = t.shape()[0];
                if let Some((first, x)) = &batch
                    && *x != b
                {
                    return Err(OpenClError::Input {
                        name: decl.name.clone(),
                        message: format!("inputs disagree on the batch size: '{first}' has {x}, this one has {b}"),
                    });
                }
                batch.get_or_insert((decl.name.clone(), b));
            }
        }
        // with every first dimension fixed, plans are keyed by the first input's (as the
        // callers that prepare a batch size ahead of time key them)
        let fixed = self
            .graph
            .inputs
            .first()
            .and_then(|d| inputs.get(&d.name))
            .and_then(|t| t.shape().first().copied());
        Ok(batch.map(|(_, b)| b).or(fixed).unwrap_or(1))
    }

    fn execute(
        &mut self,
        prepared: &mut Prepared,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, OpenClError> {
        // values produced on the host during the run (inputs are read in place)
        let mut host: HashMap<String, Tensor> = HashMap::new();
        let mut events: Vec<(usize, Event)> = Vec::new();
        // profiled runs: each host node's step, time and output shape
        let mut host_times: Vec<(usize, f64, Vec<usize>)> = Vec::new();
        let Prepared { plan, slots, launches } = prepared;
        // the main queue's marker the side launches wait for, and the side launches the
        // main queue waits for at the next join
        let mut fork: Option<Event> = None;
        let mut side: Vec<Event> = Vec::new();
        let mut reads = Reads::new(&self.queue);
        let mut upload = Duration::ZERO;
        if let Some(byte) = self.poison {
            for (slot, &n) in slots.iter_mut().zip(&plan.slot_sizes) {
                fill(&self.queue, slot, byte, n.max(16))?;
            }
        }
        for (si, step) in plan.steps.iter().enumerate() {
            match step {
                // profiling runs every launch on the main queue, in plan order, so that each
                // layer's time is its own (overlapping kernels would share the cores)
                Step::Fork | Step::Join if self.profile => {}
                Step::Fork => {
                    // SAFETY: a marker with no wait list.
                    let marker = unsafe { self.queue.enqueue_marker_with_wait_list(&[]) }
                        .map_err(|e| OpenClError::api("clEnqueueMarkerWithWaitList", e))?;
                    // the main queue's work so far is submitted, so the side queue's wait
                    // for the marker cannot stall behind work the host has yet to flush
                    self.queue.flush().map_err(|e| OpenClError::api("clFlush", e))?;
                    fork = Some(marker);
                }
                Step::Join => {
                    if !side.is_empty() {
                        let wait: Vec<_> = side.iter().map(Event::get).collect();
                        // SAFETY: a barrier waiting on live events of this context.
                        unsafe { self.queue.enqueue_barrier_with_wait_list(&wait) }
                            .map_err(|e| OpenClError::api("clEnqueueBarrierWithWaitList", e))?;
                        self.side_queue.flush().map_err(|e| OpenClError::api("clFlush", e))?;
                    }
                    side.clear();
                    fork = None;
                }
                Step::UploadFloat { value, slot, .. }
                | Step::UploadQuantized { value, slot, .. }
                | Step::UploadU8 { value, slot, .. } => {
                    reads.settle(&mut host)?;
                    let began = Instant::now();
                    let is_input = !host.contains_key(value);
                    let t = host
                        .get(value)
                        .or_else(|| inputs.get(value))
                        .ok_or_else(|| OpenClError::Unsupported(format!("'{value}' missing on host")))?;
                    let bytes = upload_bytes(step, value, t)?;
                    // SAFETY: blocking write from a live host slice; the slot buffer is large
                    // enough by construction of the plan.
                    unsafe {
                        self.queue
                            .enqueue_write_buffer(&mut slots[*slot], CL_BLOCKING, 0, &bytes, &[])
                    }
                    .map_err(|e| OpenClError::api("clEnqueueWriteBuffer", e))?;
                    if is_input {
                        upload += began.elapsed();
                    }
                }
                Step::Launch {
                    kernel,
                    global,
                    local,
                    side: on_side,
                    ..
                } => {
                    let k = launches
                        .get(si)
                        .and_then(Option::as_ref)
                        .ok_or_else(|| OpenClError::Unsupported(format!("kernel {} missing", kernel.name())))?;
                    let local_ptr = local.as_ref().map_or(ptr::null(), |l| l.as_ptr());
                    // a side launch (inside a fork) waits for the fork's marker on the side queue
                    let marker = fork.as_ref().filter(|_| *on_side);
                    let (queue, wait) = match marker {
                        Some(f) => (&self.side_queue, vec![f.get()]),
                        None => (&self.queue, Vec::new()),
                    };
                    // SAFETY: the kernel object's arguments were all set when the plan was
                    // prepared; the sizes are three positive counts (and a local size that
                    // divides them, from the planner) that live across the call; the wait
                    // list holds a live event of this context.
                    let event = unsafe {
                        queue.enqueue_nd_range_kernel(k.get(), 3, ptr::null(), global.as_ptr(), local_ptr, &wait)
                    }
                    .map_err(|e| OpenClError::api(format!("clEnqueueNDRangeKernel({})", kernel.name()), e))?;
                    if marker.is_some() {
                        side.push(event);
                    } else if self.profile {
                        events.push((si, event));
                    }
                }
                // the planner puts a run's consecutive downloads ahead of its host nodes, so
                // they are all enqueued before the first host node's wait
                Step::Download { value, loc, shape } => reads.start(slots, value, loc, shape)?,
                Step::Host { node } => {
                    reads.settle(&mut host)?;
                    let started = Instant::now();
                    let n = &self.graph.nodes[*node];
                    let ins: Vec<Option<&Tensor>> = n
                        .inputs
                        .iter()
                        .map(|i| {
                            if i.is_empty() {
                                None
                            } else {
                                host.get(i)
                                    .or_else(|| inputs.get(i))
                                    .or_else(|| self.graph.initializers.get(i))
                            }
                        })
                        .collect();
                    let outs = weft_reference::eval_node(n, &ins)?;
                    for (name, t) in n.outputs.iter().zip(outs) {
                        // an f16 package stores every float activation as f16
                        let t = match t {
                            Tensor::F32(_) if self.precision == Precision::F16 => t.cast(DType::F16).cast(DType::F32),
                            other => other,
                        };
                        host.insert(name.clone(), t);
                    }
                    if self.profile {
                        let shape = n
                            .outputs
                            .first()
                            .and_then(|o| host.get(o))
                            .map(|t| t.shape().to_vec())
                            .unwrap_or_default();
                        host_times.push((si, started.elapsed().as_secs_f64() * 1e6, shape));
                    }
                }
            }
        }
        reads.settle(&mut host)?;
        self.last_upload = upload;
        self.side_queue.finish().map_err(|e| OpenClError::api("clFinish", e))?;
        self.queue.finish().map_err(|e| OpenClError::api("clFinish", e))?;
        if self.guard_bytes > 0 {
            for (i, (slot, &n)) in slots.iter().zip(&plan.slot_sizes).enumerate() {
                let mut tail = vec![0u8; self.guard_bytes];
                // SAFETY: blocking read of the guard region into a host slice of its size.
                unsafe {
                    self.queue
                        .enqueue_read_buffer(slot, CL_BLOCKING, n.max(16), &mut tail, &[])
                }
                .map_err(|e| OpenClError::api("clEnqueueReadBuffer", e))?;
                if let Some(at) = tail.iter().position(|&b| b != GUARD_BYTE) {
                    return Err(OpenClError::Unsupported(format!(
                        "a kernel wrote past the end of activation buffer {i} ({n} bytes; first changed guard byte at +{at})"
                    )));
                }
            }
        }
        if self.profile {
            let mut prev_end: Option<u64> = None;
            let mut rows: Vec<(usize, LayerProfile)> = host_times
                .into_iter()
                .map(|(si, micros, shape)| {
                    let node = match &plan.steps[si] {
                        Step::Host { node } => &self.graph.nodes[*node],
                        _ => unreachable!("host_times holds host steps"),
                    };
                    let row = LayerProfile {
                        node: format!("{} ({})", node.name, node.op.name()),
                        kernel: HOST,
                        shape,
                        macs: 0,
                        micros,
                        wait_micros: 0.0,
                    };
                    (si, row)
                })
                .collect();
            let kernels = events
                .iter()
                .filter_map(|(si, e)| {
                    let Step::Launch {
                        node,
                        kernel,
                        macs,
                        shape,
                        ..
                    } = &plan.steps[*si]
                    else {
                        return None;
                    };
                    let (start, end) = (e.profiling_command_start().ok()?, e.profiling_command_end().ok()?);
                    let since = match prev_end {
                        Some(t) => t,
                        None => e.profiling_command_queued().ok()?,
                    };
                    prev_end = Some(end);
                    Some((
                        *si,
                        LayerProfile {
                            node: node.clone(),
                            kernel: kernel.name(),
                            shape: shape.clone(),
                            macs: *macs,
                            micros: end.saturating_sub(start) as f64 / 1e3,
                            wait_micros: start.saturating_sub(since) as f64 / 1e3,
                        },
                    ))
                })
                .collect::<Vec<_>>();
            rows.extend(kernels);
            rows.sort_by_key(|(si, _)| *si);
            self.last_profile = rows.into_iter().map(|(_, r)| r).collect();
        }
        self.graph
            .outputs
            .iter()
            .map(|o| {
                host.remove(&o.name)
                    .or_else(|| inputs.get(&o.name).cloned())
                    // a constant output (a Constant node's value)
                    .or_else(|| self.graph.initializers.get(&o.name).cloned())
                    .map(|t| (o.name.clone(), t))
                    .ok_or_else(|| OpenClError::Unsupported(format!("output '{}' was not produced", o.name)))
            })
            .collect()
    }
}

/// Device-to-host reads enqueued without blocking and converted once the queue has done them:
/// a run's consecutive downloads (a network's outputs) cost the host one wait, not one each.
/// Dropped with reads in flight (an error part way), it waits for them, so that no read
/// writes into freed memory.
struct Reads<'q> {
    queue: &'q CommandQueue,
    pending: Vec<(String, Loc, Vec<usize>, Vec<u8>)>,
}

impl<'q> Reads<'q> {
    fn new(queue: &'q CommandQueue) -> Self {
        Self {
            queue,
            pending: Vec::new(),
        }
    }

    /// Enqueues the read of `value` (at `loc`, of `shape`) into a host buffer of its size.
    fn start(&mut self, slots: &[Buffer<u8>], value: &str, loc: &Loc, shape: &[usize]) -> Result<(), OpenClError> {
        let n: usize = shape.iter().product();
        let (slot, len) = match loc {
            Loc::F32 { slot } => (*slot, n * 4),
            Loc::F16 { slot } => (*slot, n * 2),
            Loc::U8 { slot, geom } => (*slot, geom.bytes()),
            Loc::Host => return Err(OpenClError::Unsupported("download of a host value".into())),
        };
        let mut bytes = vec![0u8; len];
        // SAFETY: a non-blocking read into a host buffer of exactly `len` bytes; the buffer
        // is kept in `pending` (its heap storage does not move) until `settle` or `drop`
        // has waited for the queue.
        unsafe {
            self.queue
                .enqueue_read_buffer(&slots[slot], CL_NON_BLOCKING, 0, &mut bytes, &[])
        }
        .map_err(|e| OpenClError::api("clEnqueueReadBuffer", e))?;
        self.pending
            .push((value.to_string(), loc.clone(), shape.to_vec(), bytes));
        Ok(())
    }

    /// Waits for the pending reads and puts their values, as host tensors, into `host`.
    fn settle(&mut self, host: &mut HashMap<String, Tensor>) -> Result<(), OpenClError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let done = self.queue.finish().map_err(|e| OpenClError::api("clFinish", e));
        let pending = std::mem::take(&mut self.pending);
        done?;
        for (value, loc, shape, bytes) in pending {
            let t = match loc {
                Loc::F32 { .. } => Tensor::from_le_bytes(DType::F32, &shape, &bytes)?,
                Loc::F16 { .. } => Tensor::from_le_bytes(DType::F16, &shape, &bytes)?.cast(DType::F32),
                Loc::U8 { geom, .. } => {
                    let plain = from_nc4hw4(&bytes, geom.n, geom.c, geom.h, geom.w);
                    Tensor::from_le_bytes(DType::U8, &shape, &plain)?
                }
                Loc::Host => unreachable!("start refuses host values"),
            };
            host.insert(value, t);
        }
        Ok(())
    }
}

impl Drop for Reads<'_> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.queue.finish();
        }
    }
}
