//! `weft image build|dockerfile` and `weft deploy aci|aks|edge|local`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use weft_deploy::image::{self, Base, ImageOptions};
use weft_deploy::local::{self, LocalOptions, Runtime};
use weft_deploy::targets::{self, AciOptions, AksOptions, EdgeOptions, Scale, Service};
use weft_deploy::validate;

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an OCI image archive (no container daemon): weft, the package, PoCL, a non-root user.
    Build(ImageBuildArgs),
    /// Write a Dockerfile and its build context (for Docker or a cloud build service).
    Dockerfile(DockerfileArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImageCommon {
    /// The package to put in the image.
    pub model: PathBuf,
    /// Model name on the wire (default: the package's file name without .weft).
    #[arg(long)]
    pub model_name: Option<String>,
    /// gRPC port the service listens on inside the container.
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// HTTP port (/metrics, /healthz, /readyz) inside the container.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Extra image label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Debian packages of the base (default: ocl-icd-libopencl1 pocl-opencl-icd; repeatable).
    #[arg(long = "base-package")]
    pub base_packages: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ImageBuildArgs {
    #[command(flatten)]
    pub common: ImageCommon,
    /// Image reference recorded in the archive, NAME:TAG.
    #[arg(long)]
    pub tag: String,
    /// Output archive (oci-archive).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The weft binary to put in the image (default: this one).
    #[arg(long)]
    pub weft_binary: Option<PathBuf>,
    /// Keep debug information in the binary.
    #[arg(long)]
    pub no_strip: bool,
    /// Use this root filesystem (directory or uncompressed tar) instead of debootstrap.
    #[arg(long)]
    pub base_rootfs: Option<PathBuf>,
    /// Debian suite for debootstrap.
    #[arg(long, default_value = image::DEFAULT_SUITE)]
    pub debian_suite: String,
    /// Debian mirror for debootstrap.
    #[arg(long, default_value = image::DEFAULT_MIRROR)]
    pub debian_mirror: String,
}

#[derive(clap::Args, Debug)]
pub struct DockerfileArgs {
    #[command(flatten)]
    pub common: ImageCommon,
    /// Directory for the Dockerfile and its build context (weft and the package).
    #[arg(long, default_value = "weft-image")]
    pub out: PathBuf,
    /// Base image of the Dockerfile.
    #[arg(long, default_value = "debian:bookworm-slim")]
    pub base_image: String,
    /// The weft binary to copy into the context (default: this one).
    #[arg(long)]
    pub weft_binary: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum DeployCommand {
    /// Azure Container Instances: container group YAML for `az container create --file`.
    Aci(AciArgs),
    /// Azure Kubernetes Service: a kustomization for `kubectl apply -k`.
    Aks(AksArgs),
    /// Azure IoT Edge: a deployment manifest for `az iot edge set-modules`.
    Edge(EdgeArgs),
    /// This machine: the image under podman, or a plain process; `--down` stops it.
    Local(LocalArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TargetCommon {
    /// The package being deployed (must be the one in the image).
    pub model: PathBuf,
    /// Image reference, for example myregistry.azurecr.io/weft/fashion:1.
    #[arg(long)]
    pub image: String,
    /// Resource name (default: weft-MODEL).
    #[arg(long)]
    pub name: Option<String>,
    /// Model name on the wire (default: the package's file name without .weft).
    #[arg(long)]
    pub model_name: Option<String>,
    /// gRPC port.
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// HTTP port (/metrics, /healthz, /readyz).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Environment variable holding the API key clients must send (read now, written as a
    /// secret). Without it (and without --no-auth) a key is generated into the artifacts.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Serve without an API key (every target requires one otherwise).
    #[arg(long, conflicts_with = "api_key_env")]
    pub no_auth: bool,
    /// An extra `weft serve` flag (repeatable), for example --serve-arg=--max-batch=16.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Directory for the files.
    #[arg(long)]
    pub out: PathBuf,
    /// Apply with the platform's CLI when installed (else print the command).
    #[arg(long)]
    pub apply: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Private registry server (with --registry-username and --registry-password-env).
    #[arg(long, requires_all = ["registry_username", "registry_password_env"])]
    pub registry_server: Option<String>,
    /// User name for --registry-server.
    #[arg(long, requires = "registry_server")]
    pub registry_username: Option<String>,
    /// Environment variable holding the registry password.
    #[arg(long, requires = "registry_server")]
    pub registry_password_env: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AciArgs {
    #[command(flatten)]
    pub common: TargetCommon,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// CPU cores (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub cpu: f64,
    /// Memory in GB (fractions allowed).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub memory_gb: f64,
    /// DNS name label: NAME.REGION.azurecontainer.io.
    #[arg(long)]
    pub dns_label: Option<String>,
    /// Azure region of the container group.
    #[arg(long, default_value = "eastus")]
    pub location: String,
    /// Always, OnFailure or Never.
    #[arg(long, default_value = "Always")]
    pub restart_policy: String,
    /// Public or Private.
    #[arg(long, default_value = "Public")]
    pub ip_type: String,
    /// Resource group for --apply.
    #[arg(long)]
    pub resource_group: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AksArgs {
    #[command(flatten)]
    pub common: TargetCommon,
    /// Kubernetes namespace of every object written.
    #[arg(long, default_value = "weft")]
    pub namespace: String,
    /// A fixed replica count (no autoscaler).
    #[arg(long, conflicts_with_all = ["min_replicas", "max_replicas", "target_cpu_percent"])]
    pub replicas: Option<u32>,
    /// Fewest replicas the HorizontalPodAutoscaler keeps.
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    /// Most replicas the HorizontalPodAutoscaler starts.
    #[arg(long, default_value_t = 10)]
    pub max_replicas: u32,
    /// Average CPU use (percent of the request) the autoscaler aims for.
    #[arg(long, default_value_t = 70)]
    pub target_cpu_percent: u32,
    /// CPU per pod (Kubernetes quantity).
    #[arg(long, default_value = "2")]
    pub cpu: String,
    /// Memory per pod (Kubernetes quantity).
    #[arg(long, default_value = "4Gi")]
    pub memory: String,
    /// Extended resource per pod, NAME=COUNT (e.g. microsoft.com/fpga_catapult=1; repeatable).
    #[arg(long = "fpga-resource")]
    pub fpga_resources: Vec<String>,
    /// Node selector KEY=VALUE (repeatable).
    #[arg(long = "node-selector")]
    pub node_selectors: Vec<String>,
    /// ClusterIP or LoadBalancer.
    #[arg(long, default_value = "ClusterIP")]
    pub service_type: String,
    /// `weft serve --device` in the pods.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// `weft serve --max-batch` in the pods: most requests joined into one device run.
    #[arg(long, default_value_t = 8)]
    pub max_batch: u32,
    /// `weft serve --queue-depth` in the pods: requests waiting per model before new ones
    /// are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 64)]
    pub queue_depth: u32,
    /// `weft serve --max-queue-delay-us` in the pods: how long a request waits for others to
    /// join its batch.
    #[arg(long, default_value_t = 2000)]
    pub max_queue_delay_us: u64,
}

#[derive(clap::Args, Debug)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub common: TargetCommon,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Module name in the manifest.
    #[arg(long, default_value = "weft")]
    pub module_name: String,
    /// Host device node mapped into the module (an FPGA board; repeatable).
    #[arg(long = "device-node")]
    pub device_nodes: Vec<String>,
    /// Do not publish the ports on the device's host network.
    #[arg(long)]
    pub no_publish: bool,
    /// Publish the ports even with --no-auth (refused otherwise).
    #[arg(long)]
    pub publish_without_auth: bool,
    /// IoT Edge runtime version of edgeAgent and edgeHub.
    #[arg(long, default_value = "1.5")]
    pub edge_version: String,
    /// IoT hub name for --apply.
    #[arg(long)]
    pub hub: Option<String>,
    /// Edge device id for --apply.
    #[arg(long)]
    pub device_id: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// The package to serve (default: the embedded default model).
    pub model: Option<PathBuf>,
    /// podman (the image in a container) or process (a background `weft serve`).
    #[arg(long, default_value = "podman")]
    pub runtime: Runtime,
    /// Stop the local deployment named by --name.
    #[arg(long)]
    pub down: bool,
    /// Name of the local deployment.
    #[arg(long, default_value = "weft-local")]
    pub name: String,
    /// gRPC port on this machine.
    #[arg(long, default_value_t = 50051)]
    pub port: u16,
    /// HTTP port on this machine.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Address the ports are published on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// podman: an image already in podman's storage.
    #[arg(long, conflicts_with = "image_archive")]
    pub image: Option<String>,
    /// podman: an image archive to load (from `weft image build`); with neither, one is built.
    #[arg(long)]
    pub image_archive: Option<PathBuf>,
    /// Environment variable holding the API key clients must send.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// An extra `weft serve` flag (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,
    /// Seconds to wait until the service is ready.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

/// weft's cache directory (program cache, image base layers, local deployments).
pub fn cache_dir() -> PathBuf {
    weft_opencl::cache_dir()
}

/// A DNS-label form of a model name.
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-').to_string();
    let mut out = if out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out
    } else {
        format!("m-{out}")
    };
    out.truncate(58);
    out.trim_end_matches('-').to_string()
}

fn model_name(model: &Path, given: &Option<String>) -> anyhow::Result<String> {
    let name = match given {
        Some(n) => n.clone(),
        None => model
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "model".into()),
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
        bail!("model name '{name}' may hold only letters, digits, '-', '_' and '.' (use --model-name)");
    }
    Ok(name)
}

fn labels(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("--label takes KEY=VALUE, got '{p}'"))
        })
        .collect()
}

fn weft_binary(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().context("finding the weft binary (give --weft-binary)"),
    }
}

