//! Errors of the OpenCL runtime.

/// How to get an OpenCL device on a machine without one.
pub const INSTALL_HINT: &str =
    "install PoCL to run on the CPU: `apt-get install pocl-opencl-icd ocl-icd-libopencl1` (Debian/Ubuntu)";

#[derive(Debug, thiserror::Error)]
pub enum OpenClError {
    #[error("no OpenCL platform found ({0}); {INSTALL_HINT}")]
    NoPlatform(String),
    #[error("no OpenCL device matches '{spec}' (found: {found}); {INSTALL_HINT}")]
    NoDevice { spec: String, found: String },
    #[error("invalid device '{0}' (use pocl, opencl:<platform substring>[:<index>], or reference)")]
    BadSpec(String),
    #[error("building the OpenCL program failed on {device}:\n{log}")]
    Build { device: String, log: String },
    #[error("loading the program binary {path} failed: {message}")]
    Binary { path: String, message: String },
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    #[error("OpenCL error in {what}: {code}")]
    Api { what: String, code: String },
    #[error("the model cannot run on OpenCL: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Exec(#[from] weft_reference::ExecError),
    #[error(transparent)]
    Core(#[from] weft_core::CoreError),
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
}

impl OpenClError {
    pub fn api(what: impl Into<String>, code: impl std::fmt::Display) -> Self {
        let code = code.to_string();
        let what = what.into();
        if code.contains("MEM_OBJECT_ALLOCATION_FAILURE")
            || code.contains("OUT_OF_RESOURCES")
            || code.contains("OUT_OF_HOST_MEMORY")
        {
            return OpenClError::OutOfMemory(format!("{what}: {code}"));
        }
        OpenClError::Api { what, code }
    }
}
