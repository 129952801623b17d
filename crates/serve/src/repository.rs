//! A model repository in Triton's layout: `DIR/NAME/VERSION/model.weft`, with an optional
//! `DIR/NAME/config.json` or `config.pbtxt` (max batch, queue delay, queue depth, version
//! policy). Control modes: `none` (load at start), `poll` (rescan every few seconds: new
//! versions load and take over, removed ones drain and go), `explicit` (load and unload on
//! request, through Triton's repository API over gRPC and REST).
//!
//! A version is loaded and warmed up before it is served; an old version leaves the list only
//! once a wanted version is ready, so a broken package never takes a model down; a version
//! that leaves finishes the requests it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ServeError;
use crate::batcher::BatchPolicy;
use crate::server::{AppState, version_key};

/// The package file each version directory holds.
pub const PACKAGE_FILE: &str = "model.weft";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMode {
    None,
    Poll,
    Explicit,
}

impl std::str::FromStr for ControlMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ControlMode::None),
            "poll" => Ok(ControlMode::Poll),
            "explicit" => Ok(ControlMode::Explicit),
            other => Err(format!(
                "'{other}' is not a model control mode (none, poll or explicit)"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RepositoryConfig {
    pub dir: PathBuf,
    pub mode: ControlMode,
    pub poll: Duration,
    /// Models loaded at start in explicit mode (`*`: all).
    pub load: Vec<String>,
}

/// Which of a model's versions to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionPolicy {
    Latest(usize),
    All,
    Specific(Vec<u64>),
}

/// The subset of a model's configuration weft reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSettings {
    pub max_batch: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    pub queue_depth: Option<usize>,
    /// Instances (engines and worker threads) of each version.
    pub instances: Option<usize>,
    pub policy: VersionPolicy,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            max_batch: None,
            max_queue_delay_us: None,
            queue_depth: None,
            instances: None,
            policy: VersionPolicy::Latest(1),
        }
    }
}

impl ModelSettings {
    fn batch_policy(&self, default: BatchPolicy) -> BatchPolicy {
        BatchPolicy {
            max_batch: self.max_batch.filter(|&b| b > 0).unwrap_or(default.max_batch),
            max_delay: self.max_queue_delay_us.map_or(default.max_delay, Duration::from_micros),
            queue_depth: self.queue_depth.filter(|&q| q > 0).unwrap_or(default.queue_depth),
            instances: self.instances.filter(|&n| n > 0).unwrap_or(default.instances),
        }
    }
}

fn settings_from_json(text: &str) -> Result<ModelSettings, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("config.json: {e}"))?;
    let uint = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()));
    let mut s = ModelSettings {
        max_batch: uint(v.get("max_batch_size")).map(|x| x as usize),
        max_queue_delay_us: uint(v.pointer("/dynamic_batching/max_queue_delay_microseconds")),
        queue_depth: uint(v.pointer("/dynamic_batching/default_queue_policy/max_queue_size"))
            .or_else(|| uint(v.get("queue_depth")))
            .map(|x| x as usize),
        ..Default::default()
    };
    if let Some(groups) = v.get("instance_group") {
        let groups = groups.as_array().ok_or("config.json: instance_group is not a list")?;
        s.instances = Some(groups.iter().map(|g| uint(g.get("count")).unwrap_or(1) as usize).sum());
    }
    if let Some(p) = v.get("version_policy") {
        s.policy = if let Some(l) = p.get("latest") {
            VersionPolicy::Latest(uint(l.get("num_versions")).unwrap_or(1).max(1) as usize)
        } else if p.get("all").is_some() {
            VersionPolicy::All
        } else if let Some(sp) = p.get("specific") {
            let list = sp
                .get("versions")
                .and_then(|x| x.as_array())
                .ok_or("config.json: version_policy.specific needs a versions list")?;
            VersionPolicy::Specific(list.iter().filter_map(|x| uint(Some(x))).collect())
        } else {
            return Err("config.json: version_policy is none of latest, all, specific".into());
        };
    }
    Ok(s)
}

