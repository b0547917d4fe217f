//! The content-addressed image store: an OCI image layout under `<data-root>/images` (blobs
//! named by digest plus an `index.json` naming the tagged manifests), and each layer unpacked
//! once under `layers/<diff-id>` for overlayfs to stack.
//!
//! Every write lands in `tmp/` first and is verified there. `commit` then moves the pieces into
//! place under the store lock and names the image in `index.json` as the very last step, so an
//! image is visible only once it is whole, and a failed import leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::beneath::{Beneath, Found};
use crate::error::{EngineError, Result, error_chain};
use crate::unpack::{self, TarKind};
use crate::util::{self, BoundedReader, Digest, HashingReader};

/// OCI media types we read and write.
pub mod media_type {
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A docker schema 2 manifest (treated like an OCI manifest).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// A docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// An OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip-compressed layer.
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A content descriptor, as in the OCI image spec.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Free-form annotations (the ref name lives here in `index.json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform, in indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An image platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
}

/// An OCI image manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An OCI image index (also the store's `index.json`).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config the engine uses; the blob itself is kept byte for byte.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ImageConfigFile {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// When the image was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Defaults for containers run from the image.
    #[serde(default)]
    pub config: Option<ImageRunConfig>,
    /// The uncompressed layer digests, bottom first.
    pub rootfs: RootFs,
}

/// The run defaults in an image config (docker spells them in PascalCase).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRunConfig {
    /// `KEY=value` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default command.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The user.
    #[serde(default)]
    pub user: Option<String>,
    /// The stop signal, e.g. `SIGQUIT`.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The `rootfs` section of an image config.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// One image as `image ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageSummary {
    /// The image ID: its config digest.
    pub id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// Every `name:tag` pointing at it.
    pub repo_tags: Vec<String>,
    /// Creation time from the config, RFC 3339.
    pub created: Option<String>,
    /// Sum of the layer blob sizes.
    pub size: u64,
}

/// An image resolved for running a container.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The image ID.
    pub id: Digest,
    /// The parsed config.
    pub config: ImageConfigFile,
    /// Unpacked layer directories, bottom first.
    pub layer_dirs: Vec<PathBuf>,
}

impl ResolvedImage {
    /// The file at `path` as a container of this image would see it (the top layer that has it,
    /// unless a layer above deleted it), read beneath each layer's directory: `None` when no
    /// layer has it. Anything but a regular file of at most `limit` bytes is refused.
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let what = || format!("the image's /{}", path.trim_start_matches('/'));
        for dir in self.layer_dirs.iter().rev() {
            let layer = Beneath::open(dir)
                .map_err(EngineError::io(format!("opening layer {}", dir.display())))?;
            match layer.read(Path::new(path), limit) {
                Ok(Found::Missing) => continue,
                Ok(Found::Whiteout) => return Ok(None),
                Ok(Found::File(contents)) => return Ok(Some(contents)),
                Err(e) => return Err(EngineError::invalid(what(), e)),
            }
        }
        Ok(None)
    }
}

/// Normalises `name[:tag]` to `name:tag` (default tag `latest`).
pub fn normalize_reference(reference: &str) -> Result<String> {
    let invalid = |reason: &str| EngineError::InvalidReference {
        reference: reference.to_owned(),
        reason: reason.to_owned(),
    };
    if reference.is_empty() {
        return Err(invalid("empty"));
    }
    if reference.contains('@') {
        return Err(invalid(
            "digest references are not supported here; use name:tag",
        ));
    }
    // Docker Hub's implicit prefixes are dropped, as docker shows them.
    let reference = reference.strip_prefix("docker.io/").unwrap_or(reference);
    let reference = reference.strip_prefix("library/").unwrap_or(reference);
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    };
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b));
    if name.is_empty() || !name_ok {
        return Err(invalid(
            "names use lowercase letters, digits, '.', '_', '-' and '/'",
        ));
    }
    let tag_ok = tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if tag.is_empty() || tag.len() > 128 || !tag_ok {
        return Err(invalid("tags use letters, digits, '.', '_' and '-'"));
    }
    Ok(format!("{name}:{tag}"))
}