fn image_options(c: &ImageCommon, tag: &str, binary: PathBuf, strip: bool, base: Base) -> anyhow::Result<ImageOptions> {
    validate::ports(c.port, c.http_port)?;
    Ok(ImageOptions {
        tag: tag.to_string(),
        package: c.model.clone(),
        model_name: model_name(&c.model, &c.model_name)?,
        weft_binary: binary,
        strip,
        base,
        labels: labels(&c.labels)?,
        grpc_port: c.port,
        http_port: c.http_port,
        cache_dir: cache_dir().join("images"),
    })
}

fn debootstrap_base(c: &ImageCommon, suite: &str, mirror: &str) -> Base {
    let packages = if c.base_packages.is_empty() {
        image::BASE_PACKAGES.iter().map(|s| s.to_string()).collect()
    } else {
        c.base_packages.clone()
    };
    Base::Debootstrap {
        suite: suite.to_string(),
        mirror: mirror.to_string(),
        packages,
    }
}

pub fn image(cmd: &ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(a) => {
            let base = match &a.base_rootfs {
                Some(p) => Base::Rootfs(p.clone()),
                None => debootstrap_base(&a.common, &a.debian_suite, &a.debian_mirror),
            };
            let opts = image_options(&a.common, &a.tag, weft_binary(&a.weft_binary)?, !a.no_strip, base)?;
            let start = std::time::Instant::now();
            let built = image::build(&opts, &a.output, &mut |m| eprintln!("weft image: {m}"))?;
            println!(
                "built {} ({}) in {:.1} s: {} bytes, manifest {}, base layer {}",
                a.output.display(),
                a.tag,
                start.elapsed().as_secs_f64(),
                built.archive_bytes,
                built.manifest_digest,
                if built.base_cached { "cached" } else { "built" }
            );
            println!(
                "load it: podman load -i {}   (or: skopeo copy oci-archive:{} docker://REGISTRY/{})",
                a.output.display(),
                a.output.display(),
                a.tag
            );
            Ok(())
        }
        ImageCommand::Dockerfile(a) => {
            let binary = weft_binary(&a.weft_binary)?;
            let base = debootstrap_base(&a.common, image::DEFAULT_SUITE, image::DEFAULT_MIRROR);
            let opts = image_options(&a.common, "weft:dockerfile", binary.clone(), false, base)?;
            let text = image::dockerfile(&opts, &a.base_image)?;
            std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
            std::fs::write(a.out.join("Dockerfile"), text)?;
            std::fs::copy(&binary, a.out.join("weft")).with_context(|| format!("copying {}", binary.display()))?;
            std::fs::copy(&a.common.model, a.out.join(format!("{}.weft", opts.model_name)))
                .with_context(|| format!("copying {}", a.common.model.display()))?;
            println!(
                "wrote {}/Dockerfile with its build context; build: docker build -t IMAGE {}",
                a.out.display(),
                a.out.display()
            );
            Ok(())
        }
    }
}

