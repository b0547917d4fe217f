//! The [`Engine`] trait the worker agent programs against, and [`LocalEngine`], its
//! implementation on this host: image store, bundles, shims, stop/remove, logs, healthchecks,
//! and adoption of running containers after a daemon restart.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::container::{ContainerDir, ContainerRecord, RunStatus, ShimState};
use crate::error::{EngineError, Result};
use crate::health::{HealthState, Probe};
use crate::logs::{self, LogEntry};
use crate::runtime::runtime_for;
use crate::shim::ShimLaunch;
use crate::spec::{self, BundlePaths, ContainerSpec, MountSpec, ResolvedUser};
use crate::store::{ImageStore, ImageSummary};
use crate::sys;
use crate::util::{self, Digest};

/// How long an exec helper told to stop (a healthcheck that timed out) gets to kill its probe
/// and exit before it is killed itself.
const PROBE_STOP_GRACE: Duration = Duration::from_secs(2);

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

impl LocalEngine {
    /// Opens the data root and adopts the containers found there: running ones are watched
    /// again, ones whose shim died meanwhile are marked exited and tidied up.
    pub async fn open(config: EngineConfig) -> Result<LocalEngine> {
        let data_root = config.data_root.clone();
        let (images, init_dir, records, last_capability) = blocking(move || {
            for dir in ["containers", "volumes", "runtime"] {
                let path = data_root.join(dir);
                std::fs::create_dir_all(&path).map_err(EngineError::io(format!("creating {}", path.display())))?;
            }
            let images = Arc::new(ImageStore::open(&data_root)?);
            let init_dir = match prepare_init_dir(&data_root) {
                Ok(dir) => Some(dir),
                Err(error) => {
                    tracing::warn!(%error, "--init will not be available");
                    None
                }
            };
            let mut records = Vec::new();
            let entries = std::fs::read_dir(data_root.join("containers")).map_err(EngineError::io("listing containers"))?;
            for entry in entries.flatten() {
                let dir = ContainerDir { root: entry.path() };
                match util::read_json::<ContainerRecord>(&dir.record()) {
                    Ok(record) => records.push(record),
                    Err(error) => tracing::warn!(path = %entry.path().display(), %error, "skipping unreadable container"),
                }
            }
            Ok((images, init_dir, records, kernel_last_capability()))
        })
        .await?;
        let engine = LocalEngine {
            inner: Arc::new(Inner {
                config,
                images,
                init_dir,
                last_capability,
                containers: Mutex::new(HashMap::new()),
            }),
        };
        for record in records {
            let entry = engine.inner.insert(record);
            let state = entry.dir.read_state();
            if state.status != RunStatus::Running {
                continue;
            }
            let shim_alive = state
                .shim_pid
                .is_some_and(|pid| sys::process_matches(pid, &entry.record.id));
            if shim_alive {
                tracing::info!(id = %entry.record.id, "adopted running container");
                engine.inner.watch_shim(&entry);
                engine.inner.start_health(&entry);
            } else {
                tracing::warn!(id = %entry.record.id, "shim vanished while the daemon was away");
                engine.inner.mark_lost(&entry, state).await;
            }
        }
        Ok(engine)
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// `image import`.
    pub async fn import_image(&self, tarball: PathBuf, reference: String) -> Result<ImageSummary> {
        let inner = self.inner.clone();
        blocking(move || inner.images.import(&tarball, &reference)).await
    }

    /// `image load`.
    pub async fn load_images(&self, archive: PathBuf) -> Result<Vec<ImageSummary>> {
        let inner = self.inner.clone();
        blocking(move || inner.images.load(&archive)).await
    }

    /// `image ls`.
    pub async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let inner = self.inner.clone();
        blocking(move || inner.images.list()).await
    }

    /// `image inspect`.
    pub async fn inspect_image(&self, name: String) -> Result<serde_json::Value> {
        let inner = self.inner.clone();
        blocking(move || inner.images.inspect(&name)).await
    }

