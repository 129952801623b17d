//! Finding OpenCL devices and choosing the target hooks for one.

use opencl3::device::{CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU, Device};
use opencl3::platform::get_platforms;

use crate::error::OpenClError;

/// How the int8 4-way multiply-accumulate is compiled for a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotHook {
    /// Portable OpenCL C (FPGA compilers and any device).
    Portable,
    /// `cl_khr_integer_dot_product`.
    Khr,
    /// PoCL's CPU device on an AVX512-VNNI host: the clang builtin for `vpdpbusd`.
    Vnni,
    /// PoCL's CPU device on an AVX2 host without AVX512-VNNI: `vpmaddwd` on 16-bit halves.
    Avx2,
}

impl DotHook {
    pub fn define(self) -> Option<&'static str> {
        match self {
            DotHook::Portable => None,
            DotHook::Khr => Some("WEFT_DOT_KHR"),
            DotHook::Vnni => Some("WEFT_DOT_VNNI"),
            DotHook::Avx2 => Some("WEFT_DOT_AVX2"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DotHook::Portable => "portable",
            DotHook::Khr => "cl_khr_integer_dot_product",
            DotHook::Vnni => "avx512-vnni",
            DotHook::Avx2 => "avx2",
        }
    }
}

/// What weft knows about one OpenCL device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub platform: String,
    pub platform_version: String,
    pub platform_index: usize,
    pub device_index: usize,
    pub name: String,
    pub version: String,
    pub driver_version: String,
    pub extensions: String,
    pub is_cpu: bool,
    pub compute_units: u32,
    pub max_work_group: usize,
    /// The device divides floats correctly rounded when asked
    /// (`-cl-fp32-correctly-rounded-divide-sqrt`), as the input quantize needs to match the
    /// reference exactly.
    pub exact_divide: bool,
    pub global_mem: u64,
    pub max_alloc: u64,
    pub(crate) id: opencl3::types::cl_device_id,
}

// SAFETY: a cl_device_id is a handle valid for the life of the process and usable from any
// thread (OpenCL API calls are thread-safe except clSetKernelArg, which weft serializes).
unsafe impl Send for DeviceInfo {}
unsafe impl Sync for DeviceInfo {}

impl DeviceInfo {
    pub fn is_pocl(&self) -> bool {
        self.platform.contains("Portable Computing Language") || self.platform.to_lowercase().contains("pocl")
    }

    /// The hooks this device can build, best first (the portable one always last).
    pub fn dot_hooks(&self) -> Vec<DotHook> {
        let mut hooks = Vec::new();
        if self
            .extensions
            .split_whitespace()
            .any(|e| e == "cl_khr_integer_dot_product")
        {
            hooks.push(DotHook::Khr);
        }
        if self.is_pocl() && self.is_cpu && host_has_vnni() {
            hooks.push(DotHook::Vnni);
        }
        if self.is_pocl() && self.is_cpu && host_has_avx2() {
            hooks.push(DotHook::Avx2);
        }
        hooks.push(DotHook::Portable);
        hooks
    }

