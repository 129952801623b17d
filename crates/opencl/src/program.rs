//! The kernel program: sources embedded from `kernels/`, build options with the device's
//! hook macros, an on-disk cache of built binaries, and prebuilt binaries (FPGA images).

use std::path::{Path, PathBuf};

use opencl3::context::Context;
use opencl3::program::Program;
use sha2::{Digest, Sha256};

use crate::device::{DeviceInfo, DotHook};
use crate::error::OpenClError;

const COMMON: &str = include_str!("../../../kernels/common.cl");
const QCONV: &str = include_str!("../../../kernels/qconv.cl");
const QELEMENTWISE: &str = include_str!("../../../kernels/qelementwise.cl");
const QPOOL: &str = include_str!("../../../kernels/qpool.cl");
const FLOAT: &str = include_str!("../../../kernels/float.cl");
const MX: &str = include_str!("../../../kernels/mx.cl");

/// The whole program's OpenCL C source: the int8 kernels, then the float kernels twice
/// (f32 storage, then f16 storage), then the MX kernels.
pub fn kernel_source() -> String {
    [
        COMMON,
        QCONV,
        QELEMENTWISE,
        QPOOL,
        "#define WEFT_HALF 0",
        FLOAT,
        "#undef WEFT_HALF\n#define WEFT_HALF 1",
        FLOAT,
        MX,
    ]
    .join("\n")
}

/// Compile-time parameters of the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramOptions {
    pub hook: DotHook,
    /// Output channels per work-item.
    pub tm: usize,
    /// Output pixels per work-item.
    pub tp: usize,
    /// Ask for correctly rounded float division (the input quantize divides by its scale,
    /// as the reference does; OpenCL otherwise allows 2.5 ulp).
    pub exact_divide: bool,
}

impl ProgramOptions {
    pub fn for_device(device: &DeviceInfo, portable: bool) -> Self {
        ProgramOptions {
            hook: device.dot_hook(portable),
            tm: crate::plan::QCONV_TM,
            tp: 8,
            exact_divide: device.exact_divide,
        }
    }

    pub fn build_options(&self) -> String {
        let mut o = format!(
            "-cl-std=CL1.2 -D TM={} -D TP={} -D QC_R={} -D QC_V={}",
            self.tm,
            self.tp,
            crate::plan::QCONVC_PIXELS,
            crate::plan::QCONVC_VECTORS
        );
        if let Some(d) = self.hook.define() {
            o.push_str(&format!(" -D {d}"));
        }
        if self.exact_divide {
            o.push_str(" -cl-fp32-correctly-rounded-divide-sqrt");
        }
        o
    }
}

/// Where a session's program came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramSource {
    Built,
    Cached,
    Binary(PathBuf),
}

/// weft's cache directory (compiled programs, image base layers, local deployments):
/// `$WEFT_CACHE_DIR`, else `$XDG_CACHE_HOME/weft`, else `~/.cache/weft`, else the temporary
/// directory's `weft`. (The `dirs` crate would compute the XDG part, but brings a dependency
/// outside the project's licence policy, `deny.toml`.)
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEFT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("weft")
}

fn program_cache_dir() -> Option<PathBuf> {
    Some(cache_dir().join("programs"))
}

fn cache_key(source: &str, options: &str, device: &DeviceInfo) -> String {
    let mut h = Sha256::new();
    for part in [
        source,
        options,
        &device.platform,
        &device.platform_version,
        &device.name,
        &device.version,
        &device.driver_version,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn from_binary(context: &Context, binary: &[u8], options: &str) -> Result<Program, String> {
    Program::create_and_build_from_binary(context, &[binary], options).map_err(|e| e.to_string())
}

/// Builds the program `source` for `device`: from `binary` when given, else from the
/// on-disk cache when it holds this source, options and device, else from source (then
/// cached).
pub fn build(
    context: &Context,
    device: &DeviceInfo,
    opts: &ProgramOptions,
    binary: Option<&Path>,
    source: &str,
) -> Result<(Program, ProgramSource), OpenClError> {
    let options = opts.build_options();
    if let Some(path) = binary {
        let bytes = std::fs::read(path).map_err(|e| OpenClError::Binary {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let program = from_binary(context, &bytes, &options).map_err(|message| OpenClError::Binary {
            path: path.display().to_string(),
            message,
        })?;
        return Ok((program, ProgramSource::Binary(path.to_path_buf())));
    }
    let cached = program_cache_dir().map(|d| d.join(format!("{}.bin", cache_key(source, &options, device))));
    if let Some(path) = &cached
        && let Ok(bytes) = std::fs::read(path)
        && let Ok(p) = from_binary(context, &bytes, &options)
    {
        return Ok((p, ProgramSource::Cached));
    }
    // a cold build takes seconds (PoCL: about ten for the generic kernels): say so
    tracing::info!(
        "compiling the OpenCL kernels for {} (not in the program cache yet; later starts load them)",
        device.name
    );
    let start = std::time::Instant::now();
    let mut program =
        Program::create_from_source(context, source).map_err(|e| OpenClError::api("clCreateProgramWithSource", e))?;
    if let Err(e) = program.build(context.devices(), &options) {
        let log = program.get_build_log(device.id).unwrap_or_default();
        return Err(OpenClError::Build {
            device: device.name.clone(),
            log: if log.trim().is_empty() { e.to_string() } else { log },
        });
    }
    tracing::info!("compiled the kernels in {:.1} s", start.elapsed().as_secs_f64());
    if let Some(path) = &cached
        && let Ok(bins) = program.get_binaries()
        && let Some(bin) = bins.into_iter().next().filter(|b| !b.is_empty())
    {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bin).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    Ok((program, ProgramSource::Built))
}

/// The built program's binary for the device (what an FPGA flow would ship as .aocx/.xclbin).
pub fn binary_of(program: &Program) -> Result<Vec<u8>, OpenClError> {
    program
        .get_binaries()
        .map_err(|e| OpenClError::api("clGetProgramInfo(BINARIES)", e))?
        .into_iter()
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| OpenClError::Unsupported("the device returned no program binary".into()))
}

/// Builds the generic program for a device from source (no cache) and returns its binary.
pub fn build_binary(device: &DeviceInfo, portable: bool) -> Result<Vec<u8>, OpenClError> {
    build_binary_of(device, portable, &kernel_source())
}

/// Builds `source` for a device (no cache) and returns its binary.
pub fn build_binary_of(device: &DeviceInfo, portable: bool, source: &str) -> Result<Vec<u8>, OpenClError> {
    let d = opencl3::device::Device::new(device.id);
    let context = Context::from_device(&d).map_err(|e| OpenClError::api("clCreateContext", e))?;
    let opts = ProgramOptions::for_device(device, portable);
    let mut program =
        Program::create_from_source(&context, source).map_err(|e| OpenClError::api("clCreateProgramWithSource", e))?;
    if let Err(e) = program.build(context.devices(), &opts.build_options()) {
        let log = program.get_build_log(device.id).unwrap_or_default();
        return Err(OpenClError::Build {
            device: device.name.clone(),
            log: if log.trim().is_empty() { e.to_string() } else { log },
        });
    }
    binary_of(&program)
}
