//! Deployment artifacts for Azure Container Instances (container group YAML), Azure
//! Kubernetes Service (a kustomization) and Azure IoT Edge (a deployment manifest).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::DeployError;
use crate::image::{self, UID};
use crate::validate;

/// What every target runs: the service container.
#[derive(Clone, Debug)]
pub struct Service {
    /// Resource name (a DNS label): container group, Deployment, module.
    pub name: String,
    /// Model name on the wire; the image holds `/models/<model_name>.weft`.
    pub model_name: String,
    /// Image reference (`registry/name:tag`).
    pub image: String,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The API key clients must send, when auth is on.
    pub api_key: Option<String>,
    /// More `weft serve` flags.
    pub serve_args: Vec<String>,
    /// Package labels (model, precision, sha256).
    pub labels: Vec<(String, String)>,
}

impl Service {
    pub fn check(&self) -> Result<(), DeployError> {
        validate::dns_label("--name", &self.name)?;
        validate::ports(self.grpc_port, self.http_port)?;
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return Err(DeployError::Invalid(format!(
                "--image '{}' is not an image reference",
                self.image
            )));
        }
        Ok(())
    }

    /// Arguments after the image's entrypoint (`weft serve`).
    pub fn args(&self) -> Vec<String> {
        let mut a = image::serve_args(&self.model_name, self.grpc_port, self.http_port);
        a.extend(self.serve_args.iter().cloned());
        a
    }

    /// The whole command line (for targets whose `command` replaces the entrypoint).
    pub fn command(&self) -> Vec<String> {
        let mut c = vec![image::BINARY.to_string(), "serve".to_string()];
        c.extend(self.args());
        c
    }
}

/// The environment variable `weft serve` reads accepted keys from.
pub const KEYS_ENV: &str = "WEFT_API_KEYS";

/// A number as JSON: whole values as integers (schema-strict), others as floats.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

pub(crate) fn write(path: &Path, text: &str, secret: bool) -> Result<PathBuf, DeployError> {
    fs::write(path, text).map_err(|e| DeployError::io(path, e))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| DeployError::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(path.to_path_buf())
}

pub(crate) fn out_dir(dir: &Path) -> Result<(), DeployError> {
    fs::create_dir_all(dir).map_err(|e| DeployError::io(dir, e))
}

// ---------------------------------------------------------------- ACI

/// The container group API version the YAML is written for.
pub const ACI_API_VERSION: &str = "2025-09-01";

#[derive(Clone, Debug)]
pub struct AciOptions {
    pub location: String,
    pub cpu: f64,
    pub memory_gb: f64,
    pub dns_label: Option<String>,
    /// `Public` or `Private`.
    pub ip_type: String,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Registry server, user name and password for a private registry.
    pub registry: Option<(String, String, String)>,
}

impl AciOptions {
    pub fn check(&self) -> Result<(), DeployError> {
        validate::positive("--cpu", self.cpu, 2, 4.0)?;
        validate::positive("--memory-gb", self.memory_gb, 1, 16.0)?;
        if let Some(l) = &self.dns_label {
            validate::dns_label("--dns-label", l)?;
        }
        if !["Always", "OnFailure", "Never"].contains(&self.restart_policy.as_str()) {
            return Err(DeployError::Invalid(format!(
                "--restart-policy must be Always, OnFailure or Never, got '{}'",
                self.restart_policy
            )));
        }
        if !["Public", "Private"].contains(&self.ip_type.as_str()) {
            return Err(DeployError::Invalid(format!(
                "--ip-type must be Public or Private, got '{}'",
                self.ip_type
            )));
        }
        if self.location.is_empty() || !self.location.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(DeployError::Invalid(format!(
                "--location '{}' is not an Azure region name (for example eastus)",
                self.location
            )));
        }
        Ok(())
    }
}