fn settings_from_pbtxt(text: &str) -> Result<ModelSettings, String> {
    let in_file = |e: String| format!("config.pbtxt: {e}");
    let m = crate::pbtxt::parse(text).map_err(in_file)?;
    let batching = m.message("dynamic_batching").cloned().unwrap_or_default();
    let queue = batching.message("default_queue_policy").cloned().unwrap_or_default();
    let policy = match m.message("version_policy") {
        None => VersionPolicy::Latest(1),
        Some(p) => {
            if let Some(l) = p.message("latest") {
                VersionPolicy::Latest(l.uint("num_versions").map_err(in_file)?.unwrap_or(1).max(1) as usize)
            } else if p.message("all").is_some() {
                VersionPolicy::All
            } else if let Some(sp) = p.message("specific") {
                VersionPolicy::Specific(sp.uints("versions").map_err(in_file)?)
            } else {
                return Err(in_file("version_policy is none of latest, all, specific".into()));
            }
        }
    };
    // every instance group's count (1 when not given), as Triton adds them up
    let mut instances = None;
    for g in m.all("instance_group") {
        let crate::pbtxt::Value::Message(g) = g else {
            return Err(in_file("instance_group is not a message".into()));
        };
        let count = g.uint("count").map_err(in_file)?.unwrap_or(1) as usize;
        instances = Some(instances.unwrap_or(0) + count);
    }
    Ok(ModelSettings {
        max_batch: m.uint("max_batch_size").map_err(in_file)?.map(|x| x as usize),
        max_queue_delay_us: batching.uint("max_queue_delay_microseconds").map_err(in_file)?,
        queue_depth: queue.uint("max_queue_size").map_err(in_file)?.map(|x| x as usize),
        instances,
        policy,
    })
}

/// A model directory: its settings and its version directories holding a package.
#[derive(Clone, Debug)]
pub struct Entry {
    pub settings: ModelSettings,
    pub versions: BTreeMap<u64, PathBuf>,
}

impl Entry {
    /// The versions its policy serves, newest first.
    pub fn wanted(&self) -> Vec<(u64, PathBuf)> {
        let newest_first = self.versions.iter().rev().map(|(v, p)| (*v, p.clone()));
        match &self.settings.policy {
            VersionPolicy::Latest(n) => newest_first.take(*n).collect(),
            VersionPolicy::All => newest_first.collect(),
            VersionPolicy::Specific(list) => newest_first.filter(|(v, _)| list.contains(v)).collect(),
        }
    }
}

fn read_entry(dir: &Path) -> Result<Entry, String> {
    let settings = if let Ok(text) = std::fs::read_to_string(dir.join("config.json")) {
        settings_from_json(&text)?
    } else if let Ok(text) = std::fs::read_to_string(dir.join("config.pbtxt")) {
        settings_from_pbtxt(&text)?
    } else {
        ModelSettings::default()
    };
    Ok(Entry {
        settings,
        versions: read_versions(dir)?,
    })
}

