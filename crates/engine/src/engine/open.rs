//! Opening the data root: its directories, the image store, what `--init` needs, and the
//! adoption of the containers found there after a daemon restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{EngineConfig, Inner, LocalEngine, blocking};
use crate::container::{ContainerDir, ContainerRecord, RunStatus};
use crate::error::{EngineError, Result};
use crate::host::{Host, RealHost};
use crate::store::ImageStore;
use crate::util;

impl LocalEngine {
    /// Opens the data root and adopts the containers found there: running ones are watched
    /// again, ones whose shim died meanwhile are marked exited and tidied up.
    pub async fn open(config: EngineConfig) -> Result<LocalEngine> {
        let host = RealHost {
            shoal_exe: config.shoal_exe.clone(),
            data_root: config.data_root.clone(),
        };
        LocalEngine::open_with(config, Arc::new(host)).await
    }

    /// [`LocalEngine::open`] with the host's calls going to `host`.
    pub(crate) async fn open_with(
        config: EngineConfig,
        host: Arc<dyn Host>,
    ) -> Result<LocalEngine> {
        let data_root = config.data_root.clone();
        let setup_host = host.clone();
        let (images, init_dir, records, last_capability) = blocking(move || {
            let host = setup_host;
            for dir in ["containers", "volumes", "runtime"] {
                host.create_dir_all(&data_root.join(dir))?;
            }
            let images = Arc::new(ImageStore::open(&data_root)?);
            let init_dir = match host.prepare_init_dir(&data_root) {
                Ok(dir) => Some(dir),
                Err(error) => {
                    tracing::warn!(%error, "--init will not be available");
                    None
                }
            };
            let records = read_records(&data_root)?;
            Ok((images, init_dir, records, host.last_capability()))
        })
        .await?;
        let engine = LocalEngine {
            inner: Arc::new(Inner {
                config,
                host,
                images,
                init_dir,
                last_capability,
                containers: Mutex::new(HashMap::new()),
            }),
        };
        for record in records {
            engine.inner.adopt(record).await;
        }
        Ok(engine)
    }
}

/// The records under `<data-root>/containers`; unreadable ones are skipped with a warning.
fn read_records(data_root: &std::path::Path) -> Result<Vec<ContainerRecord>> {
    let mut records = Vec::new();
    let entries = std::fs::read_dir(data_root.join("containers"))
        .map_err(EngineError::io("listing containers"))?;
    for entry in entries.flatten() {
        let dir = ContainerDir { root: entry.path() };
        match util::read_json::<ContainerRecord>(&dir.record()) {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(path = %entry.path().display(), %error, "skipping unreadable container")
            }
        }
    }
    Ok(records)
}

impl Inner {
    /// Takes a container found on disk back: a running one whose shim still lives is watched
    /// again; one whose shim died while the daemon was away is marked lost.
    async fn adopt(self: &Arc<Self>, record: ContainerRecord) {
        let entry = self.insert(record);
        let state = entry.dir.read_state();
        if state.status != RunStatus::Running {
            return;
        }
        let shim_alive = state
            .shim_pid
            .is_some_and(|pid| self.host.process_matches(pid, &entry.record.id));
        if shim_alive {
            tracing::info!(id = %entry.record.id, "adopted running container");
            self.watch_shim(&entry);
            self.start_health(&entry);
        } else {
            tracing::warn!(id = %entry.record.id, "shim vanished while the daemon was away");
            self.mark_lost(&entry, state).await;
        }
    }
}