/// A layer verified and unpacked in `tmp/`, waiting for `commit`.
struct PendingLayer {
    blob: PathBuf,
    descriptor: Descriptor,
    diff_id: Digest,
    unpacked: PathBuf,
}

/// An image whose pieces are all verified and waiting in `tmp/`.
struct PendingImage {
    refs: Vec<String>,
    config: Vec<u8>,
    /// The original manifest bytes when the source had one (kept so the digest survives).
    manifest: Option<Vec<u8>>,
    layers: Vec<PendingLayer>,
}

/// Deletes a scratch directory under `tmp/` when dropped, so every error path cleans up.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    #[cfg(feature = "runtime")]
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How large image content may be before the store refuses it. Image content is hostile input:
/// without bounds, a small gzip layer or a made-up manifest could fill the disk or the memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimits {
    /// A manifest, index or image config, and an archive's `manifest.json` or `index.json`.
    pub metadata_bytes: u64,
    /// One layer as stored or sent (compressed, usually).
    pub layer_bytes: u64,
    /// One layer's tar stream once uncompressed.
    pub unpacked_layer_bytes: u64,
    /// An `image load` archive's tar stream once uncompressed.
    pub archive_bytes: u64,
    /// A file the engine reads out of an image (`/etc/passwd`, `/etc/group`).
    pub image_file_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> ImageLimits {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        ImageLimits {
            // The OCI distribution spec's suggested manifest limit.
            metadata_bytes: 4 * MIB,
            layer_bytes: 16 * GIB,
            unpacked_layer_bytes: 64 * GIB,
            archive_bytes: 64 * GIB,
            image_file_bytes: MIB,
        }
    }
}

