use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A flag or input that is not acceptable; nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external tool (debootstrap, tar, podman, az, kubectl) failed or is missing.
    #[error("{tool}: {message}")]
    Tool { tool: String, message: String },
    #[error("{0}")]
    Package(#[from] weft_package::PackageError),
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl DeployError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DeployError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn tool(tool: &str, message: impl Into<String>) -> Self {
        DeployError::Tool {
            tool: tool.to_string(),
            message: message.into(),
        }
    }
}
