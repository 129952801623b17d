//! OCI image archives written directly (no container daemon): a cached base layer made from
//! Debian packages with debootstrap (PoCL and the OpenCL ICD loader included), and an
//! application layer with the `weft` binary, the package and a non-root user. Every tar
//! header, JSON document and gzip stream is written deterministically, so building twice
//! from the same inputs gives the same digests.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use flate2::Compression;
use oci_spec::OciSpecError;
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, SCHEMA_VERSION,
};
use sha2::{Digest, Sha256};

use crate::error::DeployError;

/// The non-root user the service runs as in every artifact.
pub const UID: u32 = 10001;
/// Where the image keeps the package.
pub const MODEL_DIR: &str = "/models";
/// Writable cache (OpenCL program cache, PoCL's kernel cache); HOME and XDG_CACHE_HOME.
pub const CACHE_DIR: &str = "/var/cache/weft";
pub const BINARY: &str = "/usr/local/bin/weft";
/// Debian packages of the default base: the OpenCL ICD loader and PoCL's CPU device.
pub const BASE_PACKAGES: &[&str] = &["ocl-icd-libopencl1", "pocl-opencl-icd"];
pub const DEFAULT_SUITE: &str = "bookworm";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Where the image's root filesystem comes from.
#[derive(Clone, Debug)]
pub enum Base {
    /// `debootstrap --variant=minbase` of `suite` from `mirror` with `packages`, cached.
    Debootstrap {
        suite: String,
        mirror: String,
        packages: Vec<String>,
    },
    /// A root filesystem the user made: a directory or an uncompressed tar.
    Rootfs(PathBuf),
}

impl Default for Base {
    fn default() -> Self {
        Base::Debootstrap {
            suite: DEFAULT_SUITE.into(),
            mirror: DEFAULT_MIRROR.into(),
            packages: BASE_PACKAGES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// What goes into an image.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    /// `NAME:TAG` recorded in the archive's index.
    pub tag: String,
    pub package: PathBuf,
    /// The model's name on the wire (KServe model name); the package file in the image is
    /// `/models/<name>.weft`.
    pub model_name: String,
    pub weft_binary: PathBuf,
    /// Strip debug information from the binary (with binutils' `strip` when present).
    pub strip: bool,
    pub base: Base,
    pub labels: Vec<(String, String)>,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Cache of base layers.
    pub cache_dir: PathBuf,
}

/// What `build` wrote.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub archive_bytes: u64,
    /// Whether the base layer came from the cache.
    pub base_cached: bool,
}

/// A finished layer blob.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Layer {
    /// sha256 of the uncompressed tar (the config's diff_id).
    diff_id: String,
    /// sha256 of the gzip blob.
    digest: String,
    size: u64,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with object keys sorted (serde_json's `Value` keeps a sorted map), so documents
/// holding hash maps (labels, annotations) serialize the same way every time.
fn canonical_json(v: &impl serde::Serialize) -> Result<Vec<u8>, DeployError> {
    Ok(serde_json::to_vec(&serde_json::to_value(v)?)?)
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex(Sha256::digest(data)))
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Gzips a tar stream from `reader` into `path` (deterministic header: no name, mtime 0).
fn write_layer(mut reader: impl Read, path: &Path) -> Result<Layer, DeployError> {
    let file = File::create(path).map_err(|e| DeployError::io(path, e))?;
    let out = HashWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        count: 0,
    };
    let mut gz = flate2::GzBuilder::new().mtime(0).write(out, Compression::new(6));
    let mut diff = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| DeployError::io(path, e))?;
        if n == 0 {
            break;
        }
        diff.update(&buf[..n]);
        gz.write_all(&buf[..n]).map_err(|e| DeployError::io(path, e))?;
    }
    let mut out = gz.finish().map_err(|e| DeployError::io(path, e))?;
    out.flush().map_err(|e| DeployError::io(path, e))?;
    Ok(Layer {
        diff_id: format!("sha256:{}", hex(diff.finalize())),
        digest: format!("sha256:{}", hex(out.hash.finalize())),
        size: out.count,
    })
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// GNU tar of a root filesystem directory, deterministic: sorted names, mtime 0, numeric
/// owners, no atime/ctime, and the contents of /dev, /proc, /sys, /tmp left out.
fn tar_rootfs(dir: &Path, out: &Path) -> Result<Layer, DeployError> {
    let mut child = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--numeric-owner",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./tmp/*",
            "--exclude=./run/*",
            "-C",
        ])
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DeployError::tool("tar", format!("cannot run GNU tar: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DeployError::tool("tar", "no output"))?;
    let layer = write_layer(stdout, out)?;
    let result = child
        .wait_with_output()
        .map_err(|e| DeployError::tool("tar", e.to_string()))?;
    if !result.status.success() {
        return Err(DeployError::tool(
            "tar",
            String::from_utf8_lossy(&result.stderr).trim().to_string(),
        ));
    }
    Ok(layer)
}

/// Files the application layer derives from the base (user and group databases).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct BaseFiles {
    passwd: String,
    group: String,
}

