//! The [`Engine`] trait the worker agent programs against, and [`LocalEngine`], its
//! implementation on this host. One module per operation: `open` (adoption of running
//! containers after a daemon restart), `images`, `create`, `start` (the shim and its watcher),
//! `stop` (signals and waiting), `remove` (and tidying up after a lost shim), `exec`
//! (sessions with input and a terminal, and the healthchecks on them), `logs`; `init_dir` gathers what `--init` needs. Everything they do to the
//! host goes through [`Host`](crate::host::Host), which `tests.rs` replaces with a recording one.

mod create;
mod exec;
mod images;
pub(crate) mod init_dir;
mod logs;
mod open;
mod remove;
mod start;
mod stop;
#[cfg(test)]
mod tests;

pub use exec::{ExecEvent, ExecInput, ExecSession};

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::container::{ContainerDir, ContainerRecord, RunStatus, ShimState};
use crate::error::{EngineError, Result};
use crate::health::HealthState;
use crate::host::{Host, RuntimeRef};
use crate::logs::LogEntry;
use crate::spec::ContainerSpec;
use crate::store::ImageStore;
use crate::util::Digest;

/// A container as `inspect` and `ls` report it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID.
    pub image_id: Digest,
    /// The process arguments.
    pub args: Vec<String>,
    /// RFC 3339.
    pub created: String,
    /// Runtime state.
    pub state: ShimState,
    /// Health, for containers with a healthcheck.
    pub health: Option<HealthState>,
    /// The spec it was created with (`File` contents stripped).
    pub spec: ContainerSpec,
}

/// What the worker agent needs from a container engine. Implemented by [`LocalEngine`]; the
/// worker's tests can supply a fake.
pub trait Engine: Send + Sync + 'static {
    /// Creates a container (not started); returns its ID.
    fn create(&self, spec: ContainerSpec) -> impl Future<Output = Result<String>> + Send;
    /// Starts a created or exited container; returns once its process runs.
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Sends the stop signal, waits up to `timeout` (the container's own by default), then kills.
    fn stop(&self, id: &str, timeout: Option<Duration>) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container; `force` kills it first if it runs.
    fn remove(&self, id: &str, force: bool) -> impl Future<Output = Result<()>> + Send;
    /// One container.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<ContainerInfo>> + Send;
    /// Containers; only running ones unless `all`.
    fn list(&self, all: bool) -> impl Future<Output = Result<Vec<ContainerInfo>>> + Send;
    /// Waits until the container is not running; returns its final state.
    fn wait(&self, id: &str) -> impl Future<Output = Result<ShimState>> + Send;
    /// Log entries, the last `tail` if given, then new ones as they come if `follow`.
    fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> impl Future<Output = Result<mpsc::Receiver<Result<LogEntry>>>> + Send;
    /// Health, if the container has a healthcheck.
    fn health(&self, id: &str) -> impl Future<Output = Result<Option<HealthState>>> + Send;
}

/// How to set up a [`LocalEngine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where images, containers, volumes and runtime state live.
    pub data_root: PathBuf,
    /// The `shoal` binary, re-executed as the shim and for `runtime-exec`.
    pub shoal_exe: PathBuf,
}

/// `File` mount contents by mount index; held in memory only.
type FileContents = Vec<(usize, Vec<u8>)>;

struct Entry {
    record: ContainerRecord,
    dir: ContainerDir,
    /// Serialises start/stop/remove on one container.
    op: tokio::sync::Mutex<()>,
    /// Bumped whenever the shim exits.
    changed: watch::Sender<u64>,
    /// `File` mount contents, kept in memory only.
    file_contents: Mutex<FileContents>,
    health_task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn info(&self) -> ContainerInfo {
        ContainerInfo {
            id: self.record.id.clone(),
            name: self.record.name.clone(),
            image: self.record.spec.image.clone(),
            image_id: self.record.image_id.clone(),
            args: self.record.args.clone(),
            created: self.record.created.clone(),
            state: self.dir.read_state(),
            health: self
                .record
                .spec
                .healthcheck
                .as_ref()
                .and_then(|_| self.dir.read_health()),
            spec: self.record.spec.clone(),
        }
    }