/// The container group as `az container create --file` reads it.
pub fn aci_document(svc: &Service, o: &AciOptions) -> Value {
    let probe = |path: &str, delay: u32, period: u32| {
        json!({
            "httpGet": {"path": path, "port": svc.http_port, "scheme": "http"},
            "initialDelaySeconds": delay,
            "periodSeconds": period,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        })
    };
    let ports = json!([
        {"port": svc.grpc_port, "protocol": "TCP"},
        {"port": svc.http_port, "protocol": "TCP"},
    ]);
    let mut env = vec![];
    if let Some(k) = &svc.api_key {
        env.push(json!({"name": KEYS_ENV, "secureValue": k}));
    }
    let mut ip = json!({"type": o.ip_type, "ports": ports});
    if let Some(l) = &o.dns_label {
        ip["dnsNameLabel"] = json!(l);
    }
    let mut tags = Map::new();
    tags.insert("app".into(), json!("weft"));
    for (k, v) in &svc.labels {
        if let Some(short) = k.strip_prefix("io.weft.") {
            tags.insert(format!("weft-{}", short.replace('.', "-")), json!(v));
        }
    }
    let mut props = json!({
        "osType": "Linux",
        "restartPolicy": o.restart_policy,
        "containers": [{
            "name": svc.name,
            "properties": {
                "image": svc.image,
                "command": svc.command(),
                "ports": ports,
                "environmentVariables": env,
                "resources": {"requests": {"cpu": number(o.cpu), "memoryInGB": number(o.memory_gb)}},
                "livenessProbe": probe("/healthz", 10, 10),
                "readinessProbe": probe("/readyz", 5, 5),
            }
        }],
        "ipAddress": ip,
    });
    if let Some((server, user, password)) = &o.registry {
        props["imageRegistryCredentials"] = json!([{"server": server, "username": user, "password": password}]);
    }
    json!({
        "apiVersion": ACI_API_VERSION,
        "location": o.location,
        "name": svc.name,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "tags": tags,
        "properties": props,
    })
}

/// Writes `aci.yaml` into `dir`.
pub fn write_aci(svc: &Service, o: &AciOptions, dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    svc.check()?;
    o.check()?;
    out_dir(dir)?;
    let doc = aci_document(svc, o);
    // YAML 1.1 readers (the az CLI's PyYAML) take a bare 2025-09-01 for a date
    let yaml = serde_norway::to_string(&doc)?.replacen(
        &format!("apiVersion: {ACI_API_VERSION}\n"),
        &format!("apiVersion: '{ACI_API_VERSION}'\n"),
        1,
    );
    let text = format!(
        "# Azure Container Instances container group for weft model '{}'.\n# Apply: az container create --resource-group RG --file aci.yaml\n{yaml}",
        svc.model_name,
    );
    let secret = svc.api_key.is_some() || o.registry.is_some();
    Ok(vec![write(&dir.join("aci.yaml"), &text, secret)?])
}

// ---------------------------------------------------------------- AKS: `aks.rs`

pub use crate::aks::{AksOptions, Scale, aks_objects, write_aks};

// ---------------------------------------------------------------- IoT Edge

#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// IoT Edge runtime version of the system modules (for example 1.5).
    pub runtime_version: String,
    /// Host device nodes mapped into the module (FPGA boards, /dev/dri).
    pub device_nodes: Vec<String>,
    /// Host ports the module's gRPC and HTTP ports are published on.
    pub publish: bool,
    pub registry: Option<(String, String, String)>,
    pub module_name: String,
}

impl EdgeOptions {
    pub fn check(&self) -> Result<(), DeployError> {
        if !self
            .runtime_version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(DeployError::Invalid(format!(
                "--edge-version '{}' is not a version such as 1.5",
                self.runtime_version
            )));
        }
        for d in &self.device_nodes {
            if !d.starts_with("/dev/") || d.contains(char::is_whitespace) {
                return Err(DeployError::Invalid(format!(
                    "--device-node '{d}' is not a device path under /dev/"
                )));
            }
        }
        let m = &self.module_name;
        if m.is_empty() || m.len() > 64 || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(DeployError::Invalid(format!(
                "--module-name '{m}' must be 1-64 letters, digits, '-' or '_'"
            )));
        }
        Ok(())
    }
}

/// Docker create options of the weft module.
pub fn edge_create_options(svc: &Service, o: &EdgeOptions) -> Value {
    let ports = [svc.grpc_port, svc.http_port];
    let exposed: Map<String, Value> = ports.iter().map(|p| (format!("{p}/tcp"), json!({}))).collect();
    let mut host = json!({
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "ReadonlyRootfs": false,
        "Tmpfs": {"/tmp": "rw,size=256m"},
    });
    if o.publish {
        let bindings: Map<String, Value> = ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!([{"HostPort": p.to_string()}])))
            .collect();
        host["PortBindings"] = Value::Object(bindings);
    }
    if !o.device_nodes.is_empty() {
        host["Devices"] = json!(
            o.device_nodes
                .iter()
                .map(|d| json!({"PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm"}))
                .collect::<Vec<_>>()
        );
    }
    let labels: Map<String, Value> = svc.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "Cmd": svc.args(),
        "User": format!("{UID}:{UID}"),
        "ExposedPorts": exposed,
        "Labels": labels,
        "HostConfig": host,
    })
}

