//! Azure Kubernetes Service: a kustomization of typed Kubernetes objects (k8s-openapi,
//! API version 1.33 and later): Namespace, Secret, ConfigMap, Deployment, two Services, an
//! optional HorizontalPodAutoscaler and a PodDisruptionBudget.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, ExecAction, GRPCAction, HTTPGetAction, Lifecycle, LifecycleHandler, Namespace,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service as K8sService, ServicePort, ServiceSpec,
    Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::error::DeployError;
use crate::image::{self, UID};
use crate::targets::{KEYS_ENV, Service, out_dir, write};
use crate::validate;

#[derive(Clone, Debug)]
pub enum Scale {
    Fixed(u32),
    Auto {
        min: u32,
        max: u32,
        target_cpu_percent: u32,
    },
}

#[derive(Clone, Debug)]
pub struct AksOptions {
    pub namespace: String,
    pub scale: Scale,
    /// CPU and memory quantities (requests and limits).
    pub cpu: String,
    pub memory: String,
    /// Extended resources (FPGA) requested per pod.
    pub fpga_resources: Vec<(String, u64)>,
    pub node_selector: Vec<(String, String)>,
    /// `ClusterIP` or `LoadBalancer`.
    pub service_type: String,
    pub device: String,
    pub max_batch: u32,
    pub queue_depth: u32,
    pub max_queue_delay_us: u64,
    pub termination_grace_seconds: u32,
}