fn read_base_files(dir: &Path) -> BaseFiles {
    BaseFiles {
        passwd: fs::read_to_string(dir.join("etc/passwd")).unwrap_or_default(),
        group: fs::read_to_string(dir.join("etc/group")).unwrap_or_default(),
    }
}

fn base_files_from_tar(path: &Path) -> Result<BaseFiles, DeployError> {
    let file = File::open(path).map_err(|e| DeployError::io(path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut files = BaseFiles::default();
    for entry in archive.entries().map_err(|e| DeployError::io(path, e))? {
        let mut entry = entry.map_err(|e| DeployError::io(path, e))?;
        let name = entry.path().map_err(|e| DeployError::io(path, e))?.to_path_buf();
        let name = name.strip_prefix(".").unwrap_or(&name).to_path_buf();
        let target = if name == Path::new("etc/passwd") {
            &mut files.passwd
        } else if name == Path::new("etc/group") {
            &mut files.group
        } else {
            continue;
        };
        entry.read_to_string(target).map_err(|e| DeployError::io(path, e))?;
    }
    Ok(files)
}

/// The base layer: from the cache, or made now (and cached).
fn base_layer(
    base: &Base,
    cache_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Layer, BaseFiles, bool), DeployError> {
    match base {
        Base::Rootfs(path) => {
            let dir = cache_dir.join("base").join("user");
            fs::create_dir_all(&dir).map_err(|e| DeployError::io(&dir, e))?;
            let blob = dir.join(format!("layer-{}.tar.gz", std::process::id()));
            if path.is_dir() {
                log(&format!("archiving root filesystem {}", path.display()));
                let layer = tar_rootfs(path, &blob)?;
                Ok((blob, layer, read_base_files(path), false))
            } else if path.is_file() {
                log(&format!("compressing root filesystem {}", path.display()));
                let f = File::open(path).map_err(|e| DeployError::io(path, e))?;
                let layer = write_layer(f, &blob)?;
                Ok((blob, layer, base_files_from_tar(path)?, false))
            } else {
                Err(DeployError::Invalid(format!(
                    "--base-rootfs {}: no such directory or tar file",
                    path.display()
                )))
            }
        }
        Base::Debootstrap {
            suite,
            mirror,
            packages,
        } => {
            let mut pkgs = packages.clone();
            pkgs.sort();
            pkgs.dedup();
            let key = hex(Sha256::digest(
                format!("weft-base-v1\0{suite}\0{mirror}\0{}\0amd64", pkgs.join(",")).as_bytes(),
            ));
            let dir = cache_dir.join("base").join(&key[..16]);
            let (blob, meta, files) = (dir.join("layer.tar.gz"), dir.join("layer.json"), dir.join("files.json"));
            if let (Ok(m), Ok(f)) = (fs::read(&meta), fs::read(&files))
                && let (Ok(layer), Ok(files)) = (
                    serde_json::from_slice::<Layer>(&m),
                    serde_json::from_slice::<BaseFiles>(&f),
                )
                && blob.is_file()
            {
                log(&format!("base layer from cache {}", dir.display()));
                return Ok((blob, layer, files, true));
            }
            if !have("debootstrap") {
                return Err(DeployError::tool(
                    "debootstrap",
                    "not installed: `apt-get install debootstrap` (root), or give --base-rootfs DIR|TAR",
                ));
            }
            fs::create_dir_all(&dir).map_err(|e| DeployError::io(&dir, e))?;
            let rootfs = dir.join("rootfs.tmp");
            let _ = fs::remove_dir_all(&rootfs);
            log(&format!(
                "debootstrap --variant=minbase --include={} {suite} (from {mirror}); cached afterwards",
                pkgs.join(",")
            ));
            let out = Command::new("debootstrap")
                .arg("--variant=minbase")
                .arg(format!("--include={}", pkgs.join(",")))
                .arg(suite)
                .arg(&rootfs)
                .arg(mirror)
                .output()
                .map_err(|e| DeployError::tool("debootstrap", e.to_string()))?;
            if !out.status.success() {
                let _ = fs::remove_dir_all(&rootfs);
                let text = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                return Err(DeployError::tool(
                    "debootstrap",
                    format!(
                        "failed (it needs root and the Debian mirror):\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                ));
            }
            // Package caches, documentation and logs are not part of the image.
            for sub in [
                "var/cache/apt/archives",
                "var/lib/apt/lists",
                "usr/share/doc",
                "usr/share/man",
                "usr/share/info",
                "var/log",
                "var/cache/debconf",
            ] {
                let d = rootfs.join(sub);
                if d.is_dir() {
                    let _ = fs::remove_dir_all(&d);
                    let _ = fs::create_dir_all(&d);
                }
            }
            let _ = fs::remove_file(rootfs.join("var/cache/ldconfig/aux-cache"));
            let _ = fs::write(rootfs.join("etc/machine-id"), "");
            let files_now = read_base_files(&rootfs);
            log("archiving the base layer");
            let tmp = dir.join("layer.tar.gz.tmp");
            let layer = tar_rootfs(&rootfs, &tmp)?;
            let _ = fs::remove_dir_all(&rootfs);
            fs::rename(&tmp, &blob).map_err(|e| DeployError::io(&blob, e))?;
            fs::write(&files, serde_json::to_vec(&files_now)?).map_err(|e| DeployError::io(&files, e))?;
            fs::write(&meta, serde_json::to_vec(&layer)?).map_err(|e| DeployError::io(&meta, e))?;
            Ok((blob, layer, files_now, false))
        }
    }
}

fn header(path: &str, size: u64, mode: u32, uid: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(uid));
    h.set_mtime(0);
    // paths are ASCII and short; set_path can only fail on over-long names
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
    let mut h = header(path, data.len() as u64, mode, 0, tar::EntryType::Regular);
    b.append_data(&mut h, path, data)
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u32) -> io::Result<()> {
    let mut h = header(path, 0, mode, uid, tar::EntryType::Directory);
    b.append_data(&mut h, path, io::empty())
}

/// The weft binary as it goes into the image (debug information stripped when asked and
/// binutils is installed).
fn binary_bytes(path: &Path, strip: bool, scratch: &Path) -> Result<Vec<u8>, DeployError> {
    if strip && have("strip") {
        let out = scratch.join(format!("weft-stripped-{}", std::process::id()));
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(path)
            .status()
            .map_err(|e| DeployError::tool("strip", e.to_string()))?;
        if status.success() {
            let data = fs::read(&out).map_err(|e| DeployError::io(&out, e));
            let _ = fs::remove_file(&out);
            return data;
        }
    }
    fs::read(path).map_err(|e| DeployError::io(path, e))
}

/// The application layer (uncompressed tar).
fn app_layer(opts: &ImageOptions, files: &BaseFiles, scratch: &Path) -> Result<Vec<u8>, DeployError> {
    let bin = binary_bytes(&opts.weft_binary, opts.strip, scratch)?;
    let package = fs::read(&opts.package).map_err(|e| DeployError::io(&opts.package, e))?;
    let mut passwd = files.passwd.clone();
    if !passwd.is_empty() && !passwd.ends_with('\n') {
        passwd.push('\n');
    }
    passwd.push_str(&format!("weft:x:{UID}:{UID}:weft:{CACHE_DIR}:/usr/sbin/nologin\n"));
    let mut group = files.group.clone();
    if !group.is_empty() && !group.ends_with('\n') {
        group.push('\n');
    }
    group.push_str(&format!("weft:x:{UID}:\n"));
    let mut b = tar::Builder::new(Vec::new());
    let io = |e| DeployError::io("application layer", e);
    append_file(&mut b, "etc/group", group.as_bytes(), 0o644).map_err(io)?;
    append_file(&mut b, "etc/passwd", passwd.as_bytes(), 0o644).map_err(io)?;
    append_dir(&mut b, "models/", 0o755, 0).map_err(io)?;
    append_file(&mut b, &format!("models/{}.weft", opts.model_name), &package, 0o644).map_err(io)?;
    append_file(&mut b, "usr/local/bin/weft", &bin, 0o755).map_err(io)?;
    append_dir(&mut b, "var/cache/weft/", 0o755, UID).map_err(io)?;
    b.into_inner().map_err(io)
}

/// `created` for configs: SOURCE_DATE_EPOCH when set, else the epoch (reproducible).
fn created() -> String {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The serve command line inside the image (after the entrypoint `weft serve`).
pub fn serve_args(model_name: &str, grpc_port: u16, http_port: u16) -> Vec<String> {
    vec![
        format!("{MODEL_DIR}/{model_name}.weft"),
        "--port".into(),
        grpc_port.to_string(),
        "--http-port".into(),
        http_port.to_string(),
    ]
}

/// Labels every artifact carries for a package.
pub fn default_labels(
    opts: &ImageOptions,
    package: &weft_package::Package,
    package_sha: &str,
) -> Vec<(String, String)> {
    vec![
        (
            "org.opencontainers.image.title".into(),
            format!("weft-{}", opts.model_name),
        ),
        (
            "org.opencontainers.image.description".into(),
            format!(
                "weft gRPC inference service (KServe v2, TensorFlow Serving Predict) for model '{}' ({})",
                opts.model_name, package.precision
            ),
        ),
        (
            "org.opencontainers.image.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ("org.opencontainers.image.licenses".into(), "Apache-2.0".into()),
        ("io.weft.model".into(), opts.model_name.clone()),
        ("io.weft.model.precision".into(), package.precision.to_string()),
        ("io.weft.model.sha256".into(), package_sha.into()),
        ("io.weft.grpc-port".into(), opts.grpc_port.to_string()),
        ("io.weft.http-port".into(), opts.http_port.to_string()),
    ]
}

/// Checks an image reference `NAME[:TAG]` (lowercase repository path, tag of at most 128
/// word characters, dots and dashes).
pub fn check_tag(tag: &str) -> Result<(), DeployError> {
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (tag, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.chars().next().is_some_and(|ch| ch.is_ascii_alphanumeric())
                && c.chars().last().is_some_and(|ch| ch.is_ascii_alphanumeric())
        });
    let tag_ok = t.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            && !t.starts_with(['.', '-'])
    });
    if name_ok && tag_ok {
        Ok(())
    } else {
        Err(DeployError::Invalid(format!(
            "--tag '{tag}' is not a valid image reference (lowercase name[/path][:tag], for example weft/fashion:1.0)"
        )))
    }
}

/// Builds the image archive at `out` (an `oci-archive`: OCI image layout in a tar).
pub fn build(opts: &ImageOptions, out: &Path, log: &mut dyn FnMut(&str)) -> Result<BuiltImage, DeployError> {
    check_tag(&opts.tag)?;
    let package = weft_package::Package::load(&opts.package)?;
    if !opts.weft_binary.is_file() {
        return Err(DeployError::Invalid(format!(
            "--weft-binary {}: no such file",
            opts.weft_binary.display()
        )));
    }
    let package_sha = hex(Sha256::digest(
        fs::read(&opts.package).map_err(|e| DeployError::io(&opts.package, e))?,
    ));
    fs::create_dir_all(&opts.cache_dir).map_err(|e| DeployError::io(&opts.cache_dir, e))?;
    let (base_blob, base, files, base_cached) = base_layer(&opts.base, &opts.cache_dir, log)?;
    log("writing the application layer");
    let app_tar = app_layer(opts, &files, &opts.cache_dir)?;
    let app_blob_path = opts.cache_dir.join(format!("app-{}.tar.gz", std::process::id()));
    let app = write_layer(app_tar.as_slice(), &app_blob_path)?;

    let mut labels = default_labels(opts, &package, &package_sha);
    for (k, v) in &opts.labels {
        labels.retain(|(lk, _)| lk != k);
        labels.push((k.clone(), v.clone()));
    }
    let labels: HashMap<String, String> = labels.into_iter().collect();
    let when = created();
    let oci = |e: OciSpecError| DeployError::Invalid(format!("image metadata: {e}"));
    let history = |created_by: String| {
        HistoryBuilder::default()
            .created(when.clone())
            .created_by(created_by)
            .build()
            .map_err(oci)
    };
    let config = ImageConfigurationBuilder::default()
        .created(when.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(format!("{UID}:{UID}"))
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                    format!("HOME={CACHE_DIR}"),
                    format!("XDG_CACHE_HOME={CACHE_DIR}"),
                    // the image holds PoCL: when it cannot run, `weft serve` stops with the
                    // reason instead of serving on the reference executor (`--device` or
                    // another WEFT_DEVICE choose another device)
                    "WEFT_DEVICE=pocl".to_string(),
                ])
                .entrypoint(vec![BINARY.to_string(), "serve".to_string()])
                .cmd(serve_args(&opts.model_name, opts.grpc_port, opts.http_port))
                .exposed_ports(vec![
                    format!("{}/tcp", opts.grpc_port),
                    format!("{}/tcp", opts.http_port),
                ])
                .working_dir(CACHE_DIR.to_string())
                .stop_signal("SIGTERM".to_string())
                .labels(labels)
                .build()
                .map_err(oci)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_string())
                .diff_ids(vec![base.diff_id.clone(), app.diff_id.clone()])
                .build()
                .map_err(oci)?,
        )
        .history(vec![
            history(match &opts.base {
                Base::Debootstrap { suite, packages, .. } => {
                    format!("debootstrap --variant=minbase --include={} {suite}", packages.join(","))
                }
                Base::Rootfs(p) => format!("root filesystem {}", p.display()),
            })?,
            history(format!(
                "weft image build: {BINARY}, {MODEL_DIR}/{}.weft, user {UID}",
                opts.model_name
            ))?,
        ])
        .build()
        .map_err(oci)?;
    let config_bytes = canonical_json(&config)?;
    let config_digest = sha256_hex(&config_bytes);
    let descriptor = |media_type: MediaType, digest: &str, size: u64| {
        let digest = oci_spec::image::Digest::from_str(digest).map_err(oci)?;
        DescriptorBuilder::default()
            .media_type(media_type)
            .digest(digest)
            .size(size)
            .build()
            .map_err(oci)
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_bytes.len() as u64,
        )?)
        .layers(vec![
            descriptor(MediaType::ImageLayerGzip, &base.digest, base.size)?,
            descriptor(MediaType::ImageLayerGzip, &app.digest, app.size)?,
        ])
        .build()
        .map_err(oci)?;
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_digest = sha256_hex(&manifest_bytes);
    let mut entry = descriptor(MediaType::ImageManifest, &manifest_digest, manifest_bytes.len() as u64)?;
    entry.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_string(),
        opts.tag.clone(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()
        .map_err(oci)?;
    let index_bytes = canonical_json(&index)?;
    let layout = canonical_json(
        &OciLayoutBuilder::default()
            .image_layout_version("1.0.0".to_string())
            .build()
            .map_err(oci)?,
    )?;

    log(&format!("writing {}", out.display()));
    let tmp = out.with_extension("tmp");
    let result = (|| -> io::Result<()> {
        let file = BufWriter::new(File::create(&tmp)?);
        let mut b = tar::Builder::new(file);
        let add = |b: &mut tar::Builder<BufWriter<File>>, path: &str, size: u64, data: &mut dyn Read| {
            let mut h = header(path, size, 0o644, 0, tar::EntryType::Regular);
            b.append_data(&mut h, path, data)
        };
        add(&mut b, "oci-layout", layout.len() as u64, &mut layout.as_slice())?;
        add(
            &mut b,
            "index.json",
            index_bytes.len() as u64,
            &mut index_bytes.as_slice(),
        )?;
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(dir, 0, 0o755, 0, tar::EntryType::Directory);
            b.append_data(&mut h, dir, io::empty())?;
        }
        let blob_name = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let mut blobs: Vec<(String, u64, Box<dyn Read>)> = vec![
            (
                blob_name(&config_digest),
                config_bytes.len() as u64,
                Box::new(io::Cursor::new(config_bytes.clone())),
            ),
            (
                blob_name(&manifest_digest),
                manifest_bytes.len() as u64,
                Box::new(io::Cursor::new(manifest_bytes.clone())),
            ),
            (blob_name(&base.digest), base.size, Box::new(File::open(&base_blob)?)),
            (blob_name(&app.digest), app.size, Box::new(File::open(&app_blob_path)?)),
        ];
        blobs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, size, mut r) in blobs {
            add(&mut b, &name, size, &mut r)?;
        }
        b.into_inner()?.flush()
    })();
    let _ = fs::remove_file(&app_blob_path);
    if let Base::Rootfs(_) = opts.base {
        let _ = fs::remove_file(&base_blob);
    }
    result.map_err(|e| DeployError::io(&tmp, e))?;
    fs::rename(&tmp, out).map_err(|e| DeployError::io(out, e))?;
    let archive_bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BuiltImage {
        manifest_digest,
        config_digest,
        layer_digests: vec![base.digest, app.digest],
        archive_bytes,
        base_cached,
    })
}

