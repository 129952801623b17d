//! Deployers: OCI image archives built without a container daemon, and the artifacts that
//! place the service on Azure Container Instances, Azure Kubernetes Service, Azure IoT Edge
//! or a local container. Every flag is checked before anything is written.

pub mod aks;
pub mod error;
pub mod image;
pub mod local;
pub mod targets;
pub mod validate;

pub use error::DeployError;
