//! The image verbs: import, load, list, inspect, remove (refused while a container uses the
//! image) and pull, each on the image store off the async threads.

use std::path::PathBuf;

use super::{LocalEngine, blocking, lock};
use crate::error::Result;
use crate::store::{ImageStore, ImageSummary};
use crate::util::Digest;

impl LocalEngine {
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

    /// What the registry holds under `reference` now, without pulling it; a registry on
    /// loopback is asked over plain HTTP.
    pub async fn resolve_image(&self, reference: &str) -> Result<crate::pull::Resolved> {
        let limit = self.inner.images.limits().metadata_bytes;
        let insecure = crate::pull::is_loopback_registry(reference);
        crate::pull::resolve(reference, insecure, limit).await
    }

    /// `image pull`: OCI distribution API v2; `insecure` uses plain HTTP.
    pub async fn pull_image(&self, reference: String, insecure: bool) -> Result<ImageSummary> {
        crate::pull::pull(&self.inner.images, &reference, insecure).await
    }
}