    /// `image rm`: refuses while a container uses the image.
    pub async fn remove_image(&self, name: String) -> Result<Vec<String>> {
        let inner = self.inner.clone();
        blocking(move || {
            let users: Vec<(Digest, String)> = lock(&inner.containers)
                .values()
                .map(|e| (e.record.image_id.clone(), e.record.name.clone()))
                .collect();
            inner.images.remove(&name, |id| {
                users
                    .iter()
                    .find(|(image, _)| image == id)
                    .map(|(_, name)| name.clone())
            })
        })
        .await
    }

    /// `image pull`: OCI distribution API v2; `insecure` uses plain HTTP.
    pub async fn pull_image(&self, reference: String, insecure: bool) -> Result<ImageSummary> {
        crate::pull::pull(&self.inner.images, &reference, insecure).await
    }
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

    fn create_blocking(&self, mut spec: ContainerSpec) -> Result<(ContainerRecord, FileContents)> {
        let image = self.images.resolve(&spec.image)?;
        let id = util::random_id()?;
        let name = match &spec.name {
            Some(name) => {
                spec::validate_name("container name", name)?;
                name.clone()
            }
            None => format!("shoal-{}", &id[..12]),
        };
        let limit = self.images.limits().image_file_bytes;
        let read = |file: &str| -> Result<String> {
            let contents = image.read_file(file, limit)?.unwrap_or_default();
            Ok(String::from_utf8_lossy(&contents).into_owned())
        };
        let mut user = match &spec.user {
            None => ResolvedUser::default(),
            Some(user) => spec::resolve_user(user, &read("etc/passwd")?, &read("etc/group")?)?,
        };
        if !spec.groups.is_empty() {
            user.additional_gids = spec::resolve_groups(&spec.groups, &read("etc/group")?)?;
        }
        let stop_signal = match spec.stop_signal.clone().or_else(|| {
            image
                .config
                .config
                .as_ref()
                .and_then(|c| c.stop_signal.clone())
        }) {
            Some(signal) => spec::parse_signal(&signal)?,
            None => libc::SIGTERM,
        };
        let mut file_contents = Vec::new();
        for (index, mount) in spec.mounts.iter_mut().enumerate() {
            if let MountSpec::File { contents, .. } = mount {
                file_contents.push((index, std::mem::take(contents)));
            }
        }
        let dir = ContainerDir::new(&self.config.data_root, &id);
        let paths = BundlePaths {
            rootfs: dir.rootfs(),
            volumes: self.config.data_root.join("volumes"),
            files: dir.files(),
            init_dir: self.init_dir.clone(),
        };
        let oci = spec::runtime_spec(
            &id,
            &spec,
            &image.config,
            user,
            &paths,
            self.last_capability,
        )?;
        let record = ContainerRecord {
            args: spec::process_args(&spec, &image.config)?,
            id: id.clone(),
            name: name.clone(),
            created: util::rfc3339(SystemTime::now()),
            image_id: image.id.clone(),
            layer_dirs: image.layer_dirs.clone(),
            stop_signal,
            spec,
        };
        {
            let containers = lock(&self.containers);
            if containers.values().any(|e| e.record.name == name) {
                return Err(EngineError::NameInUse(name));
            }
            std::fs::create_dir_all(&dir.root)
                .map_err(EngineError::io(format!("creating {}", dir.root.display())))?;
        }
        let written = util::write_json(&dir.oci_config(), &oci)
            .and_then(|()| util::write_json(&dir.record(), &record));
        if let Err(error) = written {
            let _ = std::fs::remove_dir_all(&dir.root);
            return Err(error);
        }
        Ok((record, file_contents))
    }

