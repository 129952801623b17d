//! `weft deploy local`: the service on this machine, as a container under podman or as a
//! plain background process; waits until `/readyz` answers 200, records what it started
//! so `--down` can stop it.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::DeployError;
use crate::targets::KEYS_ENV;
use crate::validate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Podman,
    Process,
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "podman" => Ok(Runtime::Podman),
            "process" => Ok(Runtime::Process),
            other => Err(format!("unknown runtime '{other}' (podman, process)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Name of this local deployment (container name, state file).
    pub name: String,
    pub runtime: Runtime,
    /// The package (process runtime).
    pub package: PathBuf,
    /// Image reference to run (podman runtime); loaded from `image_archive` when given.
    pub image: Option<String>,
    pub image_archive: Option<PathBuf>,
    pub weft_binary: PathBuf,
    /// Host address the ports are published on.
    pub host: String,
    pub grpc_port: u16,
    pub http_port: u16,
    pub api_key: Option<String>,
    pub serve_args: Vec<String>,
    pub state_dir: PathBuf,
    pub timeout: Duration,
}

/// A running local deployment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    pub name: String,
    pub runtime: String,
    /// Process id (process runtime) or container name (podman).
    pub id: String,
    pub grpc: String,
    pub http: String,
    pub log: Option<PathBuf>,
    pub image: Option<String>,
    /// What `/readyz` said once ready: each model version and the device that runs it.
    #[serde(default)]
    pub devices: Vec<String>,
}

fn state_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// One HTTP GET; the status code and the body (up to 64 kB).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((status, body))
}

