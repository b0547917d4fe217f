//! `image pull`: fetches an image over the OCI distribution API v2 (anonymous bearer-token auth
//! handled by `oci-client`), downloads manifest, config and layers into scratch space, and hands
//! them to the store, which verifies every digest and diff ID before the image appears.

use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::{EngineError, Result};
use crate::store::{
    Descriptor, ImageStore, ImageSummary, Index, Manifest, media_type, normalize_reference,
};
use crate::util::Digest;

fn registry_error(
    reference: &str,
) -> impl Fn(oci_client::errors::OciDistributionError) -> EngineError + '_ {
    move |error| EngineError::Runtime(format!("pulling {reference}: {error}"))
}

fn to_oci(descriptor: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: descriptor.size as i64,
        urls: None,
        annotations: None,
        ..OciDescriptor::default()
    }
}

/// Pulls `reference` into `store`; `insecure` uses plain HTTP.
pub async fn pull(
    store: &std::sync::Arc<ImageStore>,
    reference: &str,
    insecure: bool,
) -> Result<ImageSummary> {
    let local_name = normalize_reference(reference)?;
    let remote: Reference = reference
        .parse()
        .map_err(|e| EngineError::InvalidReference {
            reference: reference.to_owned(),
            reason: format!("{e}"),
        })?;
    // reqwest is built without a default TLS provider; ring is the one the workspace uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    });
    let auth = RegistryAuth::Anonymous;
    let accepted = [
        media_type::OCI_MANIFEST,
        media_type::DOCKER_MANIFEST,
        media_type::OCI_INDEX,
        media_type::DOCKER_LIST,
    ];
    let (mut bytes, _) = client
        .pull_manifest_raw(&remote, &auth, &accepted)
        .await
        .map_err(registry_error(reference))?;
    let mut pinned = remote.clone();
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid("registry manifest", e))?;
    let is_index = probe.get("manifests").is_some();
    if is_index {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::invalid("registry index", e))?;
        let wanted = index
            .manifests
            .into_iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| EngineError::invalid("registry index", "no linux/amd64 image"))?;
        pinned = Reference::with_digest(
            remote.registry().to_owned(),
            remote.repository().to_owned(),
            wanted.digest.to_string(),
        );
        bytes = client
            .pull_manifest_raw(&pinned, &auth, &accepted)
            .await
            .map_err(registry_error(reference))?
            .0;
        let actual = Digest::of(&bytes);
        if actual != wanted.digest {
            return Err(EngineError::DigestMismatch {
                what: "manifest".into(),
                expected: wanted.digest.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    if let Some(expected) = remote.digest() {
        let actual = Digest::of(&bytes);
        if !is_index && actual.to_string() != expected {
            return Err(EngineError::DigestMismatch {
                what: "manifest".into(),
                expected: expected.to_owned(),
                actual: actual.to_string(),
            });
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid("registry manifest", e))?;
    let mut config = Vec::new();
    client
        .pull_blob(&pinned, &to_oci(&manifest.config), &mut config)
        .await
        .map_err(registry_error(reference))?;
    let scratch = store.scratch()?;
    let mut layers = Vec::new();
    for (n, layer) in manifest.layers.iter().enumerate() {
        let path: PathBuf = scratch.path().join(format!("download-{n}"));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(EngineError::io("creating a download file"))?;
        client
            .pull_blob(&pinned, &to_oci(layer), file)
            .await
            .map_err(registry_error(reference))?;
        layers.push((path, layer.clone()));
    }
    let store = store.clone();
    let manifest_bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        store.ingest_downloaded(&scratch, vec![local_name], manifest_bytes, config, layers)
    })
    .await
    .map_err(|e| EngineError::Runtime(format!("background task failed: {e}")))?
}