    fn stop_health(&self) {
        if let Some(task) = lock(&self.health_task).take() {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    config: EngineConfig,
    /// What the operations do to the machine goes through here.
    host: Arc<dyn Host>,
    images: Arc<ImageStore>,
    init_dir: Option<PathBuf>,
    /// The kernel's highest capability number: what a container's `ALL` capabilities reach.
    last_capability: u8,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
}

/// The engine on this host. Cheap to clone.
#[derive(Clone)]
pub struct LocalEngine {
    inner: Arc<Inner>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Runtime(format!("background task failed: {e}")))?
}

impl Inner {
    fn insert(&self, record: ContainerRecord) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            dir: ContainerDir::new(&self.config.data_root, &record.id),
            record,
            op: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
            file_contents: Mutex::new(Vec::new()),
            health_task: Mutex::new(None),
        });
        lock(&self.containers).insert(entry.record.id.clone(), entry.clone());
        entry
    }

    fn find(&self, name_or_id: &str) -> Result<Arc<Entry>> {
        let containers = lock(&self.containers);
        if let Some(entry) = containers.get(name_or_id) {
            return Ok(entry.clone());
        }
        if let Some(entry) = containers.values().find(|e| e.record.name == name_or_id) {
            return Ok(entry.clone());
        }
        let matches: Vec<_> = containers
            .values()
            .filter(|e| !name_or_id.is_empty() && e.record.id.starts_with(name_or_id))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(EngineError::ContainerNotFound(name_or_id.to_owned())),
        }
    }

    /// The OCI runtime container `entry` was created for.
    fn runtime_of<'a>(&'a self, entry: &'a Entry) -> RuntimeRef<'a> {
        RuntimeRef {
            data_root: &self.config.data_root,
            external: entry.record.spec.runtime.as_deref(),
        }
    }

    /// Has the shim's cleanup release what container `id` holds; failures are logged.
    async fn run_cleanup(&self, id: &str) {
        if let Err(error) = self.host.run_cleanup(id).await {
            tracing::warn!(%id, %error, "cleanup failed");
        }
    }
}

impl Engine for LocalEngine {
    async fn create(&self, spec: ContainerSpec) -> Result<String> {
        let inner = self.inner.clone();
        let (record, file_contents) = blocking(move || inner.create_blocking(spec)).await?;
        let id = record.id.clone();
        let entry = self.inner.insert(record);
        *lock(&entry.file_contents) = file_contents;
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        let entry = self.inner.find(id)?;
        self.inner.start(&entry).await
    }

    async fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<()> {
        let entry = self.inner.find(id)?;
        self.inner.stop(&entry, timeout).await
    }

    async fn remove(&self, id: &str, force: bool) -> Result<()> {
        let entry = self.inner.find(id)?;
        self.inner.remove(&entry, force).await
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        Ok(self.inner.find(id)?.info())
    }

    async fn list(&self, all: bool) -> Result<Vec<ContainerInfo>> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.containers).values().cloned().collect();
        let mut infos: Vec<ContainerInfo> = entries
            .iter()
            .map(|e| e.info())
            .filter(|i| all || i.state.status == RunStatus::Running)
            .collect();
        infos.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(infos)
    }

    async fn wait(&self, id: &str) -> Result<ShimState> {
        let entry = self.inner.find(id)?;
        while !self
            .inner
            .wait_exit(&entry, Duration::from_secs(3600))
            .await
        {}
        Ok(entry.dir.read_state())
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<mpsc::Receiver<Result<LogEntry>>> {
        let entry = self.inner.find(id)?;
        Ok(logs::stream(entry, follow, tail))
    }

    async fn health(&self, id: &str) -> Result<Option<HealthState>> {
        let entry = self.inner.find(id)?;
        Ok(entry
            .record
            .spec
            .healthcheck
            .as_ref()
            .and_then(|_| entry.dir.read_health()))
    }
}
