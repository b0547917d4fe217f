//! Makes sure a task's image is on the node before its container is created: looks it up, pulls
//! it if absent, and turns a failed pull into an error that says how to get the image there.
//! Tasks that need the same missing image share one pull.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{EngineError, LocalEngine};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// Longest a pull may take before the tasks waiting for it fail.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// What the agent needs from an engine's image store.
pub trait ImageProvider: Send + Sync + 'static {
    /// Whether the image (`name[:tag]` or ID) is present on this node.
    fn has_image(&self, reference: &str) -> impl Future<Output = engine::Result<bool>> + Send;
    /// Fetches the image from its registry.
    fn pull(&self, reference: &str) -> impl Future<Output = engine::Result<()>> + Send;
}

impl ImageProvider for LocalEngine {
    async fn has_image(&self, reference: &str) -> engine::Result<bool> {
        let engine = self.clone();
        let reference = reference.to_owned();
        // The store reads its index from disk.
        let found = tokio::task::spawn_blocking(move || engine.images().find(&reference))
            .await
            .map_err(|error| {
                EngineError::Runtime(format!("looking up an image failed: {error}"))
            })?;
        match found {
            Ok(_) => Ok(true),
            Err(EngineError::ImageNotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn pull(&self, reference: &str) -> engine::Result<()> {
        self.pull_image(
            reference.to_owned(),
            engine::pull::is_loopback_registry(reference),
        )
        .await
        .map(drop)
    }
}

type SharedPull = Shared<BoxFuture<'static, Result<(), String>>>;

/// Ensures images are present, with one pull per image however many tasks wait for it.
pub(super) struct ImagePuller<E> {
    engine: Arc<E>,
    pulls_in_flight: Mutex<HashMap<String, SharedPull>>,
}

impl<E: ImageProvider> ImagePuller<E> {
    pub(super) fn new(engine: Arc<E>) -> ImagePuller<E> {
        ImagePuller {
            engine,
            pulls_in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Returns once `image` is present, pulling it if needed; the error is the task's.
    pub(super) async fn ensure_present(&self, image: &str) -> Result<(), String> {
        match self.engine.has_image(image).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => return Err(format!("looking up image {image}: {error}")),
        }
        let pull = self.join_pull(image);
        let result = pull.clone().await;
        self.forget_pull(image, &pull);
        result.map_err(|error| {
            format!(
                "No such image: {image} (import, load or pull it on this node, or push it to a \
                 registry the node can reach; pulling it failed: {error})"
            )
        })
    }

    /// The pull of `image` already under way, or a new one.
    fn join_pull(&self, image: &str) -> SharedPull {
        let mut pulls = lock(&self.pulls_in_flight);
        pulls
            .entry(image.to_owned())
            .or_insert_with(|| {
                let engine = Arc::clone(&self.engine);
                let image = image.to_owned();
                async move {
                    // A task that looked before an earlier pull finished lands here after it;
                    // the image is there by now and needs no second pull.
                    if let Ok(true) = engine.has_image(&image).await {
                        return Ok(());
                    }
                    tracing::info!(%image, "pulling a task's image");
                    match tokio::time::timeout(PULL_TIMEOUT, engine.pull(&image)).await {
                        Ok(result) => result.map_err(|error| error.to_string()),
                        Err(_) => Err(format!("no answer within {PULL_TIMEOUT:?}")),
                    }
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    /// Drops a finished pull, so that a later task tries again rather than reusing its result.
    fn forget_pull(&self, image: &str, finished: &SharedPull) {
        let mut pulls = lock(&self.pulls_in_flight);
        if pulls
            .get(image)
            .is_some_and(|current| current.ptr_eq(finished))
        {
            pulls.remove(image);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