    async fn start(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<()> {
        let _op = entry.op.lock().await;
        let state = entry.dir.read_state();
        if state.status == RunStatus::Running {
            return Err(EngineError::WrongState {
                id: entry.record.id.clone(),
                state: "running".into(),
                hint: "it is already started".into(),
            });
        }
        if entry
            .record
            .spec
            .mounts
            .iter()
            .any(|m| matches!(m, MountSpec::File { .. }))
            && lock(&entry.file_contents).is_empty()
        {
            return Err(EngineError::WrongState {
                id: entry.record.id.clone(),
                state: "exited".into(),
                hint: "its file mounts were only in the memory of an earlier daemon; recreate the container".into(),
            });
        }
        let launch = ShimLaunch {
            files: lock(&entry.file_contents).clone(),
        };
        let launch =
            serde_json::to_vec(&launch).map_err(|e| EngineError::invalid("launch request", e))?;
        if entry.record.spec.healthcheck.is_some() {
            util::write_json(&entry.dir.health(), &HealthState::default())?;
        }
        let mut child = tokio::process::Command::new(&self.config.shoal_exe)
            .arg("shim")
            .arg("--data-root")
            .arg(&self.config.data_root)
            .arg("--id")
            .arg(&entry.record.id)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(EngineError::io(format!(
                "running {} shim",
                self.config.shoal_exe.display()
            )))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&launch)
                .await
                .map_err(EngineError::io("sending the launch request to the shim"))?;
        }
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            tokio::io::BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .map_err(EngineError::io("reading the shim's answer"))?;
        }
        let _ = child.wait().await;
        let shim_error = |reason: String| EngineError::Shim {
            id: entry.record.id.clone(),
            reason,
            log: entry.dir.shim_log(),
        };
        match line.trim_end().split_once(' ') {
            Some(("ok", _pid)) => {
                self.watch_shim(entry);
                self.start_health(entry);
                Ok(())
            }
            Some(("error", reason)) => Err(shim_error(reason.to_owned())),
            _ => Err(shim_error(format!("the shim gave no answer ({line:?})"))),
        }
    }

    /// Watches the shim's pidfd; when the shim exits, notifies waiters and handles `--rm`.
    fn watch_shim(self: &Arc<Self>, entry: &Arc<Entry>) {
        let inner = self.clone();
        let entry = entry.clone();
        tokio::spawn(async move {
            let shim_pid = entry.dir.read_state().shim_pid;
            if let Some(pid) = shim_pid {
                match sys::pidfd_open(pid).and_then(|fd| {
                    // SAFETY: the AsyncFd owns `fd` (an OwnedFd) for its whole life, so the
                    // descriptor stays open and unchanged while registered.
                    unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            fd,
                            tokio::io::Interest::READABLE,
                        )
                    }
                    .map_err(|e| EngineError::io("watching the shim")(e.into()))
                }) {
                    Ok(fd) => {
                        let _ = fd.readable().await;
                    }
                    Err(error) => tracing::debug!(%error, "shim already gone"),
                }
            }
            let state = entry.dir.read_state();
            if state.status == RunStatus::Running {
                inner.mark_lost(&entry, state).await;
            }
            entry.stop_health();
            entry.changed.send_modify(|n| *n += 1);
            tracing::info!(id = %entry.record.id, "container exited");
            if entry.record.spec.auto_remove
                && let Err(error) = inner.remove(&entry, true).await
            {
                tracing::warn!(id = %entry.record.id, %error, "auto-remove failed");
            }
        });
    }

    /// Records that a container's shim died without reporting, kills what is left of the
    /// container and releases its mounts and cgroups.
    async fn mark_lost(&self, entry: &Entry, mut state: ShimState) {
        if let Some(pid) = state.pid {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cgroup.contains(&spec::cgroup_path(&entry.record.id)) {
                sys::kill(pid, libc::SIGKILL);
            }
        }
        self.run_cleanup(&entry.record.id).await;
        state.status = RunStatus::Exited;
        state.shim_pid = None;
        state.pid = None;
        state
            .finished_at
            .get_or_insert_with(|| util::rfc3339(SystemTime::now()));
        state
            .error
            .get_or_insert_with(|| "the shim died; exit status unknown".to_owned());
        if let Err(error) = util::write_json(&entry.dir.state(), &state) {
            tracing::warn!(%error, "could not record a lost container");
        }
    }

    async fn run_cleanup(&self, id: &str) {
        let status = tokio::process::Command::new(&self.config.shoal_exe)
            .arg("shim")
            .arg("--cleanup")
            .arg("--data-root")
            .arg(&self.config.data_root)
            .arg("--id")
            .arg(id)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        if let Err(error) = status {
            tracing::warn!(%id, %error, "cleanup failed");
        }
    }

    fn start_health(self: &Arc<Self>, entry: &Arc<Entry>) {
        let Some(check) = entry.record.spec.healthcheck.clone() else {
            return;
        };
        let inner = self.clone();
        let task_entry = entry.clone();
        let task = tokio::spawn(async move {
            let entry = task_entry;
            let started = Instant::now();
            let mut interval = tokio::time::interval_at(
                tokio::time::Instant::now() + check.interval,
                check.interval,
            );
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if entry.dir.read_state().status != RunStatus::Running {
                    return;
                }
                let probe = inner.probe(&entry, &check.test, check.timeout).await;
                let mut health = entry.dir.read_health().unwrap_or_default();
                health.record(probe, started.elapsed() < check.start_period, check.retries);
                if let Err(error) = util::write_json(&entry.dir.health(), &health) {
                    tracing::warn!(%error, "could not record health");
                }
            }
        });
        if let Some(old) = lock(&entry.health_task).replace(task.abort_handle()) {
            old.abort();
        }
    }

    async fn probe(&self, entry: &Entry, test: &[String], timeout: Duration) -> Probe {
        let start = util::rfc3339(SystemTime::now());
        let exec = runtime_for(&self.config.data_root, entry.record.spec.runtime.as_deref())
            .exec_command(&self.config.shoal_exe, &entry.record.id, test);
        let mut command = tokio::process::Command::from(exec);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let (exit_code, output) = match command.spawn() {
            Err(error) => (-1, format!("cannot run the healthcheck: {error}")),
            Ok(child) => {
                let helper = child.id().and_then(|pid| i32::try_from(pid).ok());
                let wait = child.wait_with_output();
                tokio::pin!(wait);
                match tokio::time::timeout(timeout, &mut wait).await {
                    Err(_) => {
                        // SIGKILL (on drop) would end the exec helper and leave the probe running
                        // in the container; told to stop, the helper kills the probe first (runc
                        // exec passes the signal on to it). The helper is unreaped until `wait`
                        // completes, so its pid is still its own.
                        if let Some(pid) = helper {
                            sys::kill(pid, libc::SIGTERM);
                            let _ = tokio::time::timeout(PROBE_STOP_GRACE, &mut wait).await;
                        }
                        (-1, format!("healthcheck timed out after {timeout:?}"))
                    }
                    Ok(Err(error)) => (-1, error.to_string()),
                    Ok(Ok(output)) => {
                        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                        text.push_str(&String::from_utf8_lossy(&output.stderr));
                        text.truncate(4096);
                        (output.status.code().unwrap_or(-1), text)
                    }
                }
            }
        };
        Probe {
            start,
            end: util::rfc3339(SystemTime::now()),
            exit_code,
            output,
        }
    }

    /// Signals the container's init, through a pidfd opened while the shim still reports it
    /// running, so a recycled pid is never hit.
    fn signal(&self, entry: &Entry, signal: i32) -> Result<bool> {
        let state = entry.dir.read_state();
        let (RunStatus::Running, Some(pid)) = (state.status, state.pid) else {
            return Ok(false);
        };
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => return Ok(false),
        };
        if entry.dir.read_state().pid != Some(pid) {
            return Ok(false);
        }
        sys::pidfd_send_signal(&pidfd, signal)?;
        Ok(true)
    }

    /// Waits up to `timeout` for the shim to report the container exited.
    async fn wait_exit(&self, entry: &Entry, timeout: Duration) -> bool {
        let mut changed = entry.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if entry.dir.read_state().status != RunStatus::Running {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return entry.dir.read_state().status != RunStatus::Running,
            }
        }
    }

    async fn stop(&self, entry: &Entry, timeout: Option<Duration>) -> Result<()> {
        let _op = entry.op.lock().await;
        let grace = timeout.unwrap_or_else(|| entry.record.stop_timeout());
        if !self.signal(entry, entry.record.stop_signal)? {
            return Ok(());
        }
        if self.wait_exit(entry, grace).await {
            return Ok(());
        }
        tracing::info!(id = %entry.record.id, "grace period over; killing");
        self.signal(entry, libc::SIGKILL)?;
        if self.wait_exit(entry, Duration::from_secs(30)).await {
            Ok(())
        } else {
            Err(EngineError::Runtime(format!(
                "container {} survived SIGKILL; see {}",
                entry.record.id,
                entry.dir.shim_log().display()
            )))
        }
    }

    async fn remove(&self, entry: &Arc<Entry>, force: bool) -> Result<()> {
        if entry.dir.read_state().status == RunStatus::Running {
            if !force {
                return Err(EngineError::WrongState {
                    id: entry.record.id.clone(),
                    state: "running".into(),
                    hint: "stop it first, or remove it with -f".into(),
                });
            }
            self.signal(entry, libc::SIGKILL)?;
            if !self.wait_exit(entry, Duration::from_secs(30)).await {
                return Err(EngineError::Runtime(format!(
                    "container {} survived SIGKILL",
                    entry.record.id
                )));
            }
        }
        let _op = entry.op.lock().await;
        entry.stop_health();
        let runtime_state = self.config.data_root.join("runtime");
        let leftovers = sys::is_mounted(&entry.dir.rootfs())
            || sys::is_mounted(&entry.dir.files())
            || std::fs::read_dir(&runtime_state)
                .map(|dirs| {
                    dirs.flatten()
                        .any(|d| d.path().join(&entry.record.id).exists())
                })
                .unwrap_or(false);
        if leftovers {
            self.run_cleanup(&entry.record.id).await;
        }
        let root = entry.dir.root.clone();
        blocking(move || {
            std::fs::remove_dir_all(&root)
                .map_err(EngineError::io(format!("removing {}", root.display())))
        })
        .await?;
        lock(&self.containers).remove(&entry.record.id);
        Ok(())
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
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            let dir = entry.dir.root.clone();
            let first = blocking(move || logs::read_entries(&dir, tail)).await;
            let mut cursor = match first {
                Ok((entries, cursor)) => {
                    for item in entries {
                        if sender.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                    cursor
                }
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            if !follow {
                return;
            }
            loop {
                let running = entry.dir.read_state().status == RunStatus::Running;
                let new = match logs::read_new_entries(&entry.dir.root, &mut cursor) {
                    Ok(new) => new,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let idle = new.is_empty();
                for item in new {
                    if sender.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                if idle && !running {
                    return;
                }
                if idle {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = sender.closed() => return,
                    }
                }
            }
        });
        Ok(receiver)
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

/// Gathers what `--init` needs inside a container: the dynamic loader and the libraries this
/// very process has mapped (read from /proc/self/maps), plus a hard link to (or copy of) the
/// `shoal` binary. A container then runs `/.shoal/ld.so --library-path /.shoal /.shoal/shoal
/// init`, which needs nothing from the image. Files are replaced by rename, never rewritten in
/// place, because running `--init` containers have this directory mapped.
/// `/proc/sys/kernel/cap_last_cap`; CAP_AUDIT_READ (37, Linux 3.16) when it can't be read.
fn kernel_last_capability() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(37)
}

fn prepare_init_dir(data_root: &Path) -> Result<PathBuf> {
    let dir = data_root.join("init");
    std::fs::create_dir_all(&dir).map_err(EngineError::io("creating the init directory"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(EngineError::io("reading /proc/self/maps"))?;
    let mut libraries: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libraries.sort();
    libraries.dedup();
    let replace = |source: &Path, name: &str, link: bool| -> Result<()> {
        let temporary = dir.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&temporary);
        if !(link && std::fs::hard_link(source, &temporary).is_ok()) {
            std::fs::copy(source, &temporary)
                .map_err(EngineError::io(format!("copying {}", source.display())))?;
        }
        std::fs::rename(&temporary, dir.join(name))
            .map_err(EngineError::io(format!("installing {name} for --init")))
    };
    let mut have_loader = false;
    for library in &libraries {
        let Some(name) = library
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        if name.starts_with("ld-linux") {
            have_loader = true;
            replace(library, "ld.so", false)?;
        } else {
            replace(library, &name, false)?;
        }
    }
    if !have_loader {
        return Err(EngineError::NotSupported(
            "--init without a dynamic loader in this process".to_owned(),
        ));
    }
    let exe = std::env::current_exe().map_err(EngineError::io("finding the shoal binary"))?;
    replace(&exe, "shoal", true)?;
    Ok(dir)
}