/// Splits a createOptions string into `createOptions`, `createOptions01`, ... of at most
/// 512 characters each, as IoT Edge requires.
pub fn split_create_options(s: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(512)
        .enumerate()
        .map(|(i, c)| {
            let key = if i == 0 {
                "createOptions".to_string()
            } else {
                format!("createOptions{i:02}")
            };
            (key, c.iter().collect())
        })
        .collect()
}

fn settings(image: &str, create: &str) -> Value {
    let mut m = Map::new();
    m.insert("image".into(), json!(image));
    for (k, v) in split_create_options(create) {
        m.insert(k, json!(v));
    }
    Value::Object(m)
}

/// The deployment manifest for `az iot edge set-modules --content`.
pub fn edge_document(svc: &Service, o: &EdgeOptions) -> Result<Value, DeployError> {
    let v = &o.runtime_version;
    let create = serde_json::to_string(&edge_create_options(svc, o))?;
    let hub_create = serde_json::to_string(&json!({"HostConfig": {"PortBindings": {
        "5671/tcp": [{"HostPort": "5671"}],
        "8883/tcp": [{"HostPort": "8883"}],
        "443/tcp": [{"HostPort": "443"}],
    }}}))?;
    let mut runtime_settings = json!({"minDockerVersion": "v1.25", "loggingOptions": ""});
    if let Some((server, user, password)) = &o.registry {
        let key: String = server.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        runtime_settings["registryCredentials"] =
            json!({ key: {"address": server, "username": user, "password": password} });
    }
    let mut module = json!({
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "startupOrder": 1,
        "settings": settings(&svc.image, &create),
    });
    if let Some(k) = &svc.api_key {
        module["env"] = json!({KEYS_ENV: {"value": k}});
    }
    let m = &o.module_name;
    Ok(json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": runtime_settings},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": settings(&format!("mcr.microsoft.com/azureiotedge-agent:{v}"), "{}")},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "startupOrder": 0,
                            "settings": settings(&format!("mcr.microsoft.com/azureiotedge-hub:{v}"), &hub_create)},
            },
            "modules": {m.clone(): module},
        }},
        "$edgeHub": {"properties.desired": {
            "schemaVersion": "1.1",
            "routes": {format!("{m}ToUpstream"): format!("FROM /messages/modules/{m}/outputs/* INTO $upstream")},
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
        }},
    }}))
}

/// Writes `deployment.json` into `dir`.
pub fn write_edge(svc: &Service, o: &EdgeOptions, dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    svc.check()?;
    o.check()?;
    out_dir(dir)?;
    let doc = edge_document(svc, o)?;
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    let secret = svc.api_key.is_some() || o.registry.is_some();
    Ok(vec![write(&dir.join("deployment.json"), &text, secret)?])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn svc() -> Service {
        Service {
            name: "weft-fashion".into(),
            model_name: "fashion".into(),
            image: "example.azurecr.io/weft/fashion:1".into(),
            grpc_port: 50051,
            http_port: 8080,
            api_key: Some("k1".into()),
            serve_args: vec![],
            labels: vec![("io.weft.model.precision".into(), "int8".into())],
        }
    }

    #[test]
    fn create_options_split_at_512_and_rejoin() {
        let long = "x".repeat(1100);
        let parts = split_create_options(&long);
        let keys: Vec<&str> = parts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["createOptions", "createOptions01", "createOptions02"]);
        assert!(parts.iter().all(|(_, v)| v.chars().count() <= 512));
        assert_eq!(parts.iter().map(|(_, v)| v.as_str()).collect::<String>(), long);
    }

    #[test]
    fn aci_keys_are_secure_values_and_whole_cpus_integers() {
        let o = AciOptions {
            location: "eastus".into(),
            cpu: 2.0,
            memory_gb: 1.5,
            dns_label: Some("weft-demo".into()),
            ip_type: "Public".into(),
            restart_policy: "Always".into(),
            registry: None,
        };
        let d = aci_document(&svc(), &o);
        let c = &d["properties"]["containers"][0]["properties"];
        assert_eq!(c["environmentVariables"][0]["secureValue"], "k1");
        assert!(c["environmentVariables"][0].get("value").is_none());
        assert!(c["resources"]["requests"]["cpu"].is_i64());
        assert!(c["resources"]["requests"]["memoryInGB"].is_f64());
    }
}