/// A Dockerfile (and what it copies) for users who build with Docker or a cloud build
/// service: the same layout, user, ports, labels and entrypoint as `build`.
pub fn dockerfile(opts: &ImageOptions, base_image: &str) -> Result<String, DeployError> {
    let package = weft_package::Package::load(&opts.package)?;
    let package_sha = hex(Sha256::digest(
        fs::read(&opts.package).map_err(|e| DeployError::io(&opts.package, e))?,
    ));
    let mut labels = default_labels(opts, &package, &package_sha);
    labels.extend(opts.labels.iter().cloned());
    let packages = match &opts.base {
        Base::Debootstrap { packages, .. } => packages.join(" "),
        Base::Rootfs(_) => BASE_PACKAGES.join(" "),
    };
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut d = String::new();
    d.push_str("# Written by `weft image dockerfile`; build with: docker build -t IMAGE .\n");
    d.push_str("# (the build context holds `weft` and the package next to this file)\n");
    d.push_str(&format!("FROM {base_image}\n"));
    d.push_str(&format!(
        "RUN apt-get update \\\n && apt-get install -y --no-install-recommends {packages} \\\n && rm -rf /var/lib/apt/lists/*\n"
    ));
    d.push_str(&format!(
        "RUN groupadd -g {UID} weft \\\n && useradd -u {UID} -g {UID} -d {CACHE_DIR} -M -s /usr/sbin/nologin weft \\\n && mkdir -p {CACHE_DIR} {MODEL_DIR} && chown {UID}:{UID} {CACHE_DIR}\n"
    ));
    d.push_str(&format!("COPY weft {BINARY}\n"));
    d.push_str(&format!(
        "COPY {name}.weft {MODEL_DIR}/{name}.weft\n",
        name = opts.model_name
    ));
    d.push_str(&format!(
        "ENV HOME={CACHE_DIR} XDG_CACHE_HOME={CACHE_DIR} WEFT_DEVICE=pocl\n"
    ));
    d.push_str(&format!("WORKDIR {CACHE_DIR}\n"));
    for (k, v) in &labels {
        d.push_str(&format!("LABEL {}={}\n", quote(k), quote(v)));
    }
    d.push_str(&format!("EXPOSE {} {}\n", opts.grpc_port, opts.http_port));
    d.push_str(&format!("USER {UID}:{UID}\n"));
    d.push_str("STOPSIGNAL SIGTERM\n");
    d.push_str(&format!("ENTRYPOINT [{}, \"serve\"]\n", quote(BINARY)));
    let cmd: Vec<String> = serve_args(&opts.model_name, opts.grpc_port, opts.http_port)
        .iter()
        .map(|a| quote(a))
        .collect();
    d.push_str(&format!("CMD [{}]\n", cmd.join(", ")));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn tags_are_checked() {
        for ok in [
            "weft/fashion:1.0",
            "localhost/weft:latest",
            "registry.example.com/a/b",
            "x",
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Weft:1", "weft:", "weft:-x", "a//b", "weft:t/x", "-weft"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layers_are_deterministic() {
        let dir = std::env::temp_dir().join(format!("weft-layer-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_default();
        let a = write_layer(&b"same bytes"[..], &dir.join("a.gz")).map_err(|e| e.to_string());
        let b = write_layer(&b"same bytes"[..], &dir.join("b.gz")).map_err(|e| e.to_string());
        let _ = fs::remove_dir_all(&dir);
        let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, sha256_hex(b"same bytes"));
    }
}