/// A model directory's numbered version directories that hold a package.
fn read_versions(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, String> {
    let mut versions = BTreeMap::new();
    let listing = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for item in listing.flatten() {
        let Some(v) = item.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let file = item.path().join(PACKAGE_FILE);
        if file.is_file() {
            versions.insert(v, file);
        }
    }
    Ok(versions)
}

/// The repository's models by name (a model whose directory cannot be read maps to the
/// reason).
pub fn scan(dir: &Path) -> Result<BTreeMap<String, Result<Entry, String>>, ServeError> {
    let listing =
        std::fs::read_dir(dir).map_err(|e| ServeError::Setup(format!("--model-repository {}: {e}", dir.display())))?;
    let mut out = BTreeMap::new();
    for item in listing.flatten() {
        let path = item.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(name) = item.file_name().to_str().filter(|n| !n.starts_with('.')) {
            out.insert(name.to_string(), read_entry(&path));
        }
    }
    Ok(out)
}

/// What the repository index says of one version.
#[derive(Clone, Debug)]
struct Status {
    state: &'static str,
    reason: String,
}

/// A served repository: its configuration, each version's last state, and a lock that
/// keeps loads and unloads (polling and requests) one at a time.
pub struct Repository {
    pub config: RepositoryConfig,
    status: std::sync::Mutex<BTreeMap<(String, String), Status>>,
    /// Packages refused, by path, with the file's modification time and size then: polling
    /// retries one only once it changes (a copy still being written, then finished).
    refused: std::sync::Mutex<BTreeMap<PathBuf, (Option<std::time::SystemTime>, u64)>>,
    busy: tokio::sync::Mutex<()>,
}

/// One row of the repository index.
#[derive(Clone, Debug)]
pub struct IndexRow {
    pub name: String,
    pub version: String,
    pub state: String,
    pub reason: String,
}

impl Repository {
    pub fn new(config: RepositoryConfig) -> Self {
        Repository {
            config,
            status: Default::default(),
            refused: Default::default(),
            busy: Default::default(),
        }
    }

    fn set(&self, name: &str, version: &str, state: &'static str, reason: impl Into<String>) {
        if let Ok(mut s) = self.status.lock() {
            s.insert(
                (name.to_string(), version.to_string()),
                Status {
                    state,
                    reason: reason.into(),
                },
            );
        }
    }

    /// Loads what the mode loads at start and, in poll mode, starts polling.
    pub async fn start(&self, state: &Arc<AppState>) -> Result<(), ServeError> {
        let models = scan(&self.config.dir)?;
        for (name, entry) in models {
            let load = match self.config.mode {
                ControlMode::None | ControlMode::Poll => true,
                ControlMode::Explicit => self.config.load.iter().any(|l| l == "*" || l == &name),
            };
            if load {
                let _ = self.sync(state, &name, Some(entry), false).await;
            }
        }
        if self.config.mode == ControlMode::Poll {
            let weak = Arc::downgrade(state);
            let every = self.config.poll;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(state) = weak.upgrade() else { return };
                    if !state.ready.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    if let Some(repo) = &state.repository {
                        repo.poll(&state).await;
                    }
                }
            });
        }
        Ok(())
    }

    /// One poll: every model in the repository, and every repository model no longer in it.
    async fn poll(&self, state: &Arc<AppState>) {
        let Ok(found) = scan(&self.config.dir) else {
            tracing::warn!(dir = %self.config.dir.display(), "the model repository cannot be read");
            return;
        };
        let mut names: Vec<String> = found.keys().cloned().collect();
        for m in state.models() {
            if m.from_repository && !names.contains(&m.name) {
                names.push(m.name.clone());
            }
        }
        for name in names {
            let entry = found.get(&name).cloned();
            let _ = self.sync(state, &name, entry, false).await;
        }
    }

    /// Brings `name` to what its entry wants: loads and warms up missing versions, then
    /// removes versions no longer wanted, but only once a wanted version is ready, so a
    /// broken package leaves the old version serving. `None`: the model left the repository.
    /// `reload`: versions already served are loaded again too (with new settings), each
    /// replacing the old one only once it is warm.
    async fn sync(
        &self,
        state: &Arc<AppState>,
        name: &str,
        entry: Option<Result<Entry, String>>,
        reload: bool,
    ) -> Result<(), ServeError> {
        let _one_at_a_time = self.busy.lock().await;
        let Some(loader) = state.loader.clone() else {
            return Err(ServeError::Unavailable("the server is starting".into()));
        };
        let entry = match entry {
            Some(Ok(e)) => Some(e),
            Some(Err(why)) => {
                tracing::error!(model = name, "{why}");
                return Err(ServeError::InvalidArgument(why));
            }
            None => None,
        };
        let wanted = entry.as_ref().map(Entry::wanted).unwrap_or_default();
        let policy = entry
            .as_ref()
            .map_or(loader.policy, |e| e.settings.batch_policy(loader.policy));
        let served = |v: &str| state.models().iter().any(|m| m.name == name && m.version == v);
        let mut errors = Vec::new();
        for (v, path) in &wanted {
            let version = v.to_string();
            if served(&version) && !reload {
                continue;
            }
            let stamp = std::fs::metadata(path).map(|m| (m.modified().ok(), m.len())).ok();
            let refused_before = self.refused.lock().ok().and_then(|r| r.get(path).copied());
            if stamp.is_some() && stamp == refused_before {
                if let Some(s) = self
                    .status
                    .lock()
                    .ok()
                    .and_then(|s| s.get(&(name.to_string(), version.clone())).cloned())
                {
                    errors.push(s.reason);
                }
                continue;
            }
            let refuse = |why: &str| {
                if let (Some(stamp), Ok(mut r)) = (stamp, self.refused.lock()) {
                    r.insert(path.clone(), stamp);
                }
                tracing::error!(model = name, version, "refused: {why}");
            };
            self.set(name, &version, "LOADING", "");
            let package = match weft_package::Package::load(path) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    let why = format!("{}: {e}", path.display());
                    refuse(&why);
                    self.set(name, &version, "UNAVAILABLE", why.clone());
                    errors.push(why);
                    continue;
                }
            };
            match loader.load(name, &version, package, policy, true).await {
                Ok(model) => {
                    state.insert_model(model);
                    self.set(name, &version, "READY", "");
                }
                Err(e) => {
                    let why = e.to_string();
                    refuse(&why);
                    self.set(name, &version, "UNAVAILABLE", why.clone());
                    errors.push(why);
                }
            }
        }
        let keep: Vec<String> = wanted.iter().map(|(v, _)| v.to_string()).collect();
        let any_wanted_ready = keep.iter().any(|v| served(v));
        if any_wanted_ready || entry.is_none() {
            let gone = state.remove_models(|m| m.name == name && m.from_repository && !keep.contains(&m.version));
            for m in gone {
                tracing::info!(model = name, version = %m.version, "unloaded; it finishes the requests it holds");
                self.set(name, &m.version, "UNAVAILABLE", "unloaded");
            }
        }
        match (errors.is_empty(), any_wanted_ready, wanted.is_empty()) {
            (_, _, true) if entry.is_some() => Err(ServeError::InvalidArgument(format!(
                "model '{name}' has no version directory holding {PACKAGE_FILE} that its version policy serves"
            ))),
            (false, false, _) => Err(ServeError::InvalidArgument(format!(
                "model '{name}' could not be loaded: {}",
                errors.join("; ")
            ))),
            _ => Ok(()),
        }
    }

    /// `RepositoryModelLoad`: (re)reads the model's directory and loads what it wants. With
    /// `config` (the model configuration as JSON, as Triton's load request carries it) the
    /// model loads with those settings instead of its directory's, and versions already
    /// served are reloaded with them.
    pub async fn load(&self, state: &Arc<AppState>, name: &str, config: Option<&str>) -> Result<(), ServeError> {
        self.explicit()?;
        let mut found = scan(&self.config.dir)?;
        let mut entry = found
            .remove(name)
            .ok_or_else(|| ServeError::NotFound(format!("the model repository has no model '{name}'")))?;
        if let Some(text) = config {
            let settings = settings_from_json(text)
                .map_err(|e| ServeError::InvalidArgument(format!("the load request's config: {e}")))?;
            let versions = entry
                .map(|e| e.versions)
                .or_else(|_| read_versions(&self.config.dir.join(name)));
            entry = versions.map(|versions| Entry { settings, versions });
        }
        // a load request retries packages refused before, changed or not
        let model_dir = self.config.dir.join(name);
        if let Ok(mut r) = self.refused.lock() {
            r.retain(|p, _| !p.starts_with(&model_dir));
        }
        self.sync(state, name, Some(entry), config.is_some()).await
    }

    /// `RepositoryModelUnload`: stops serving every version of the model.
    pub async fn unload(&self, state: &Arc<AppState>, name: &str) -> Result<(), ServeError> {
        self.explicit()?;
        let _one_at_a_time = self.busy.lock().await;
        let gone = state.remove_models(|m| m.name == name);
        if gone.is_empty() {
            return Err(ServeError::NotFound(format!("model '{name}' is not loaded")));
        }
        for m in gone {
            tracing::info!(model = name, version = %m.version, "unloaded; it finishes the requests it holds");
            self.set(name, &m.version, "UNAVAILABLE", "unloaded");
        }
        Ok(())
    }

    fn explicit(&self) -> Result<(), ServeError> {
        match self.config.mode {
            ControlMode::Explicit => Ok(()),
            other => Err(ServeError::InvalidArgument(format!(
                "loading and unloading models needs --model-control-mode explicit (this server runs {})",
                match other {
                    ControlMode::None => "none",
                    ControlMode::Poll => "poll",
                    ControlMode::Explicit => "explicit",
                }
            ))),
        }
    }

    /// Every model and version directory in the repository, with its state.
    pub fn index(&self, state: &AppState, ready_only: bool) -> Result<Vec<IndexRow>, ServeError> {
        let found = scan(&self.config.dir)?;
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let models = state.models();
        let mut rows = Vec::new();
        for (name, entry) in found {
            let versions: Vec<String> = match &entry {
                Ok(e) if !e.versions.is_empty() => e.versions.keys().map(u64::to_string).collect(),
                _ => vec![String::new()],
            };
            for version in versions {
                let ready = models
                    .iter()
                    .any(|m| m.name == name && m.version == version && m.worker.is_ready());
                let (st, reason) = match (&entry, ready, status.get(&(name.clone(), version.clone()))) {
                    (Err(why), _, _) => ("UNAVAILABLE", why.clone()),
                    (_, true, _) => ("READY", String::new()),
                    (_, false, Some(s)) => (s.state, s.reason.clone()),
                    (_, false, None) => ("UNAVAILABLE", "not loaded".to_string()),
                };
                if ready_only && st != "READY" {
                    continue;
                }
                rows.push(IndexRow {
                    name: name.clone(),
                    version,
                    state: st.to_string(),
                    reason,
                });
            }
        }
        rows.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(version_key(&a.version).cmp(&version_key(&b.version)))
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_settings() {
        let s = settings_from_json(
            r#"{"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": "500"},
                "version_policy": {"latest": {"num_versions": 2}}}"#,
        )
        .unwrap_or_default();
        assert_eq!(s.max_batch, Some(4));
        assert_eq!(s.max_queue_delay_us, Some(500));
        assert_eq!(s.policy, VersionPolicy::Latest(2));
        let s = settings_from_json(r#"{"version_policy": {"specific": {"versions": [1, 3]}}}"#).unwrap_or_default();
        assert_eq!(s.policy, VersionPolicy::Specific(vec![1, 3]));
        let s = settings_from_json(r#"{"instance_group": [{"count": 2}, {"kind": "KIND_CPU"}]}"#).unwrap_or_default();
        assert_eq!(s.instances, Some(3));
        assert!(settings_from_json("{").is_err());
        assert!(settings_from_json(r#"{"version_policy": {"newest": {}}}"#).is_err());
    }

    #[test]
    fn pbtxt_settings() {
        let s = settings_from_pbtxt(
            "name: \"latest\"  # all of this is one model\nmax_batch_size: 16\n\
             version_policy: { specific: { versions: [2, 5] } }\n\
             instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_GPU } ]\n\
             dynamic_batching { max_queue_delay_microseconds: 100 default_queue_policy { max_queue_size: 9 } }\n\
             optimization { execution_accelerators { cpu_execution_accelerator: [ { name: \"x\" } ] } }",
        )
        .unwrap();
        assert_eq!(s.max_batch, Some(16));
        assert_eq!(s.max_queue_delay_us, Some(100));
        assert_eq!(s.queue_depth, Some(9));
        assert_eq!(s.instances, Some(3));
        assert_eq!(s.policy, VersionPolicy::Specific(vec![2, 5]));
        let policy = |t: &str| settings_from_pbtxt(t).map(|s| s.policy);
        assert_eq!(policy("version_policy: { all: {} }"), Ok(VersionPolicy::All));
        assert_eq!(
            policy("version_policy: { latest: { num_versions: 3 } }"),
            Ok(VersionPolicy::Latest(3))
        );
        // the words alone (in a name, a comment) choose nothing
        assert_eq!(policy("name: \"all\" # specific"), Ok(VersionPolicy::Latest(1)));
        for bad in [
            "max_batch_size: -1",
            "max_batch_size: [",
            "version_policy { newest {} }",
        ] {
            assert!(
                settings_from_pbtxt(bad).unwrap_err().starts_with("config.pbtxt: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn policies_pick_versions() {
        let versions: BTreeMap<u64, PathBuf> = [1, 2, 10]
            .into_iter()
            .map(|v| (v, PathBuf::from(v.to_string())))
            .collect();
        let pick = |policy| {
            Entry {
                settings: ModelSettings {
                    policy,
                    ..Default::default()
                },
                versions: versions.clone(),
            }
            .wanted()
            .into_iter()
            .map(|(v, _)| v)
            .collect::<Vec<_>>()
        };
        assert_eq!(pick(VersionPolicy::Latest(1)), vec![10]);
        assert_eq!(pick(VersionPolicy::Latest(2)), vec![10, 2]);
        assert_eq!(pick(VersionPolicy::All), vec![10, 2, 1]);
        assert_eq!(pick(VersionPolicy::Specific(vec![1, 7])), vec![1]);
    }
}
