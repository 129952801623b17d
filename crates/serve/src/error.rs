//! Errors of the service and their one mapping to gRPC status codes. Internal details are
//! logged, never sent to clients.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("the request deadline passed before it was computed")]
    DeadlineExceeded,
    #[error("{0}")]
    Unavailable(String),
    /// A failure inside the server; the detail is logged, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("serving setup: {0}")]
    Setup(String),
    /// The device failed beyond recovery; the server stopped.
    #[error("device failed: {0}")]
    DeviceFailed(String),
}

impl ServeError {
    pub fn code(&self) -> Code {
        match self {
            ServeError::InvalidArgument(_) => Code::InvalidArgument,
            ServeError::NotFound(_) => Code::NotFound,
            ServeError::Unauthenticated => Code::Unauthenticated,
            ServeError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServeError::DeadlineExceeded => Code::DeadlineExceeded,
            ServeError::Unavailable(_) | ServeError::DeviceFailed(_) => Code::Unavailable,
            ServeError::Internal(_) | ServeError::Setup(_) => Code::Internal,
        }
    }

    /// The status sent to the client, tagged with the request id.
    pub fn to_status(&self, request_id: &str) -> Status {
        let message = match self {
            ServeError::Internal(detail) => {
                tracing::error!(request_id, "internal error: {detail}");
                "internal error (see the server log)".to_string()
            }
            ServeError::Setup(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut status = Status::new(self.code(), message);
        if let Ok(v) = request_id.parse() {
            status.metadata_mut().insert("request_id", v);
        }
        status
    }
}
