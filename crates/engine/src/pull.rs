//! `image pull`, and what `docker service create` asks first ([`resolve`]): fetches an image over the OCI distribution API v2 (anonymous bearer-token auth
//! handled by `oci-client`), downloads manifest, config and layers into scratch space, and hands
//! them to the store, which verifies every digest and diff ID before the image appears.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::{EngineError, Result};
use crate::store::{
    Descriptor, ImageStore, ImageSummary, Index, Manifest, Platform, media_type,
    normalize_reference,
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

/// Refuses a registry's manifest, config or layer larger than the store's limit for it.
fn check_size(what: &str, size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(EngineError::invalid(
            what,
            format!("{size} bytes is more than the limit of {limit} bytes"),
        ));
    }
    Ok(())
}

/// A download target that fails once more bytes arrive than the descriptor announced, so a
/// registry can't fill the disk or the memory past what it said it would send.
struct Announced<W> {
    inner: W,
    left: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Announced<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return Poll::Ready(Err(std::io::Error::other(
                "the registry sent more bytes than the descriptor announced",
            )));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.left -= n as u64;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Pulls `reference` into `store`; `insecure` uses plain HTTP.
/// The registry reference `reference` names.
fn remote_reference(reference: &str) -> Result<Reference> {
    reference
        .parse()
        .map_err(|e| EngineError::InvalidReference {
            reference: reference.to_owned(),
            reason: format!("{e}"),
        })
}

fn registry_client(insecure: bool) -> Client {
    // reqwest is built without a default TLS provider; ring is the one the workspace uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    })
}

/// The manifest types asked of a registry.
const ACCEPTED_MANIFESTS: [&str; 4] = [
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_LIST,
];

/// Fetches the manifest (or index) `remote` names. oci-client reads a manifest whole; its size
/// is checked before anything else reads it.
async fn fetch_manifest(
    client: &Client,
    remote: &Reference,
    reference: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let (bytes, _) = client
        .pull_manifest_raw(remote, &RegistryAuth::Anonymous, &ACCEPTED_MANIFESTS)
        .await
        .map_err(registry_error(reference))?;
    check_size("registry manifest", bytes.len() as u64, limit)?;
    Ok(bytes.to_vec())
}

/// Whether the reference names a registry on this host, which Docker talks to over plain HTTP
/// by default (127.0.0.0/8 is an insecure registry unless configured otherwise).
pub fn is_loopback_registry(reference: &str) -> bool {
    let Some((first, _)) = reference.split_once('/') else {
        return false;
    };
    // As in Docker, the first component names a registry only if it looks like a host.
    if !(first.contains('.') || first.contains(':') || first == "localhost") {
        return false;
    }
    let host = match first.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => first.split(':').next().unwrap_or(first),
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback())
}

/// What a registry holds under a reference, as Docker's distribution inspect shows it: the
/// manifest's (or index's) descriptor, and the platforms it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platforms: Vec<Platform>,
}

/// Asks the registry what `reference` names now, without pulling it: what `docker service
/// create` pins a service's image to.
pub async fn resolve(reference: &str, insecure: bool, limit: u64) -> Result<Resolved> {
    let remote = remote_reference(reference)?;
    let client = registry_client(insecure);
    let bytes = fetch_manifest(&client, &remote, reference, limit).await?;
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid("registry manifest", e))?;
    let declared = probe.get("mediaType").and_then(|m| m.as_str());
    let digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    if probe.get("manifests").is_some() {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::invalid("registry index", e))?;
        return Ok(Resolved {
            media_type: declared.unwrap_or(media_type::OCI_INDEX).to_owned(),
            digest,
            size,
            platforms: index
                .manifests
                .into_iter()
                .filter_map(|manifest| manifest.platform)
                .collect(),
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid("registry manifest", e))?;
    // A lone manifest's platform is its image config's.
    check_size("image config", manifest.config.size, limit)?;
    let mut config = Announced {
        inner: Vec::new(),
        left: manifest.config.size,
    };
    client
        .pull_blob(&remote, &to_oci(&manifest.config), &mut config)
        .await
        .map_err(registry_error(reference))?;
    let platform: Platform = serde_json::from_slice(&config.inner)
        .map_err(|e| EngineError::invalid("image config", e))?;
    Ok(Resolved {
        media_type: declared.unwrap_or(media_type::OCI_MANIFEST).to_owned(),
        digest,
        size,
        platforms: vec![platform],
    })
}

pub async fn pull(
    store: &std::sync::Arc<ImageStore>,
    reference: &str,
    insecure: bool,
) -> Result<ImageSummary> {
    let local_name = normalize_reference(reference)?;
    let remote = remote_reference(reference)?;
    let client = registry_client(insecure);
    let limits = store.limits().clone();
    let mut bytes = fetch_manifest(&client, &remote, reference, limits.metadata_bytes).await?;
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
        bytes = fetch_manifest(&client, &pinned, reference, limits.metadata_bytes).await?;
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
    check_size("image config", manifest.config.size, limits.metadata_bytes)?;
    let mut config = Announced {
        inner: Vec::new(),
        left: manifest.config.size,
    };
    client
        .pull_blob(&pinned, &to_oci(&manifest.config), &mut config)
        .await
        .map_err(registry_error(reference))?;
    let config = config.inner;
    let scratch = store.scratch()?;
    let mut layers = Vec::new();
    for (n, layer) in manifest.layers.iter().enumerate() {
        let path: PathBuf = scratch.path().join(format!("download-{n}"));
        check_size(
            &format!("layer {}", layer.digest),
            layer.size,
            limits.layer_bytes,
        )?;
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(EngineError::io("creating a download file"))?;
        let file = Announced {
            inner: file,
            left: layer.size,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registries_on_this_host_are_pulled_over_plain_http() {
        for (reference, loopback) in [
            ("busybox", false),
            ("library/busybox:1.36", false),
            ("localhost/app", true),
            ("localhost:5000/app:1", true),
            ("127.0.0.1:5000/app", true),
            ("127.1.2.3/app", true),
            ("[::1]:5000/app", true),
            ("registry.example.com/app", false),
            ("10.0.0.5:5000/app", false),
        ] {
            assert_eq!(is_loopback_registry(reference), loopback, "{reference}");
        }
    }
}
