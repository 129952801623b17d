//! Errors of the OpenCL runtime.

/// How to get an OpenCL device on a machine without one.
pub const INSTALL_HINT: &str =
    "install PoCL to run on the CPU: `apt-get install pocl-opencl-icd ocl-icd-libopencl1` (Debian/Ubuntu)";

#[derive(Debug, thiserror::Error)]
pub enum OpenClError {
    #[error("no OpenCL platform found ({0}); {INSTALL_HINT}")]
    NoPlatform(String),
    /// `hint`: how to get a device, or which to choose (with its leading "; ").
    #[error("no OpenCL device matches '{spec}' (found: {found}){hint}")]
    NoDevice { spec: String, found: String, hint: String },
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
    /// The error of the OpenCL call `what`: running out of device or host memory by its
    /// numeric code (OpenCL 1.2's CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_RESOURCES,
    /// CL_OUT_OF_HOST_MEMORY), anything else with the code's name.
    pub fn api(what: impl Into<String>, error: opencl3::error_codes::ClError) -> Self {
        use opencl3::error_codes::{CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY, CL_OUT_OF_RESOURCES};
        let what = what.into();
        if matches!(
            error.0,
            CL_MEM_OBJECT_ALLOCATION_FAILURE | CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY
        ) {
            return OpenClError::OutOfMemory(format!("{what}: {error}"));
        }
        OpenClError::Api {
            what,
            code: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opencl3::error_codes::{CL_INVALID_KERNEL_NAME, CL_OUT_OF_RESOURCES, ClError};

    use super::*;

    #[test]
    fn memory_errors_are_told_apart_by_their_code() {
        let oom = OpenClError::api("clCreateBuffer", ClError(CL_OUT_OF_RESOURCES));
        assert!(matches!(oom, OpenClError::OutOfMemory(_)), "{oom}");
        let other = OpenClError::api("clCreateKernel(x)", ClError(CL_INVALID_KERNEL_NAME));
        assert!(
            matches!(&other, OpenClError::Api { code, .. } if code.contains("CL_INVALID_KERNEL_NAME")),
            "{other}"
        );
    }
}