    /// The best hook this device supports, unless `portable` is forced. `WEFT_DOT_HOOK`
    /// (a hook's name: `portable`, `avx2`, `avx512-vnni`, `cl_khr_integer_dot_product`)
    /// picks another one the device supports, for comparisons and tests; a name the device
    /// cannot build is ignored with a warning.
    pub fn dot_hook(&self, portable: bool) -> DotHook {
        if portable {
            return DotHook::Portable;
        }
        if let Some(want) = std::env::var_os("WEFT_DOT_HOOK").filter(|v| !v.is_empty()) {
            let want = want.to_string_lossy();
            match self.dot_hooks().into_iter().find(|h| h.name() == want) {
                Some(h) => return h,
                None => tracing::warn!(
                    "WEFT_DOT_HOOK={want}: {} cannot build that hook (it can: {})",
                    self.name,
                    self.dot_hooks().iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        self.dot_hooks()[0]
    }

    /// `platform:index` label as `weft devices` prints it.
    pub fn label(&self) -> String {
        format!("opencl:{}:{}", self.platform, self.device_index)
    }
}

#[cfg(target_arch = "x86_64")]
fn host_has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has_vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn host_has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has_avx2() -> bool {
    false
}

/// Every OpenCL device on every platform (discovered once per process: ICD loaders and
/// PoCL do not all tolerate concurrent first calls).
pub fn list_devices() -> Result<Vec<DeviceInfo>, OpenClError> {
    static DEVICES: std::sync::OnceLock<Result<Vec<DeviceInfo>, String>> = std::sync::OnceLock::new();
    DEVICES
        .get_or_init(|| discover().map_err(|e| e.to_string()))
        .clone()
        .map_err(OpenClError::NoPlatform)
}

fn discover() -> Result<Vec<DeviceInfo>, OpenClError> {
    let platforms = get_platforms().map_err(|e| OpenClError::NoPlatform(format!("clGetPlatformIDs: {e}")))?;
    if platforms.is_empty() {
        return Err(OpenClError::NoPlatform("the ICD loader lists none".into()));
    }
    let mut out = Vec::new();
    for (pi, p) in platforms.iter().enumerate() {
        let pname = p.name().unwrap_or_default();
        let pversion = p.version().unwrap_or_default();
        let ids = p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default();
        for (di, id) in ids.into_iter().enumerate() {
            let d = Device::new(id);
            out.push(DeviceInfo {
                platform: pname.clone(),
                platform_version: pversion.clone(),
                platform_index: pi,
                device_index: di,
                name: d.name().unwrap_or_default(),
                version: d.version().unwrap_or_default(),
                driver_version: d.driver_version().unwrap_or_default(),
                extensions: d.extensions().unwrap_or_default(),
                is_cpu: d.dev_type().map(|t| t & CL_DEVICE_TYPE_CPU != 0).unwrap_or(false),
                compute_units: d.max_compute_units().unwrap_or(0),
                max_work_group: d.max_work_group_size().unwrap_or(1),
                exact_divide: d
                    .single_fp_config()
                    .map(|c| c & opencl3::device::CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT != 0)
                    .unwrap_or(false),
                global_mem: d.global_mem_size().unwrap_or(0),
                max_alloc: d.max_mem_alloc_size().unwrap_or(0),
                id,
            });
        }
    }
    Ok(out)
}

/// Chooses a device: `pocl`, or `opencl:<platform substring>[:<index>]` (an empty
/// substring matches any platform).
pub fn select_device(spec: &str) -> Result<DeviceInfo, OpenClError> {
    let (filter, index): (String, usize) = if spec == "pocl" {
        ("portable computing language".into(), 0)
    } else if let Some(rest) = spec.strip_prefix("opencl") {
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        match rest.rsplit_once(':') {
            Some((name, idx)) if idx.parse::<usize>().is_ok() => (name.to_lowercase(), idx.parse().unwrap_or(0)),
            _ => match rest.parse::<usize>() {
                Ok(idx) => (String::new(), idx),
                Err(_) => (rest.to_lowercase(), 0),
            },
        }
    } else {
        return Err(OpenClError::BadSpec(spec.to_string()));
    };
    let devices = list_devices()?;
    let found = devices
        .iter()
        .map(|d| format!("{} / {}", d.platform, d.name))
        .collect::<Vec<_>>()
        .join("; ");
    let matching: Vec<&DeviceInfo> = devices
        .iter()
        .filter(|d| {
            filter.is_empty()
                || d.platform.to_lowercase().contains(&filter)
                || (filter.contains("portable") && d.is_pocl())
        })
        .collect();
    matching
        .get(index)
        .map(|d| (*d).clone())
        .ok_or_else(|| OpenClError::NoDevice {
            spec: spec.to_string(),
            // the install hint only when there is nothing to run on
            hint: if devices.iter().any(DeviceInfo::is_pocl) {
                "; choose one of those (`pocl`, or `opencl:<platform substring>[:<index>]`)".into()
            } else if devices.is_empty() {
                format!("; {}", crate::error::INSTALL_HINT)
            } else {
                format!("; choose one of those, or {}", crate::error::INSTALL_HINT)
            },
            found: if found.is_empty() { "none".into() } else { found },
        })
}

/// Asks PoCL's CPU device to pin its worker threads, one per core (`POCL_AFFINITY=1`),
/// unless `POCL_AFFINITY` is already set (`POCL_AFFINITY=0` opts out). Unpinned, the
/// workers PoCL creates at its first launch can share one core until the kernel's load
/// balancer separates them: a fresh process then ran its first ResNet-50 runs at half speed
/// (11.4 ms instead of 6.6 ms) and fell back to ~7.9 ms for stretches. Call it first in
/// `main`: it changes the environment only while the process has a single thread, and says
/// whether it did.
pub fn pin_pocl_workers() -> bool {
    set_pocl_default("POCL_AFFINITY", "1")
}

/// Makes PoCL compile each kernel once for any work-group size (`POCL_WORK_GROUP_SPECIALIZATION=0`)
/// unless the variable is set. By default PoCL compiles a kernel again for every work-group
/// size it meets; the planner's int8 launches use up to nine sizes, so a cold `weft serve`
/// spent 6 of its 12.7 s to ready compiling them. The int8 kernels vectorise explicitly and
/// ran as fast unspecialised (ResNet-50, interleaved runs); the float convolution is ~9%
/// slower without it, so callers set this for int8 packages only. Like
/// [`pin_pocl_workers`], it changes the environment only while the process has a single
/// thread, and says whether it did.
pub fn generic_pocl_work_groups() -> bool {
    set_pocl_default("POCL_WORK_GROUP_SPECIALIZATION", "0")
}

/// Makes sure the cache directory (weft's program cache, and PoCL's kernel cache, which
/// PoCL needs to find any device at all) is writable. When it is not (a read-only root, a
/// volume owned by another user), points both at a private directory under the system's
/// temporary directory and says so: PoCL would otherwise report no device, and `--device
/// auto` would fall back to the reference executor. Call it first in `main`, like
/// [`pin_pocl_workers`]: it changes the environment only while the process has a single
/// thread. Returns the warning to print, if any.
pub fn ensure_writable_cache() -> Option<String> {
    let wanted = crate::program::cache_dir();
    let writable = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).is_ok() && {
            let probe = dir.join(format!(".weft-probe-{}", std::process::id()));
            let ok = std::fs::write(&probe, b"").is_ok();
            let _ = std::fs::remove_file(&probe);
            ok
        }
    };
    if writable(&wanted) || !single_threaded() {
        return None;
    }
    // one directory per user id (the owner of /proc/self), so users do not share kernels
    let user = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| format!("pid{}", std::process::id()), |m| m.uid().to_string())
    };
    let fallback = std::env::temp_dir().join(format!("weft-cache-{user}"));
    if !writable(&fallback) {
        return Some(format!(
            "warning: neither the cache directory {} nor {} is writable: OpenCL devices may not open (set WEFT_CACHE_DIR to a writable directory)",
            wanted.display(),
            fallback.display()
        ));
    }
    // SAFETY: the process has one thread (checked above), so nothing else reads or writes
    // the environment meanwhile.
    unsafe {
        std::env::set_var("WEFT_CACHE_DIR", &fallback);
        if std::env::var_os("POCL_CACHE_DIR").is_none() {
            std::env::set_var("POCL_CACHE_DIR", fallback.join("pocl"));
        }
    }
    Some(format!(
        "warning: the cache directory {} is not writable; compiled kernels go to {} instead (kept only while it lasts; set WEFT_CACHE_DIR to keep them)",
        wanted.display(),
        fallback.display()
    ))
}

/// Sets a PoCL variable to `value` unless it is set or the process has other threads; says
/// whether it did.
fn set_pocl_default(var: &str, value: &str) -> bool {
    if std::env::var_os(var).is_some() || !single_threaded() {
        return false;
    }
    // SAFETY: the process has one thread (checked just above), so no other thread can read
    // or change the environment while it is written; and with one thread none can be
    // spawned in between.
    unsafe { std::env::set_var(var, value) };
    true
}

/// Whether this process has exactly one thread (Linux: /proc/self/status; elsewhere, and
/// when it cannot be read, false).
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim() == "1"))
        })
        .unwrap_or(false)
}
