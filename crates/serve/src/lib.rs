//! weft's gRPC service. Existing clients work unchanged: KServe v2 / Open Inference
//! Protocol (tritonclient, perf_analyzer) and TensorFlow Serving's Predict API as Azure's
//! Brainwave client speaks it; plus gRPC health, server reflection, and HTTP `/metrics`,
//! `/healthz`, `/readyz`.
//!
//! Requests are decoded and preprocessed on async workers, then queued (bounded) for a
//! per-model worker thread that coalesces them into batches and runs the device; device
//! work never runs on async workers.

mod auth;
mod batcher;
mod collect;
mod convert;
mod error;
pub mod fault;
mod http;
mod kserve;
mod metrics;
mod pbtxt;
pub mod proto;
mod repository;
mod rest;
mod server;
mod tfserving;

pub use convert::kserve_datatype;
pub use error::ServeError;
pub use kserve::decode_infer_request;
pub use repository::{ControlMode, RepositoryConfig};
pub use server::{REQUEST_TARGET, ServeConfig, Served, serve};