/// One HTTP GET; the status code.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn run_tool(tool: &str, args: &[&str]) -> Result<String, DeployError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| DeployError::tool(tool, format!("cannot run {tool}: {e}")))?;
    if !out.status.success() {
        return Err(DeployError::tool(
            tool,
            format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
        && fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Starts the deployment and waits until it is ready.
pub fn up(o: &LocalOptions, log: &mut dyn FnMut(&str)) -> Result<Deployment, DeployError> {
    validate::dns_label("--name", &o.name)?;
    validate::ports(o.grpc_port, o.http_port)?;
    fs::create_dir_all(&o.state_dir).map_err(|e| DeployError::io(&o.state_dir, e))?;
    let state = state_file(&o.state_dir, &o.name);
    if let Ok(text) = fs::read_to_string(&state)
        && let Ok(d) = serde_json::from_str::<Deployment>(&text)
        && still_running(&d)
    {
        return Err(DeployError::Invalid(format!(
            "a local deployment named '{}' is already running ({} {}, grpc {}); stop it with `weft deploy local --down --name {}`",
            d.name, d.runtime, d.id, d.grpc, d.name
        )));
    }
    let grpc = format!("{}:{}", o.host, o.grpc_port);
    let http = format!("{}:{}", o.host, o.http_port);
    if http_status(&http, "/healthz").is_some() {
        return Err(DeployError::Invalid(format!(
            "something already answers on {http}; choose other ports with --port and --http-port"
        )));
    }
    let d = match o.runtime {
        Runtime::Process => {
            let log_path = o.state_dir.join(format!("{}.log", o.name));
            let log_file = fs::File::create(&log_path).map_err(|e| DeployError::io(&log_path, e))?;
            let err_file = log_file.try_clone().map_err(|e| DeployError::io(&log_path, e))?;
            let mut cmd = Command::new(&o.weft_binary);
            cmd.arg("serve")
                .arg(&o.package)
                .args(["--host", &o.host, "--port", &o.grpc_port.to_string()])
                .args(["--http-port", &o.http_port.to_string()])
                .args(&o.serve_args)
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(err_file);
            if let Some(k) = &o.api_key {
                cmd.env(KEYS_ENV, k);
            }
            #[cfg(unix)]
            {
                use std::os::unix::process::CommandExt;
                // its own process group: it outlives this command and the terminal's signals
                cmd.process_group(0);
            }
            let child = cmd.spawn().map_err(|e| {
                DeployError::tool("weft serve", format!("cannot start {}: {e}", o.weft_binary.display()))
            })?;
            log(&format!(
                "started weft serve (pid {}), log {}",
                child.id(),
                log_path.display()
            ));
            Deployment {
                name: o.name.clone(),
                runtime: "process".into(),
                id: child.id().to_string(),
                grpc: grpc.clone(),
                http: http.clone(),
                log: Some(log_path),
                image: None,
                devices: Vec::new(),
            }
        }
        Runtime::Podman => {
            let image = match (&o.image_archive, &o.image) {
                (Some(archive), want) => {
                    log(&format!("podman load -i {}", archive.display()));
                    let out = run_tool("podman", &["load", "-i", &archive.to_string_lossy()])?;
                    let loaded = out
                        .lines()
                        .find_map(|l| {
                            l.split_once(':')
                                .filter(|(k, _)| k.starts_with("Loaded image"))
                                .map(|(_, v)| v)
                        })
                        .map(|v| v.trim().split(',').next().unwrap_or("").trim().to_string())
                        .filter(|v| !v.is_empty());
                    match (want, loaded) {
                        (Some(w), _) => w.clone(),
                        (None, Some(l)) => l,
                        (None, None) => {
                            return Err(DeployError::tool(
                                "podman",
                                format!("podman load printed no image name: {out}"),
                            ));
                        }
                    }
                }
                (None, Some(i)) => i.clone(),
                (None, None) => {
                    return Err(DeployError::Invalid(
                        "--runtime podman needs an image: --image REF or --image-archive FILE".into(),
                    ));
                }
            };
            let labels = run_tool(
                "podman",
                &["image", "inspect", "--format", "{{json .Config.Labels}}", &image],
            )?;
            let labels: serde_json::Value = serde_json::from_str(labels.trim()).unwrap_or_default();
            let port_of = |k: &str, default: u16| {
                labels
                    .get(k)
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let (cg, ch) = (port_of("io.weft.grpc-port", 50051), port_of("io.weft.http-port", 8080));
            let _ = run_tool("podman", &["rm", "-f", &o.name]);
            let mut args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--name".into(),
                o.name.clone(),
                "-p".into(),
                format!("{}:{}:{cg}", o.host, o.grpc_port),
                "-p".into(),
                format!("{}:{}:{ch}", o.host, o.http_port),
                "--label".into(),
                "io.weft.deployment=local".into(),
                // as in production: a read-only root, writable scratch and cache only
                "--read-only".into(),
                "--tmpfs".into(),
                "/tmp:rw,mode=1777".into(),
                "--tmpfs".into(),
                // owned by the image's user (`U`): podman 4.3 ignores `mode=` here and the
                // tmpfs came up root's, so PoCL could not write its kernel cache and found no
                // device
                format!("{}:rw,U", crate::image::CACHE_DIR),
            ];
            if o.api_key.is_some() {
                args.push("-e".into());
                args.push(KEYS_ENV.into());
            }
            args.push(image.clone());
            if !o.serve_args.is_empty() {
                // the image's own arguments, then the extra flags
                let cmd = run_tool(
                    "podman",
                    &["image", "inspect", "--format", "{{json .Config.Cmd}}", &image],
                )?;
                let cmd: Vec<String> = serde_json::from_str(cmd.trim()).unwrap_or_default();
                args.extend(cmd);
                args.extend(o.serve_args.iter().cloned());
            }
            log(&format!("podman {}", args.join(" ")));
            let mut c = Command::new("podman");
            c.args(&args);
            if let Some(k) = &o.api_key {
                c.env(KEYS_ENV, k);
            }
            let out = c
                .output()
                .map_err(|e| DeployError::tool("podman", format!("cannot run podman: {e}")))?;
            if !out.status.success() {
                return Err(DeployError::tool(
                    "podman",
                    format!("podman run failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                ));
            }
            Deployment {
                name: o.name.clone(),
                runtime: "podman".into(),
                id: o.name.clone(),
                grpc: grpc.clone(),
                http: http.clone(),
                log: None,
                image: Some(image),
                devices: Vec::new(),
            }
        }
    };
    fs::write(&state, serde_json::to_vec_pretty(&d)?).map_err(|e| DeployError::io(&state, e))?;
    let start = Instant::now();
    loop {
        if let Some((200, body)) = http_get(&http, "/readyz") {
            let mut d = d;
            d.devices = body.lines().skip(1).map(str::to_string).collect();
            fs::write(&state, serde_json::to_vec_pretty(&d)?).map_err(|e| DeployError::io(&state, e))?;
            return Ok(d);
        }
        if !still_running(&d) {
            let logs = match &d.log {
                Some(p) => tail(p, 15),
                None => run_tool("podman", &["logs", "--tail", "15", &d.id]).unwrap_or_default(),
            };
            let _ = down(&o.name, &o.state_dir);
            return Err(DeployError::tool(
                "weft serve",
                format!("the service exited before it was ready:\n{logs}"),
            ));
        }
        if start.elapsed() > o.timeout {
            let _ = down(&o.name, &o.state_dir);
            return Err(DeployError::tool(
                "weft serve",
                format!(
                    "not ready on http://{http}/readyz after {:.0} s",
                    o.timeout.as_secs_f64()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn still_running(d: &Deployment) -> bool {
    match d.runtime.as_str() {
        "process" => alive(&d.id),
        _ => run_tool(
            "podman",
            &["container", "inspect", "--format", "{{.State.Running}}", &d.id],
        )
        .map(|s| s.trim() == "true")
        .unwrap_or(false),
    }
}

/// Stops a local deployment; returns what was stopped.
pub fn down(name: &str, state_dir: &Path) -> Result<Deployment, DeployError> {
    let state = state_file(state_dir, name);
    let text = fs::read_to_string(&state).map_err(|_| {
        DeployError::Invalid(format!(
            "no local deployment named '{name}' (nothing recorded in {})",
            state_dir.display()
        ))
    })?;
    let d: Deployment = serde_json::from_str(&text)?;
    match d.runtime.as_str() {
        "process" => {
            if alive(&d.id) {
                let _ = run_tool("kill", &["-TERM", &d.id]);
                let start = Instant::now();
                while alive(&d.id) && start.elapsed() < Duration::from_secs(15) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if alive(&d.id) {
                    let _ = run_tool("kill", &["-KILL", &d.id]);
                }
            }
        }
        _ => {
            run_tool("podman", &["rm", "-f", "-t", "10", &d.id])?;
        }
    }
    let _ = fs::remove_file(&state);
    Ok(d)
}