impl AksOptions {
    pub fn check(&self) -> Result<(), DeployError> {
        validate::dns_label("--namespace", &self.namespace)?;
        validate::cpu_quantity("--cpu", &self.cpu)?;
        validate::memory_quantity("--memory", &self.memory)?;
        match self.scale {
            Scale::Fixed(0) => return Err(DeployError::Invalid("--replicas must be at least 1".into())),
            Scale::Auto {
                min,
                max,
                target_cpu_percent,
            } => {
                if min == 0 || max < min {
                    return Err(DeployError::Invalid(format!(
                        "--min-replicas ({min}) must be at least 1 and at most --max-replicas ({max})"
                    )));
                }
                if !(1..=100).contains(&target_cpu_percent) {
                    return Err(DeployError::Invalid(format!(
                        "--target-cpu-percent must be between 1 and 100, got {target_cpu_percent}"
                    )));
                }
            }
            Scale::Fixed(_) => {}
        }
        if !["ClusterIP", "LoadBalancer"].contains(&self.service_type.as_str()) {
            return Err(DeployError::Invalid(format!(
                "--service-type must be ClusterIP or LoadBalancer, got '{}'",
                self.service_type
            )));
        }
        if self.max_batch == 0 || self.queue_depth == 0 {
            return Err(DeployError::Invalid(
                "--max-batch and --queue-depth must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn map<K: ToString, V: ToString>(pairs: impl IntoIterator<Item = (K, V)>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A port number as Kubernetes' int32 (ports are u16, so it always fits).
fn port(p: u16) -> i32 {
    i32::from(p)
}

/// A count as int32, saturating (options are checked far below the limit).
fn int32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_value(obj: &impl serde::Serialize) -> Value {
    // Serializing a k8s-openapi object into a `Value` cannot fail: every field is a string,
    // number, list or map with string keys.
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// The Kubernetes objects, in apply order, with their file names.
pub fn aks_objects(svc: &Service, o: &AksOptions) -> Vec<(String, Value)> {
    let name = &svc.name;
    let selector = map([
        ("app.kubernetes.io/name", "weft"),
        ("app.kubernetes.io/instance", name.as_str()),
    ]);
    let mut labels = selector.clone();
    labels.insert("app.kubernetes.io/component".into(), "inference".into());
    labels.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
    for (k, v) in &svc.labels {
        if let Some(short) = k.strip_prefix("io.weft.")
            && validate::label_value(v)
        {
            labels.insert(format!("weft.io/{}", short.replace('.', "-")), v.clone());
        }
    }
    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_string()),
        namespace: Some(o.namespace.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let match_labels = || LabelSelector {
        match_labels: Some(selector.clone()),
        ..Default::default()
    };
    let mut objects = vec![];
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(o.namespace.clone()),
            labels: Some(map([("app.kubernetes.io/part-of", "weft")])),
            ..Default::default()
        },
        ..Default::default()
    };
    objects.push(("namespace.yaml".to_string(), to_value(&namespace)));
    let secret_name = format!("{name}-keys");
    if let Some(k) = &svc.api_key {
        let secret = Secret {
            metadata: meta(&secret_name),
            type_: Some("Opaque".into()),
            string_data: Some(map([("api-keys", k)])),
            ..Default::default()
        };
        objects.push(("secret.yaml".to_string(), to_value(&secret)));
    }
    let config_name = format!("{name}-config");
    let config = ConfigMap {
        metadata: meta(&config_name),
        data: Some(map([
            ("WEFT_DEVICE", o.device.clone()),
            ("WEFT_MAX_BATCH", o.max_batch.to_string()),
            ("WEFT_QUEUE_DEPTH", o.queue_depth.to_string()),
            ("WEFT_MAX_QUEUE_DELAY_US", o.max_queue_delay_us.to_string()),
        ])),
        ..Default::default()
    };
    objects.push(("configmap.yaml".to_string(), to_value(&config)));

    let mut args = image::serve_args(&svc.model_name, svc.grpc_port, svc.http_port);
    for (flag, var) in [
        ("--device", "WEFT_DEVICE"),
        ("--max-batch", "WEFT_MAX_BATCH"),
        ("--queue-depth", "WEFT_QUEUE_DEPTH"),
        ("--max-queue-delay-us", "WEFT_MAX_QUEUE_DELAY_US"),
    ] {
        args.push(flag.into());
        args.push(format!("$({var})"));
    }
    args.extend(svc.serve_args.iter().cloned());
    let env = svc.api_key.as_ref().map(|_| {
        vec![EnvVar {
            name: KEYS_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name.clone(),
                    key: "api-keys".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let mut resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(o.cpu.clone())),
        ("memory".to_string(), Quantity(o.memory.clone())),
    ]);
    for (r, n) in &o.fpga_resources {
        resources.insert(r.clone(), Quantity(n.to_string()));
    }
    let grpc_probe = |period: i32, failures: i32| Probe {
        grpc: Some(GRPCAction {
            port: port(svc.grpc_port),
            service: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let container = Container {
        name: "weft".into(),
        image: Some(svc.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: port(svc.grpc_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: port(svc.http_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_name,
                optional: None,
            }),
            ..Default::default()
        }]),
        env,
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        // model load and the first OpenCL program build can take a while
        startup_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(60),
            ..Default::default()
        }),
        liveness_probe: Some(grpc_probe(10, 3)),
        readiness_probe: Some(grpc_probe(5, 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".into(), "5".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "cache".into(),
                mount_path: image::CACHE_DIR.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let empty_dir = |n: &str| Volume {
        name: n.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let uid = i64::from(UID);
    let pod_spec = PodSpec {
        termination_grace_period_seconds: Some(i64::from(o.termination_grace_seconds)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            fs_group: Some(uid),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(match_labels()),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![empty_dir("cache"), empty_dir("tmp")]),
        node_selector: (!o.node_selector.is_empty()).then(|| map(o.node_selector.iter().cloned())),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(name),
        spec: Some(DeploymentSpec {
            replicas: match o.scale {
                Scale::Fixed(r) => Some(int32(r)),
                Scale::Auto { .. } => None,
            },
            revision_history_limit: Some(5),
            selector: match_labels(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(map([
                        ("prometheus.io/scrape", "true".to_string()),
                        ("prometheus.io/port", svc.http_port.to_string()),
                        ("prometheus.io/path", "/metrics".to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.push(("deployment.yaml".to_string(), to_value(&deployment)));
    let service_port = |n: &str, p: u16| ServicePort {
        name: Some(n.into()),
        port: port(p),
        target_port: Some(IntOrString::String(n.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(n.into()),
        ..Default::default()
    };
    let service = K8sService {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            type_: Some(o.service_type.clone()),
            selector: Some(selector.clone()),
            ports: Some(vec![
                service_port("grpc", svc.grpc_port),
                service_port("http", svc.http_port),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.push(("service.yaml".to_string(), to_value(&service)));
    // gRPC keeps one HTTP/2 connection per client: a headless Service lets clients
    // balance across pods themselves (dns:///NAME-headless.NAMESPACE.svc:PORT).
    let headless = K8sService {
        metadata: meta(&format!("{name}-headless")),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector.clone()),
            ports: Some(vec![service_port("grpc", svc.grpc_port)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.push(("service-headless.yaml".to_string(), to_value(&headless)));
    if let Scale::Auto {
        min,
        max,
        target_cpu_percent,
    } = o.scale
    {
        let hpa = HorizontalPodAutoscaler {
            metadata: meta(name),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: name.clone(),
                },
                min_replicas: Some(int32(min)),
                max_replicas: int32(max),
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(int32(target_cpu_percent)),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]),
                behavior: Some(HorizontalPodAutoscalerBehavior {
                    scale_down: Some(HPAScalingRules {
                        stabilization_window_seconds: Some(300),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        objects.push(("hpa.yaml".to_string(), to_value(&hpa)));
    }
    let pdb = PodDisruptionBudget {
        metadata: meta(name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(match_labels()),
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.push(("pdb.yaml".to_string(), to_value(&pdb)));
    objects
}

/// Writes the objects and `kustomization.yaml` into `dir` (`kubectl apply -k DIR`).
pub fn write_aks(svc: &Service, o: &AksOptions, dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    svc.check()?;
    o.check()?;
    out_dir(dir)?;
    let objects = aks_objects(svc, o);
    let mut written = vec![];
    for (file, obj) in &objects {
        let text = serde_norway::to_string(obj)?;
        written.push(write(&dir.join(file), &text, file == "secret.yaml")?);
    }
    // Kustomize's own file is not a Kubernetes API object, so k8s-openapi has no type for it.
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": objects.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
    });
    let text = format!(
        "# weft model '{}' on Kubernetes (AKS). Apply: kubectl apply -k {}\n{}",
        svc.model_name,
        dir.display(),
        serde_norway::to_string(&kustomization)?
    );
    written.push(write(&dir.join("kustomization.yaml"), &text, false)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::tests::svc;

    fn options(scale: Scale) -> AksOptions {
        AksOptions {
            namespace: "weft".into(),
            scale,
            cpu: "2".into(),
            memory: "4Gi".into(),
            fpga_resources: vec![("microsoft.com/fpga_catapult".into(), 1)],
            node_selector: vec![],
            service_type: "ClusterIP".into(),
            device: "auto".into(),
            max_batch: 8,
            queue_depth: 64,
            max_queue_delay_us: 2000,
            termination_grace_seconds: 45,
        }
    }

    fn find<'a>(objs: &'a [(String, Value)], file: &str) -> &'a Value {
        objs.iter()
            .find(|(f, _)| f == file)
            .map(|(_, v)| v)
            .unwrap_or(&Value::Null)
    }

    #[test]
    fn aks_autoscaled_has_hpa_and_no_replicas() {
        let auto = Scale::Auto {
            min: 1,
            max: 10,
            target_cpu_percent: 70,
        };
        let objs = aks_objects(&svc(), &options(auto));
        let kinds: Vec<&str> = objs.iter().filter_map(|(_, v)| v["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "Secret",
                "ConfigMap",
                "Deployment",
                "Service",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget"
            ]
        );
        let dep = find(&objs, "deployment.yaml");
        assert_eq!(dep["apiVersion"], "apps/v1");
        assert!(dep["spec"].get("replicas").is_none());
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["microsoft.com/fpga_catapult"], "1");
        assert_eq!(c["readinessProbe"]["grpc"]["port"], 50051);
        assert_eq!(find(&objs, "hpa.yaml")["apiVersion"], "autoscaling/v2");
    }

    #[test]
    fn fixed_replicas_and_no_key_means_no_secret() {
        let mut s = svc();
        s.api_key = None;
        let objs = aks_objects(&s, &options(Scale::Fixed(3)));
        assert_eq!(find(&objs, "deployment.yaml")["spec"]["replicas"], 3);
        assert!(objs.iter().all(|(f, _)| f != "secret.yaml" && f != "hpa.yaml"));
        let c = &find(&objs, "deployment.yaml")["spec"]["template"]["spec"]["containers"][0];
        assert!(c.get("env").is_none());
    }
}
