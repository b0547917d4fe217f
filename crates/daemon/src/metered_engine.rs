//! The engine as the worker agent sees it, counted: every call goes to the node's
//! [`LocalEngine`], and container starts and image pulls are counted by outcome and timed into
//! the daemon's engine families on the way. The engine itself keeps knowing nothing of metrics.

use std::future::Future;
use std::time::{Duration, Instant};

use engine::{ContainerInfo, ContainerSpec, Engine, HealthState, LocalEngine, LogEntry, ShimState};
use shoal_metrics::{EngineMetrics, Outcome};
use tokio::sync::mpsc;
use worker::ImageProvider;

/// Runs `call` and hands its outcome and how long it took to `record`.
async fn timed<T>(
    call: impl Future<Output = engine::Result<T>>,
    record: impl FnOnce(Outcome, Duration),
) -> engine::Result<T> {
    let started = Instant::now();
    let result = call.await;
    record(Outcome::of(&result), started.elapsed());
    result
}

/// [`LocalEngine`] with its container starts and image pulls counted.
pub(crate) struct MeteredEngine {
    engine: LocalEngine,
    metrics: EngineMetrics,
}

impl MeteredEngine {
    pub(crate) fn new(engine: LocalEngine, metrics: EngineMetrics) -> MeteredEngine {
        MeteredEngine { engine, metrics }
    }
}

impl Engine for MeteredEngine {
    async fn create(&self, spec: ContainerSpec) -> engine::Result<String> {
        self.engine.create(spec).await
    }

    async fn start(&self, id: &str) -> engine::Result<()> {
        timed(self.engine.start(id), |outcome, took| {
            self.metrics.record_container_start(outcome, took)
        })
        .await
    }

    async fn stop(&self, id: &str, timeout: Option<Duration>) -> engine::Result<()> {
        self.engine.stop(id, timeout).await
    }

    async fn remove(&self, id: &str, force: bool) -> engine::Result<()> {
        self.engine.remove(id, force).await
    }

    async fn inspect(&self, id: &str) -> engine::Result<ContainerInfo> {
        self.engine.inspect(id).await
    }

    async fn list(&self, all: bool) -> engine::Result<Vec<ContainerInfo>> {
        self.engine.list(all).await
    }

    async fn wait(&self, id: &str) -> engine::Result<ShimState> {
        self.engine.wait(id).await
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> engine::Result<mpsc::Receiver<engine::Result<LogEntry>>> {
        self.engine.logs(id, follow, tail).await
    }

    async fn health(&self, id: &str) -> engine::Result<Option<HealthState>> {
        self.engine.health(id).await
    }
}

impl ImageProvider for MeteredEngine {
    async fn has_image(&self, reference: &str) -> engine::Result<bool> {
        self.engine.has_image(reference).await
    }

    async fn pull(&self, reference: &str) -> engine::Result<()> {
        timed(
            ImageProvider::pull(&self.engine, reference),
            |outcome, took| self.metrics.record_image_pull(outcome, took),
        )
        .await
    }
}