/// The image store. Cheap to share behind an `Arc`; all methods are blocking.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    layers: PathBuf,
    tmp: PathBuf,
    lock: Mutex<()>,
    limits: ImageLimits,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `data_root`, clearing leftovers of
    /// interrupted imports.
    pub fn open(data_root: &Path) -> Result<ImageStore> {
        let root = data_root.join("images");
        let store = ImageStore {
            layers: data_root.join("layers"),
            tmp: data_root.join("tmp"),
            root,
            lock: Mutex::new(()),
            limits: ImageLimits::default(),
        };
        let _ = std::fs::remove_dir_all(&store.tmp);
        for dir in [
            store.root.join("blobs/sha256"),
            store.layers.clone(),
            store.tmp.clone(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            util::write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            store.write_index(&Index {
                schema_version: 2,
                manifests: Vec::new(),
            })?;
        }
        Ok(store)
    }

    /// The same store with other size limits (tests use small ones).
    pub fn with_limits(mut self, limits: ImageLimits) -> ImageStore {
        self.limits = limits;
        self
    }

    /// The limits this store holds image content to.
    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The unpacked directory of the layer with this diff ID.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers.join(diff_id.hex())
    }

    fn read_index(&self) -> Result<Index> {
        util::read_json(&self.index_path())
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        util::write_json(&self.index_path(), index)
    }

    pub(crate) fn scratch(&self) -> Result<ScratchDir> {
        let dir = self.tmp.join(util::random_id()?);
        std::fs::create_dir_all(&dir)
            .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        Ok(ScratchDir(dir))
    }

    /// A new scratch file path for an upload the daemon streams in; the caller removes it.
    pub fn upload_path(&self) -> Result<PathBuf> {
        Ok(self.tmp.join(format!("upload-{}", util::random_id()?)))
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes =
            std::fs::read(&path).map_err(EngineError::io(format!("reading blob {digest}")))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(EngineError::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// `shoal image import`: a root filesystem tarball (plain or gzip) becomes a one-layer image.
    pub fn import(&self, tarball: &Path, reference: &str) -> Result<ImageSummary> {
        let reference = normalize_reference(reference)?;
        let scratch = self.scratch()?;
        let input = File::open(tarball)
            .map_err(EngineError::io(format!("opening {}", tarball.display())))?;
        let layer = self.ingest_layer(&scratch.0, input, "rootfs tarball", None, None)?;
        let now = util::rfc3339(SystemTime::now());
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": now,
            "config": { "Env": [DEFAULT_PATH_ENV] },
            "rootfs": { "type": "layers", "diff_ids": [layer.diff_id.to_string()] },
            "history": [{ "created": now, "created_by": "shoal image import" }],
        });
        let config =
            serde_json::to_vec(&config).map_err(|e| EngineError::invalid("image config", e))?;
        self.commit(PendingImage {
            refs: vec![reference],
            config,
            manifest: None,
            layers: vec![layer],
        })
    }

    /// `shoal image load`: a docker-save archive or an OCI image-layout archive (plain or gzip).
    /// The archive is unpacked beneath a scratch directory and its members are read beneath it
    /// too, as regular files of bounded size.
    pub fn load(&self, archive: &Path) -> Result<Vec<ImageSummary>> {
        let scratch = self.scratch()?;
        let extracted = scratch.0.join("archive");
        std::fs::create_dir_all(&extracted)
            .map_err(EngineError::io("creating scratch directory"))?;
        let file = File::open(archive)
            .map_err(EngineError::io(format!("opening {}", archive.display())))?;
        let stream = BoundedReader::new(
            maybe_gunzip(BufReader::new(file))?,
            self.limits.archive_bytes,
            "the image archive",
        );
        unpack::unpack(stream, &extracted, TarKind::Archive)
            .map_err(|e| EngineError::invalid("image archive", error_chain(&e)))?;
        let members = ArchiveMembers {
            root: Beneath::open(&extracted)
                .map_err(EngineError::io("opening the unpacked archive"))?,
            metadata_bytes: self.limits.metadata_bytes,
        };
        let pending = if let Some(manifest) = members.read_if_present("manifest.json")? {
            self.read_docker_archive(&scratch.0, &members, &manifest)?
        } else if let Some(index) = members.read_if_present("index.json")? {
            self.read_oci_archive(&scratch.0, &members, &index)?
        } else {
            return Err(EngineError::invalid(
                "image archive",
                "neither manifest.json (docker save) nor index.json (OCI layout) found; \
                 for a root filesystem tarball use 'shoal image import'",
            ));
        };
        pending
            .into_iter()
            .map(|image| self.commit(image))
            .collect()
    }

    fn read_docker_archive(
        &self,
        scratch: &Path,
        members: &ArchiveMembers,
        manifest: &[u8],
    ) -> Result<Vec<PendingImage>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(manifest)
            .map_err(|e| EngineError::invalid("manifest.json", e))?;
        let mut images = Vec::new();
        for entry in entries {
            let config = members.read(&entry.config)?;
            // Both the legacy `<hex>.json` and the newer `blobs/sha256/<hex>` name the digest.
            let named = entry
                .config
                .trim_end_matches(".json")
                .rsplit('/')
                .next()
                .unwrap_or("");
            check_digest(
                &format!("config {}", entry.config),
                &format!("sha256:{named}"),
                &config,
            )?;
            let parsed: ImageConfigFile = serde_json::from_slice(&config)
                .map_err(|e| EngineError::invalid(format!("image config {}", entry.config), e))?;
            if parsed.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(EngineError::invalid(
                    "docker archive",
                    format!(
                        "{} layers listed but the config names {}",
                        entry.layers.len(),
                        parsed.rootfs.diff_ids.len()
                    ),
                ));
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
                let expected = layer
                    .strip_prefix("blobs/sha256/")
                    .map(|hex| format!("sha256:{hex}"));
                let expected = expected.map(|d| Digest::parse(&d)).transpose()?;
                layers.push(self.ingest_layer(
                    scratch,
                    members.open(layer)?,
                    layer,
                    expected.as_ref(),
                    Some(diff_id),
                )?);
            }
            let mut refs = Vec::new();
            for tag in entry.repo_tags.unwrap_or_default() {
                refs.push(normalize_reference(&tag)?);
            }
            images.push(PendingImage {
                refs,
                config,
                manifest: None,
                layers,
            });
        }
        Ok(images)
    }

    fn read_oci_archive(
        &self,
        scratch: &Path,
        members: &ArchiveMembers,
        index: &[u8],
    ) -> Result<Vec<PendingImage>> {
        let index: Index =
            serde_json::from_slice(index).map_err(|e| EngineError::invalid("index.json", e))?;
        let mut images = Vec::new();
        for descriptor in index.manifests {
            let mut name = descriptor
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| descriptor.annotations.get(REF_NAME_ANNOTATION))
                .cloned();
            let mut descriptor = descriptor;
            // Follows nested indexes down to the linux/amd64 manifest.
            while [media_type::OCI_INDEX, media_type::DOCKER_LIST]
                .contains(&descriptor.media_type.as_str())
            {
                let bytes = members.read_verified(&descriptor)?;
                let nested: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| EngineError::invalid("nested index", e))?;
                descriptor = pick_platform(nested.manifests)?;
                if name.is_none() {
                    name = descriptor.annotations.get(REF_NAME_ANNOTATION).cloned();
                }
            }
            let manifest_bytes = members.read_verified(&descriptor)?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| EngineError::invalid("image manifest", e))?;
            let config = members.read_verified(&manifest.config)?;
            let parsed: ImageConfigFile = serde_json::from_slice(&config)
                .map_err(|e| EngineError::invalid("image config", e))?;
            if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(EngineError::invalid(
                    "image manifest",
                    "layer count differs from the config's diff_ids",
                ));
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in manifest.layers.iter().zip(&parsed.rootfs.diff_ids) {
                let mut pending = self.ingest_layer(
                    scratch,
                    members.open(&blob_member(&layer.digest))?,
                    &layer.digest.to_string(),
                    Some(&layer.digest),
                    Some(diff_id),
                )?;
                pending.descriptor.media_type = layer.media_type.clone();
                layers.push(pending);
            }
            // An OCI ref name may be just a tag; such an image needs a name to be useful.
            let refs = match name {
                Some(name) if name.contains(':') || name.contains('/') => {
                    vec![normalize_reference(&name)?]
                }
                Some(tag) => {
                    return Err(EngineError::invalid(
                        "OCI archive",
                        format!(
                            "image tagged only {tag:?} has no repository name; load it with skopeo or retag the archive"
                        ),
                    ));
                }
                None => Vec::new(),
            };
            images.push(PendingImage {
                refs,
                config,
                manifest: Some(manifest_bytes),
                layers,
            });
        }
        Ok(images)
    }

    /// Verifies and commits an image downloaded into `scratch` by the registry client: the
    /// config against the manifest, each layer against its digest and diff ID.
    #[cfg(feature = "runtime")]
    pub(crate) fn ingest_downloaded(
        &self,
        scratch: &ScratchDir,
        refs: Vec<String>,
        manifest: Vec<u8>,
        config: Vec<u8>,
        layers: Vec<(PathBuf, Descriptor)>,
    ) -> Result<ImageSummary> {
        let parsed_manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| EngineError::invalid("image manifest", e))?;
        check_digest(
            "image config",
            &parsed_manifest.config.digest.to_string(),
            &config,
        )?;
        let parsed: ImageConfigFile =
            serde_json::from_slice(&config).map_err(|e| EngineError::invalid("image config", e))?;
        if parsed.rootfs.diff_ids.len() != layers.len() {
            return Err(EngineError::invalid(
                "image manifest",
                "layer count differs from the config's diff_ids",
            ));
        }
        let mut pending = Vec::new();
        for ((path, descriptor), diff_id) in layers.iter().zip(&parsed.rootfs.diff_ids) {
            let what = descriptor.digest.to_string();
            let input = File::open(path).map_err(EngineError::io(format!("opening {what}")))?;
            let mut layer = self.ingest_layer(
                &scratch.0,
                input,
                &what,
                Some(&descriptor.digest),
                Some(diff_id),
            )?;
            layer.descriptor.media_type = descriptor.media_type.clone();
            let _ = std::fs::remove_file(path);
            pending.push(layer);
        }
        self.commit(PendingImage {
            refs,
            config,
            manifest: Some(manifest),
            layers: pending,
        })
    }

    /// Copies a layer blob into scratch while hashing it, checks the digest if one was
    /// announced, then unpacks it (honouring whiteouts) while hashing the uncompressed stream
    /// and checks that against the diff ID if one was announced.
    fn ingest_layer(
        &self,
        scratch: &Path,
        input: File,
        what: &str,
        expected_digest: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
    ) -> Result<PendingLayer> {
        let n = std::fs::read_dir(scratch).map(|d| d.count()).unwrap_or(0);
        let blob = scratch.join(format!("layer-{n}.blob"));
        let mut hashing = HashingReader::new(BoundedReader::new(
            input,
            self.limits.layer_bytes,
            "the layer",
        ));
        let mut output = File::create(&blob).map_err(EngineError::io("creating scratch blob"))?;
        std::io::copy(&mut hashing, &mut output)
            .map_err(|e| EngineError::invalid(format!("layer {what}"), e))?;
        let (digest, size, _) = hashing
            .finish()
            .map_err(EngineError::io(format!("reading {what}")))?;
        drop(output);
        if let Some(expected) = expected_digest
            && expected != &digest
        {
            return Err(EngineError::DigestMismatch {
                what: format!("layer {what}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let unpacked = scratch.join(format!("layer-{n}.dir"));
        std::fs::create_dir(&unpacked)
            .map_err(EngineError::io("creating scratch layer directory"))?;
        let file = File::open(&blob).map_err(EngineError::io("reopening scratch blob"))?;
        let mut reader = BufReader::new(file);
        let gzip = reader
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        let decompressed: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut tar_stream = HashingReader::new(BoundedReader::new(
            decompressed,
            self.limits.unpacked_layer_bytes,
            "the uncompressed layer",
        ));
        let entries = unpack::unpack(&mut tar_stream, &unpacked, TarKind::Layer)
            .map_err(|e| EngineError::invalid(format!("layer {what}"), error_chain(&e)))?;
        let (diff_id, _, _) = tar_stream
            .finish()
            .map_err(|e| EngineError::invalid(format!("layer {what}"), e))?;
        if entries == 0 {
            return Err(EngineError::invalid(
                format!("layer {what}"),
                "not a tar archive (no entries)",
            ));
        }
        if let Some(expected) = expected_diff_id
            && expected != &diff_id
        {
            return Err(EngineError::DigestMismatch {
                what: format!("uncompressed layer {what} (diff ID)"),
                expected: expected.to_string(),
                actual: diff_id.to_string(),
            });
        }
        let media_type = if gzip {
            media_type::LAYER_TAR_GZIP
        } else {
            media_type::LAYER_TAR
        };
        Ok(PendingLayer {
            blob,
            descriptor: Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            },
            diff_id,
            unpacked,
        })
    }

    /// Moves verified pieces into place and names the image last.
    fn commit(&self, image: PendingImage) -> Result<ImageSummary> {
        let config_digest = Digest::of(&image.config);
        let manifest_bytes = match image.manifest {
            Some(bytes) => bytes,
            None => {
                let manifest = Manifest {
                    schema_version: 2,
                    media_type: Some(media_type::OCI_MANIFEST.to_owned()),
                    config: Descriptor {
                        media_type: media_type::OCI_CONFIG.to_owned(),
                        digest: config_digest.clone(),
                        size: image.config.len() as u64,
                        annotations: BTreeMap::new(),
                        platform: None,
                    },
                    layers: image.layers.iter().map(|l| l.descriptor.clone()).collect(),
                };
                serde_json::to_vec(&manifest)
                    .map_err(|e| EngineError::invalid("image manifest", e))?
            }
        };
        let manifest_digest = Digest::of(&manifest_bytes);
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for layer in &image.layers {
            let target = self.layer_dir(&layer.diff_id);
            if !target.exists() {
                std::fs::rename(&layer.unpacked, &target)
                    .map_err(EngineError::io(format!("storing layer {}", layer.diff_id)))?;
            }
            let blob = self.blob_path(&layer.descriptor.digest);
            if !blob.exists() {
                std::fs::rename(&layer.blob, &blob).map_err(EngineError::io(format!(
                    "storing blob {}",
                    layer.descriptor.digest
                )))?;
            }
        }
        for (digest, bytes) in [
            (&config_digest, &image.config),
            (&manifest_digest, &manifest_bytes),
        ] {
            let path = self.blob_path(digest);
            if !path.exists() {
                util::write_atomic(&path, bytes)?;
            }
        }
        let mut index = self.read_index()?;
        index.manifests.retain(|d| {
            d.annotations
                .get(REF_NAME_ANNOTATION)
                .is_none_or(|r| !image.refs.contains(r))
        });
        let refs = if image.refs.is_empty() {
            vec![String::new()]
        } else {
            image.refs.clone()
        };
        for reference in refs {
            let mut annotations = BTreeMap::new();
            if !reference.is_empty() {
                annotations.insert(REF_NAME_ANNOTATION.to_owned(), reference);
            }
            index.manifests.push(Descriptor {
                media_type: media_type::OCI_MANIFEST.to_owned(),
                digest: manifest_digest.clone(),
                size: manifest_bytes.len() as u64,
                annotations,
                platform: None,
            });
        }
        self.write_index(&index)?;
        drop(_guard);
        let parsed: ImageConfigFile = serde_json::from_slice(&image.config)
            .map_err(|e| EngineError::invalid("image config", e))?;
        Ok(ImageSummary {
            id: config_digest,
            manifest_digest,
            repo_tags: image.refs,
            created: parsed.created,
            size: image.layers.iter().map(|l| l.descriptor.size).sum(),
        })
    }

    /// Every image, one entry per image ID.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let index = self.read_index()?;
        let mut by_manifest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for descriptor in &index.manifests {
            let tags = by_manifest.entry(descriptor.digest.clone()).or_default();
            if let Some(name) = descriptor.annotations.get(REF_NAME_ANNOTATION) {
                tags.push(name.clone());
            }
        }
        let mut images = Vec::new();
        for (manifest_digest, repo_tags) in by_manifest {
            let manifest = self.manifest(&manifest_digest)?;
            let config: ImageConfigFile =
                serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
                    .map_err(|e| EngineError::invalid("stored image config", e))?;
            images.push(ImageSummary {
                id: manifest.config.digest.clone(),
                manifest_digest,
                repo_tags,
                created: config.created,
                size: manifest.layers.iter().map(|l| l.size).sum(),
            });
        }
        Ok(images)
    }

    fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| EngineError::invalid("stored manifest", e))
    }

    /// Finds an image by `name[:tag]`, full ID or unique ID prefix (at least 4 hex digits).
    pub fn find(&self, name_or_id: &str) -> Result<ImageSummary> {
        let images = self.list()?;
        if let Ok(reference) = normalize_reference(name_or_id)
            && let Some(image) = images.iter().find(|i| i.repo_tags.contains(&reference))
        {
            return Ok(image.clone());
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(prefix))
                .collect();
            if matches.len() == 1 {
                return Ok(matches[0].clone());
            }
        }
        Err(EngineError::ImageNotFound(name_or_id.to_owned()))
    }

    /// Resolves an image for running: its config and unpacked layers.
    pub fn resolve(&self, name_or_id: &str) -> Result<ResolvedImage> {
        let summary = self.find(name_or_id)?;
        let manifest = self.manifest(&summary.manifest_digest)?;
        let config: ImageConfigFile =
            serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
                .map_err(|e| EngineError::invalid("stored image config", e))?;
        let layer_dirs = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| self.layer_dir(d))
            .collect();
        Ok(ResolvedImage {
            id: summary.id,
            config,
            layer_dirs,
        })
    }

    /// `image inspect`: docker-like JSON.
    pub fn inspect(&self, name_or_id: &str) -> Result<serde_json::Value> {
        let summary = self.find(name_or_id)?;
        let manifest = self.manifest(&summary.manifest_digest)?;
        let config: serde_json::Value =
            serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
                .map_err(|e| EngineError::invalid("stored image config", e))?;
        Ok(serde_json::json!({
            "Id": summary.id.to_string(),
            "RepoTags": summary.repo_tags,
            "ManifestDigest": summary.manifest_digest.to_string(),
            "Created": summary.created,
            "Size": summary.size,
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Config": config.get("config"),
            "RootFS": config.get("rootfs"),
            "Layers": manifest.layers,
        }))
    }

    /// `image rm`: untags a name, or removes every tag of an ID; then deletes blobs and layers
    /// no longer referenced. `in_use` says whether a container uses the image ID.
    pub fn remove(
        &self,
        name_or_id: &str,
        in_use: impl Fn(&Digest) -> Option<String>,
    ) -> Result<Vec<String>> {
        let summary = self.find(name_or_id)?;
        let untag_only = normalize_reference(name_or_id)
            .ok()
            .filter(|r| summary.repo_tags.contains(r) && summary.repo_tags.len() > 1);
        if untag_only.is_none()
            && let Some(container) = in_use(&summary.id)
        {
            return Err(EngineError::ImageInUse {
                image: name_or_id.to_owned(),
                container,
            });
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        index.manifests.retain(|d| {
            let name = d.annotations.get(REF_NAME_ANNOTATION);
            let drop = match &untag_only {
                Some(reference) => name == Some(reference),
                None => d.digest == summary.manifest_digest,
            };
            if drop {
                removed.push(name.cloned().unwrap_or_else(|| d.digest.to_string()));
            }
            !drop
        });
        self.write_index(&index)?;
        self.collect_garbage(&index)?;
        if untag_only.is_none() {
            removed.push(summary.id.to_string());
        }
        Ok(removed)
    }

    /// Deletes blobs and unpacked layers that no manifest in `index` reaches. Runs under the lock.
    fn collect_garbage(&self, index: &Index) -> Result<()> {
        let mut live_blobs = BTreeSet::new();
        let mut live_layers = BTreeSet::new();
        for descriptor in &index.manifests {
            live_blobs.insert(descriptor.digest.hex().to_owned());
            let manifest = self.manifest(&descriptor.digest)?;
            live_blobs.insert(manifest.config.digest.hex().to_owned());
            for layer in &manifest.layers {
                live_blobs.insert(layer.digest.hex().to_owned());
            }
            let config: ImageConfigFile =
                serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
                    .map_err(|e| EngineError::invalid("stored image config", e))?;
            for diff_id in config.rootfs.diff_ids {
                live_layers.insert(diff_id.hex().to_owned());
            }
        }
        for (dir, live) in [
            (self.root.join("blobs/sha256"), &live_blobs),
            (self.layers.clone(), &live_layers),
        ] {
            let entries = std::fs::read_dir(&dir)
                .map_err(EngineError::io(format!("listing {}", dir.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let path = entry.path();
                    let result = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    if let Err(error) = result {
                        tracing::warn!(path = %path.display(), %error, "could not delete unreferenced image data");
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_digest(what: &str, expected: &str, bytes: &[u8]) -> Result<()> {
    let expected = Digest::parse(expected)?;
    let actual = Digest::of(bytes);
    if expected != actual {
        return Err(EngineError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// The members of an unpacked `image load` archive, read beneath its directory as regular files.
struct ArchiveMembers {
    root: Beneath,
    metadata_bytes: u64,
}

impl ArchiveMembers {
    /// A metadata member (JSON), whole, or `None` when the archive has no such member.
    fn read_if_present(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.root.read(Path::new(name), self.metadata_bytes) {
            Ok(Found::File(bytes)) => Ok(Some(bytes)),
            Ok(Found::Missing | Found::Whiteout) => Ok(None),
            Err(e) => Err(EngineError::invalid(
                "image archive",
                format!("member {name:?}: {e}"),
            )),
        }
    }

    /// A metadata member (JSON), whole.
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.read_if_present(name)?.ok_or_else(|| {
            EngineError::invalid("image archive", format!("member {name:?} is missing"))
        })
    }

    /// A layer member, open for the store to copy (its size is bounded while copying).
    fn open(&self, name: &str) -> Result<File> {
        self.root
            .open_file(Path::new(name), u64::MAX)
            .map_err(|e| EngineError::invalid("image archive", format!("member {name:?}: {e}")))
    }

    /// The blob a descriptor names, checked against its digest and size.
    fn read_verified(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        let bytes = self.read(&blob_member(&descriptor.digest))?;
        check_digest(
            &format!("blob {}", descriptor.digest),
            &descriptor.digest.to_string(),
            &bytes,
        )?;
        if bytes.len() as u64 != descriptor.size {
            return Err(EngineError::invalid(
                format!("blob {}", descriptor.digest),
                format!(
                    "size {} differs from the announced {}",
                    bytes.len(),
                    descriptor.size
                ),
            ));
        }
        Ok(bytes)
    }
}

/// Where an OCI layout keeps the blob with this digest.
fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn pick_platform(manifests: Vec<Descriptor>) -> Result<Descriptor> {
    let wanted = |d: &Descriptor| {
        d.platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
    };
    manifests
        .into_iter()
        .find(wanted)
        .ok_or_else(|| EngineError::invalid("image index", "no linux/amd64 manifest"))
}

fn maybe_gunzip<R: BufRead + 'static>(mut reader: R) -> Result<Box<dyn Read>> {
    let gzip = reader
        .fill_buf()
        .map_err(EngineError::io("reading archive"))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    })
}

/// Writes a tar of `entries` (path, contents) for tests and for building test images.
pub fn write_test_tar(out: impl Write, entries: &[(&str, &[u8])]) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, *contents)?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise() {
        assert_eq!(
            normalize_reference("busybox").ok().as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(
            normalize_reference("a/b:1.0").ok().as_deref(),
            Some("a/b:1.0")
        );
        assert_eq!(
            normalize_reference("127.0.0.1:5000/x").ok().as_deref(),
            Some("127.0.0.1:5000/x:latest")
        );
        assert_eq!(
            normalize_reference("127.0.0.1:5000/x:t").ok().as_deref(),
            Some("127.0.0.1:5000/x:t")
        );
        assert_eq!(
            normalize_reference("docker.io/library/busybox:1")
                .ok()
                .as_deref(),
            Some("busybox:1")
        );
        assert!(normalize_reference("Bad").is_err());
        assert!(normalize_reference("x@sha256:00").is_err());
    }

    #[test]
    fn import_then_remove_leaves_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path())?;
        let tarball = dir.path().join("rootfs.tar");
        write_test_tar(
            File::create(&tarball)?,
            &[
                ("bin/hello", b"hi"),
                ("etc/.wh.gone", b""),
                ("var/.wh..wh..opq", b""),
            ],
        )?;
        let image = store.import(&tarball, "test:one")?;
        assert_eq!(store.list()?, vec![image.clone()]);
        let resolved = store.resolve("test:one")?;
        assert_eq!(
            std::fs::read(resolved.layer_dirs[0].join("bin/hello"))?,
            b"hi"
        );
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::FileTypeExt;
            let whiteout = std::fs::symlink_metadata(resolved.layer_dirs[0].join("etc/gone"))?;
            assert!(
                whiteout.file_type().is_char_device(),
                "an OCI whiteout becomes an overlay one"
            );
            let mut value = [0u8; 4];
            let n = rustix::fs::lgetxattr(
                resolved.layer_dirs[0].join("var"),
                "trusted.overlay.opaque",
                &mut value,
            )?;
            assert_eq!(
                (n, value[0]),
                (1, b'y'),
                "an opaque marker makes its directory opaque"
            );
        }
        store.remove("test:one", |_| None)?;
        assert!(store.list()?.is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("layers"))?.count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("images/blobs/sha256"))?.count(),
            0
        );
        Ok(())
    }

    #[test]
    fn corrupt_and_truncated_input_leave_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ImageStore::open(dir.path())?;
        let garbage = dir.path().join("garbage.tar");
        std::fs::write(&garbage, vec![0x42u8; 4096])?;
        let error = store
            .import(&garbage, "bad:one")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("invalid layer"), "{error}");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        write_test_tar(&mut gz, &[("big", &vec![7u8; 100_000])])?;
        let bytes = gz.finish()?;
        let truncated = dir.path().join("truncated.tar.gz");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
        let error = store
            .import(&truncated, "bad:two")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("invalid layer"), "{error}");

        assert!(store.list()?.is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join("layers"))?.count(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp"))?.count(), 0);
        Ok(())
    }
}
