//! weft's OpenCL runtime: the only crate with `unsafe` and the only one that knows OpenCL.
//!
//! A [`Session`] binds a package to a device: it builds (or loads from the cache or a
//! prebuilt binary) one program from `kernels/*.cl` with the device's hook macros, packs
//! the weights into kernel layout once, and for each batch size plans the network as a list
//! of kernel launches over activation buffers reused by liveness. A run enqueues the whole
//! network on an in-order queue and waits once.

mod device;
mod error;
mod fpga;
mod pack;
mod plan;
mod program;
mod session;

pub use device::{
    DeviceInfo, DotHook, ensure_writable_cache, generic_pocl_work_groups, list_devices, pin_pocl_workers, select_device,
};
pub use error::OpenClError;
pub use fpga::{FPGA_WG, FpgaLayer, FpgaProgram, fpga_program, fpga_source};
pub use pack::stem_fold_words;
pub use plan::{KernelKind, KernelSet, LayerKernel, QCONV_TM};
pub use program::{ProgramOptions, ProgramSource, build_binary, build_binary_of, cache_dir, kernel_source};
pub use session::{HOST, LayerProfile, Session, SessionOptions};