fn read_env(flag: &str, var: &str) -> anyhow::Result<String> {
    validate::env_name(flag, var)?;
    let v = std::env::var(var).with_context(|| format!("{flag} {var}: the variable is not set"))?;
    if v.trim().is_empty() {
        bail!("{flag} {var}: the variable is empty");
    }
    Ok(v)
}

fn service(c: &TargetCommon, api_key: Option<String>) -> anyhow::Result<Service> {
    let package = weft_compile::Package::load(&c.model).with_context(|| format!("loading {}", c.model.display()))?;
    let model = model_name(&c.model, &c.model_name)?;
    let name = c.name.clone().unwrap_or_else(|| format!("weft-{}", dns_name(&model)));
    Ok(Service {
        name,
        model_name: model.clone(),
        image: c.image.clone(),
        grpc_port: c.port,
        http_port: c.http_port,
        api_key,
        serve_args: c.serve_args.clone(),
        labels: vec![
            ("io.weft.model".into(), model),
            ("io.weft.model.precision".into(), package.precision.to_string()),
        ],
    })
}

fn registry(r: &RegistryArgs) -> anyhow::Result<Option<(String, String, String)>> {
    match (&r.registry_server, &r.registry_username, &r.registry_password_env) {
        (Some(s), Some(u), Some(p)) => Ok(Some((s.clone(), u.clone(), read_env("--registry-password-env", p)?))),
        (None, None, None) => Ok(None),
        _ => bail!("--registry-server, --registry-username and --registry-password-env go together"),
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Runs `cmd` when its tool is installed, else prints it.
fn apply(cmd: &[String]) -> anyhow::Result<()> {
    let shown = cmd.join(" ");
    if !on_path(&cmd[0]) {
        println!("{} is not installed here; to apply, run:\n  {shown}", cmd[0]);
        return Ok(());
    }
    println!("running: {shown}");
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .with_context(|| format!("running {}", cmd[0]))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

fn apply_or_show(run: bool, cmd: &[&str]) -> anyhow::Result<()> {
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    if run {
        apply(&cmd)
    } else {
        println!("apply: {}", cmd.join(" "));
        Ok(())
    }
}

fn optional_key(var: &Option<String>) -> anyhow::Result<Option<String>> {
    var.as_deref().map(|v| read_env("--api-key-env", v)).transpose()
}

fn report(files: &[PathBuf]) {
    for f in files {
        println!("wrote {}", f.display());
    }
}

pub fn deploy(cmd: &DeployCommand) -> anyhow::Result<()> {
    match cmd {
        DeployCommand::Aci(a) => {
            let (key, auth) = target_key(&a.common)?;
            if a.common.apply && a.resource_group.is_none() {
                bail!("--apply needs --resource-group");
            }
            let svc = service(&a.common, key)?;
            let o = AciOptions {
                location: a.location.clone(),
                cpu: a.cpu,
                memory_gb: a.memory_gb,
                dns_label: a.dns_label.clone(),
                ip_type: a.ip_type.clone(),
                restart_policy: a.restart_policy.clone(),
                registry: registry(&a.registry)?,
            };
            let files = targets::write_aci(&svc, &o, &a.common.out)?;
            report(&files);
            say_auth(
                auth,
                "aci.yaml's secure environment variable WEFT_API_KEYS",
                &a.common.out,
            );
            let rg = a.resource_group.as_deref().unwrap_or("RG");
            let file = files[0].to_string_lossy();
            apply_or_show(
                a.common.apply,
                &["az", "container", "create", "--resource-group", rg, "--file", &file],
            )
        }
        DeployCommand::Aks(a) => {
            let (key, auth) = target_key(&a.common)?;
            let svc = service(&a.common, key)?;
            let o = AksOptions {
                namespace: a.namespace.clone(),
                scale: match a.replicas {
                    Some(r) => Scale::Fixed(r),
                    None => Scale::Auto {
                        min: a.min_replicas,
                        max: a.max_replicas,
                        target_cpu_percent: a.target_cpu_percent,
                    },
                },
                cpu: a.cpu.clone(),
                memory: a.memory.clone(),
                fpga_resources: a
                    .fpga_resources
                    .iter()
                    .map(|r| validate::extended_resource(r))
                    .collect::<Result<_, _>>()?,
                node_selector: a
                    .node_selectors
                    .iter()
                    .map(|s| validate::node_selector(s))
                    .collect::<Result<_, _>>()?,
                service_type: a.service_type.clone(),
                device: a.device.clone(),
                max_batch: a.max_batch,
                queue_depth: a.queue_depth,
                max_queue_delay_us: a.max_queue_delay_us,
                termination_grace_seconds: 45,
            };
            let files = targets::write_aks(&svc, &o, &a.common.out)?;
            report(&files);
            say_auth(auth, "secret.yaml", &a.common.out);
            let dir = a.common.out.to_string_lossy();
            apply_or_show(a.common.apply, &["kubectl", "apply", "-k", &dir])
        }
        DeployCommand::Edge(a) => {
            let (key, auth) = target_key(&a.common)?;
            if key.is_none() && !a.no_publish && !a.publish_without_auth {
                bail!(
                    "--no-auth with ports published on the device's host network would let anyone on that network infer: add --no-publish (modules on the device reach it through the edge network) or --publish-without-auth"
                );
            }
            if a.common.apply && (a.hub.is_none() || a.device_id.is_none()) {
                bail!("--apply needs --hub and --device-id");
            }
            let mut svc = service(&a.common, key)?;
            svc.name = a.common.name.clone().unwrap_or_else(|| svc.name.clone());
            let o = EdgeOptions {
                runtime_version: a.edge_version.clone(),
                device_nodes: a.device_nodes.clone(),
                publish: !a.no_publish,
                registry: registry(&a.registry)?,
                module_name: a.module_name.clone(),
            };
            let files = targets::write_edge(&svc, &o, &a.common.out)?;
            report(&files);
            say_auth(
                auth,
                "deployment.json's module environment (WEFT_API_KEYS)",
                &a.common.out,
            );
            println!(
                "ports: {}",
                if o.publish {
                    "published on the device's host network"
                } else {
                    "not published (reachable on the edge network only)"
                }
            );
            let (hub, device) = (
                a.hub.as_deref().unwrap_or("HUB"),
                a.device_id.as_deref().unwrap_or("DEVICE"),
            );
            let file = files[0].to_string_lossy();
            let cmd = [
                "az",
                "iot",
                "edge",
                "set-modules",
                "--hub-name",
                hub,
                "--device-id",
                device,
                "--content",
                &file,
            ];
            apply_or_show(a.common.apply, &cmd)
        }
        DeployCommand::Local(a) => local_deploy(a),
    }
}

/// Where a target's API key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    FromEnv,
    Generated,
    None,
}

/// One rule for every target: the key from --api-key-env, none with --no-auth, otherwise
/// a generated one.
fn target_key(c: &TargetCommon) -> anyhow::Result<(Option<String>, Auth)> {
    Ok(match (&c.api_key_env, c.no_auth) {
        (Some(v), _) => (Some(read_env("--api-key-env", v)?), Auth::FromEnv),
        (None, true) => (None, Auth::None),
        (None, false) => (Some(random_key()?), Auth::Generated),
    })
}

/// Says what a deployer did about keys.
fn say_auth(auth: Auth, place: &str, out: &std::path::Path) {
    match auth {
        Auth::FromEnv => println!("auth: the API key from --api-key-env is in {place}"),
        Auth::Generated => println!(
            "auth: generated an API key; it is in {place} under {} (clients send it as `authorization: Bearer KEY`; --api-key-env VAR to choose it, --no-auth for none)",
            out.display()
        ),
        Auth::None => println!("auth: none (--no-auth): the service answers anyone who reaches it"),
    }
}

fn random_key() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for an API key (or give --api-key-env / --no-auth)")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn local_deploy(a: &LocalArgs) -> anyhow::Result<()> {
    let state_dir = cache_dir().join("local");
    if a.down {
        let d = local::down(&a.name, &state_dir)?;
        println!("stopped '{}' ({} {})", d.name, d.runtime, d.id);
        return Ok(());
    }
    let key = optional_key(&a.api_key_env)?;
    let binary = std::env::current_exe().context("finding the weft binary")?;
    // The package: the one given, or the embedded default written to the cache.
    let package = match &a.model {
        Some(p) => {
            weft_compile::Package::load(p).with_context(|| format!("loading {}", p.display()))?;
            p.clone()
        }
        None => {
            let dir = cache_dir().join("local");
            std::fs::create_dir_all(&dir)?;
            let p = dir.join(format!("{}.weft", crate::serve::DEFAULT_MODEL_NAME));
            std::fs::write(&p, crate::serve::DEFAULT_MODEL)?;
            p
        }
    };
    let mut archive = a.image_archive.clone();
    if a.runtime == Runtime::Podman && a.image.is_none() && archive.is_none() {
        let name = model_name(&package, &None)?;
        let tag = format!("localhost/weft-{}:local", dns_name(&name));
        let out = cache_dir()
            .join("images")
            .join(format!("{}-local.tar", dns_name(&name)));
        let opts = ImageOptions {
            tag: tag.clone(),
            package: package.clone(),
            model_name: name,
            weft_binary: binary.clone(),
            strip: true,
            base: Base::default(),
            labels: vec![],
            grpc_port: 50051,
            http_port: 8080,
            cache_dir: cache_dir().join("images"),
        };
        eprintln!("weft deploy local: building {tag}");
        image::build(&opts, &out, &mut |m| eprintln!("weft image: {m}"))?;
        archive = Some(out);
    }
    let o = LocalOptions {
        name: a.name.clone(),
        runtime: a.runtime,
        package,
        image: a.image.clone(),
        image_archive: archive,
        weft_binary: binary,
        host: a.host.clone(),
        grpc_port: a.port,
        http_port: a.http_port,
        api_key: key,
        serve_args: a.serve_args.clone(),
        state_dir,
        timeout: Duration::from_secs(a.timeout),
    };
    let d = local::up(&o, &mut |m| eprintln!("weft deploy local: {m}"))?;
    // the device each model runs on, said where the user looks
    for line in &d.devices {
        println!("serving {line}");
    }
    println!(
        "ready: grpc {} (KServe v2 and TensorFlow Serving), http://{}/metrics ({} {}); stop: weft deploy local --down --name {}",
        d.grpc, d.http, d.runtime, d.id, d.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_from_model_names() {
        assert_eq!(dns_name("fashion"), "fashion");
        assert_eq!(dns_name("Fashion_ResNet.v2"), "fashion-resnet-v2");
        assert_eq!(dns_name("50layers"), "m-50layers");
        assert!(validate::dns_label("--name", &format!("weft-{}", dns_name(&"x".repeat(80)))).is_ok());
    }
}
