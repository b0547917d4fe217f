//! Hostile image content never reaches outside the store: crafted layers (imported) and
//! docker-save archives (loaded) try every entry type through links made earlier in the same
//! layer, in a lower layer and in the archive itself, with absolute and relative targets. Each
//! is refused or confined, and the files beside the store are untouched. Needs root (device
//! nodes, whiteouts and `trusted.*` attributes, as the daemon makes them).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use engine::store::{ImageLimits, ImageStore};
use sha2::{Digest as _, Sha256};

/// One tar entry to craft.
#[derive(Clone)]
enum Entry {
    File(&'static str, &'static [u8]),
    Dir(&'static str),
    Symlink(&'static str, String),
    HardLink(&'static str, &'static str),
    Char(&'static str),
    Fifo(&'static str),
}

/// A directory with a store in `data/` and, beside it, `outside/` holding a marker file and a
/// directory: what a hostile image aims at.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("outside/dir")).expect("outside/dir");
        std::fs::write(dir.path().join("outside/marker"), b"untouched").expect("outside/marker");
        World { dir }
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// A path from a layer's directory (`data/tmp/<scratch>/layer-N.dir` while unpacking,
    /// `data/layers/<diff id>` after) up to the world's root, deep enough for both.
    fn relative_outside(&self) -> String {
        "../../../../../../../../../../..".to_owned() + &self.outside().display().to_string()
    }

    fn store(&self) -> ImageStore {
        ImageStore::open(&self.dir.path().join("data")).expect("opening the store")
    }

    /// Everything under `outside/`, with contents, modes and overlay attributes: compared
    /// before and after each attempt.
    fn outside_state(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, base: &Path, state: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).expect("reading outside") {
                let path = entry.expect("an entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("metadata");
                let mut opaque = [0u8; 4];
                let xattr =
                    rustix::fs::lgetxattr(&path, "trusted.overlay.opaque", &mut opaque).ok();
                let contents = if meta.is_file() {
                    String::from_utf8_lossy(&std::fs::read(&path).expect("contents")).into_owned()
                } else {
                    String::new()
                };
                let key = path
                    .strip_prefix(base)
                    .expect("inside")
                    .display()
                    .to_string();
                let value = format!(
                    "{:?} mode {:o} xattr {xattr:?} {contents}",
                    meta.file_type(),
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions())
                );
                state.insert(key, value);
                if meta.is_dir() {
                    walk(&path, base, state);
                }
            }
        }
        let mut state = BTreeMap::new();
        walk(&self.outside(), &self.outside(), &mut state);
        let mut opaque = [0u8; 4];
        let xattr = rustix::fs::lgetxattr(self.outside(), "trusted.overlay.opaque", &mut opaque);
        state.insert(".".to_owned(), format!("xattr {:?}", xattr.ok()));
        state
    }
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        let (path, link, contents): (&str, Option<String>, &[u8]) = match entry {
            Entry::File(path, contents) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(contents.len() as u64);
                (path, None, contents)
            }
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                (path, None, &[])
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                (path, Some(target.clone()), &[])
            }
            Entry::HardLink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                (path, Some((*target).to_owned()), &[])
            }
            Entry::Char(path) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_device_major(1).expect("major");
                header.set_device_minor(3).expect("minor");
                (path, None, &[])
            }
            Entry::Fifo(path) => {
                header.set_entry_type(tar::EntryType::Fifo);
                (path, None, &[])
            }
        };
        // Written raw, as an attacker would: the tar crate's own setters refuse `..`.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, contents).expect("append");
    }
    builder.into_inner().expect("tar")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A docker-save archive of one image whose layers are `layers`, bottom first, with `extra`
/// entries appended to the archive itself.
fn docker_archive(layers: &[Vec<u8>], extra: &[Entry]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("config");
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_names: Vec<String> = (0..layers.len())
        .map(|n| format!("l{n}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["hostile:latest"],
        "Layers": layer_names,
    }]))
    .expect("manifest");
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes)
            .expect("append");
    };
    add("manifest.json", &manifest);
    add(&config_name, &config);
    for (name, layer) in layer_names.iter().zip(layers) {
        add(name, layer);
    }
    let mut bytes = builder.into_inner().expect("archive");
    if !extra.is_empty() {
        // Appended after the archive's own entries: drop its two zero end blocks first.
        bytes.truncate(bytes.len() - 1024);
        bytes.extend(tar(extra));
    }
    bytes
}

/// Imports `layer` and loads it as an archive, and checks that neither touched `outside/`.
/// Returns the import's result (`Ok` with the layer directory when it was accepted).
fn attempt(world: &World, name: &str, layer: &[u8]) -> Result<PathBuf, String> {
    let before = world.outside_state();
    let store = world.store();
    let tarball = world.dir.path().join(format!("{name}.tar"));
    std::fs::write(&tarball, layer).expect("writing the layer");
    let imported = store
        .import(&tarball, &format!("{name}:latest"))
        .map_err(|e| e.to_string());
    assert_eq!(
        world.outside_state(),
        before,
        "{name}: import reached outside"
    );
    let archive = world.dir.path().join(format!("{name}-archive.tar"));
    std::fs::write(&archive, docker_archive(&[layer.to_vec()], &[])).expect("archive");
    let _ = store.load(&archive);
    assert_eq!(
        world.outside_state(),
        before,
        "{name}: load reached outside"
    );
    imported.and_then(|_| {
        let image = store
            .resolve(&format!("{name}:latest"))
            .map_err(|e| e.to_string())?;
        Ok(image.layer_dirs[0].clone())
    })
}

fn require_root(test_name: &str) -> bool {
    match shoal_tests::root_skip_reason() {
        Some(reason) => {
            shoal_tests::skip(test_name, &reason);
            false
        }
        None => true,
    }
}

#[test]
fn layer_entries_never_pass_through_links() {
    if !require_root("layer_entries_never_pass_through_links") {
        return;
    }
    let world = World::new();
    let targets = [
        ("absolute", world.outside().display().to_string()),
        ("relative", world.relative_outside()),
    ];
    for (how, target) in targets {
        let through_link: [(&str, Entry); 9] = [
            ("file", Entry::File("x/marker", b"overwritten")),
            ("dir", Entry::Dir("x/dir/new")),
            ("symlink", Entry::Symlink("x/planted", "/".to_owned())),
            ("hardlink", Entry::HardLink("x/linked", "etc/real")),
            ("device", Entry::Char("x/null")),
            ("fifo", Entry::Fifo("x/fifo")),
            ("whiteout", Entry::File("x/.wh.marker", b"")),
            ("whiteout-dir", Entry::File("x/.wh.dir", b"")),
            ("opaque", Entry::File("x/.wh..wh..opq", b"")),
        ];
        for (kind, entry) in through_link {
            let name = format!("{how}-{kind}");
            let layer = tar(&[
                Entry::File("etc/real", b"inside"),
                Entry::Symlink("x", target.clone()),
                entry,
            ]);
            let result = attempt(&world, &name, &layer);
            let error = result.err().unwrap_or_default();
            assert!(
                error.contains("x is a link or a file, not a directory"),
                "{name}: {error:?}"
            );
        }
        // A hard link whose target passes through a link would bring a host file in.
        let name = format!("{how}-hardlink-source");
        let layer = tar(&[
            Entry::Symlink("x", target.clone()),
            Entry::HardLink("stolen", "x/marker"),
        ]);
        let error = attempt(&world, &name, &layer).err().unwrap_or_default();
        assert!(error.contains("x is a link or a file"), "{name}: {error:?}");

        // A link at the entry's own name is replaced, never written through.
        let name = format!("{how}-replaced-link");
        let layer = tar(&[
            Entry::Symlink("marker", format!("{target}/marker")),
            Entry::File("marker", b"in the layer"),
            Entry::Symlink("dir", format!("{target}/dir")),
            Entry::Dir("dir"),
            Entry::Symlink("gone", format!("{target}/marker")),
            Entry::File(".wh.gone", b""),
        ]);
        let dir = attempt(&world, &name, &layer).expect("a replaced link is confined");
        assert_eq!(
            std::fs::read(dir.join("marker")).ok(),
            Some(b"in the layer".to_vec())
        );
        assert!(std::fs::symlink_metadata(dir.join("dir")).is_ok_and(|m| m.is_dir()));
    }
}

#[test]
fn names_that_climb_out_are_refused() {
    if !require_root("names_that_climb_out_are_refused") {
        return;
    }
    let world = World::new();
    let cases: [(&str, Entry, &str); 6] = [
        (
            "dotdot-file",
            Entry::File("../../../../../../../../outside/marker", b"x"),
            "'..'",
        ),
        ("inner-dotdot", Entry::File("a/../../marker", b"x"), "'..'"),
        (
            "whiteout-dotdot",
            Entry::File("etc/.wh...", b""),
            "a whiteout must name an entry",
        ),
        (
            "whiteout-dot",
            Entry::File("etc/.wh..", b""),
            "a whiteout must name an entry",
        ),
        (
            "whiteout-empty",
            Entry::File("etc/.wh.", b""),
            "a whiteout must name an entry",
        ),
        (
            "hardlink-dotdot",
            Entry::HardLink("stolen", "../../../../marker"),
            "'..'",
        ),
    ];
    for (name, entry, expected) in cases {
        let layer = tar(&[Entry::File("etc/real", b"inside"), entry]);
        let error = attempt(&world, name, &layer).err().unwrap_or_default();
        assert!(error.contains(expected), "{name}: {error:?}");
    }
    // An absolute name is the layer's own path.
    let layer = tar(&[Entry::File("/etc/absolute", b"inside")]);
    let dir = attempt(&world, "absolute-name", &layer).expect("confined");
    assert_eq!(
        std::fs::read(dir.join("etc/absolute")).ok(),
        Some(b"inside".to_vec())
    );
}

#[test]
fn a_lower_layers_link_is_not_followed_by_an_upper_layer() {
    if !require_root("a_lower_layers_link_is_not_followed_by_an_upper_layer") {
        return;
    }
    let world = World::new();
    let before = world.outside_state();
    let store = world.store();
    for (n, target) in [
        world.outside().display().to_string(),
        world.relative_outside(),
    ]
    .into_iter()
    .enumerate()
    {
        let lower = tar(&[Entry::Symlink("x", target)]);
        let upper = tar(&[
            Entry::File("x/marker", b"overwritten"),
            Entry::File("x/.wh.dir", b""),
            Entry::File("x/.wh..wh..opq", b""),
        ]);
        let archive = world.dir.path().join(format!("lower-{n}.tar"));
        std::fs::write(&archive, docker_archive(&[lower, upper], &[])).expect("archive");
        // Each layer is its own directory: the upper one makes its own `x`, which overlayfs
        // puts over the lower layer's link.
        store.load(&archive).expect("two layers load");
        let image = store.resolve("hostile:latest").expect("resolve");
        assert_eq!(
            std::fs::read(image.layer_dirs[1].join("x/marker")).ok(),
            Some(b"overwritten".to_vec())
        );
        assert_eq!(world.outside_state(), before);
    }
}

#[test]
fn archive_members_are_read_beneath_the_archive_as_regular_files() {
    if !require_root("archive_members_are_read_beneath_the_archive_as_regular_files") {
        return;
    }
    let world = World::new();
    let before = world.outside_state();
    let store = world.store();
    let layer = tar(&[Entry::File("etc/real", b"inside")]);
    let outside = world.outside().display().to_string();
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            // The archive's manifest.json comes last and replaces the real one with a link.
            "manifest-link",
            vec![Entry::Symlink("manifest.json", format!("{outside}/marker"))],
            "neither manifest.json",
        ),
        (
            "layer-link-up",
            vec![Entry::Symlink(
                "l0/layer.tar",
                world.relative_outside() + "/marker",
            )],
            "member \"l0/layer.tar\"",
        ),
        (
            "member-dir-link",
            vec![
                Entry::Symlink("l0", outside.clone()),
                Entry::File("l0/planted", b"x"),
            ],
            "l0 is a link or a file",
        ),
        (
            "member-device",
            vec![Entry::Char("dev")],
            "an image archive holds only",
        ),
        (
            "member-fifo",
            vec![Entry::Fifo("l0/layer.tar")],
            "an image archive holds only",
        ),
        (
            "member-hardlink-out",
            vec![Entry::HardLink("l0/layer.tar", "../../outside/marker")],
            "'..'",
        ),
    ];
    for (name, extra, expected) in cases {
        let archive = world.dir.path().join(format!("{name}.tar"));
        std::fs::write(
            &archive,
            docker_archive(std::slice::from_ref(&layer), &extra),
        )
        .expect("archive");
        let error = store
            .load(&archive)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(expected), "{name}: {error:?}");
        assert_eq!(world.outside_state(), before, "{name} reached outside");
    }
}

#[test]
fn image_files_are_read_beneath_the_layer_as_bounded_regular_files() {
    if !require_root("image_files_are_read_beneath_the_layer_as_bounded_regular_files") {
        return;
    }
    let world = World::new();
    let store = world.store().with_limits(ImageLimits {
        image_file_bytes: 64,
        ..ImageLimits::default()
    });
    let outside = world.outside().display().to_string();
    let read = |entries: &[Entry]| {
        let tarball = world.dir.path().join("passwd.tar");
        std::fs::write(&tarball, tar(entries)).expect("layer");
        store.import(&tarball, "passwd:latest").expect("import");
        let image = store.resolve("passwd:latest").expect("resolve");
        image
            .read_file("etc/passwd", store.limits().image_file_bytes)
            .map(|found| found.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        read(&[Entry::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")]),
        Ok(Some("root:x:0:0::/root:/bin/sh\n".to_owned()))
    );
    // Links resolve as inside the container: an absolute one names the image's own file.
    assert_eq!(
        read(&[Entry::Symlink("etc/passwd", format!("{outside}/marker"))]),
        Ok(None)
    );
    assert_eq!(
        read(&[
            Entry::File("real", b"image's own"),
            Entry::Symlink("etc/passwd", "/../../../../real".to_owned()),
        ]),
        Ok(Some("image's own".to_owned()))
    );
    let refused = |entries: &[Entry], expected: &str| {
        let error = read(entries).err().unwrap_or_default();
        assert!(error.contains(expected), "{error:?}");
    };
    refused(&[Entry::Fifo("etc/passwd")], "not a regular file");
    refused(&[Entry::Dir("etc/passwd")], "not a regular file");
    refused(&[Entry::Char("etc/passwd")], "not a regular file");
    refused(
        &[Entry::File("etc/passwd", &[b'x'; 65])],
        "larger than the 64-byte limit",
    );
}

#[test]
fn size_limits_refuse_oversized_content_with_a_clear_error() {
    if !require_root("size_limits_refuse_oversized_content_with_a_clear_error") {
        return;
    }
    let world = World::new();
    let limits = ImageLimits {
        metadata_bytes: 4096,
        layer_bytes: 64 * 1024,
        unpacked_layer_bytes: 256 * 1024,
        archive_bytes: 512 * 1024,
        image_file_bytes: 1024,
    };
    let store = world.store().with_limits(limits);
    let import = |name: &str, bytes: &[u8]| {
        let path = world.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        store
            .import(&path, "big:latest")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // A gzip bomb: 2 MiB of zeros in a file of a few kilobytes.
    let zeros: &'static [u8] = Box::leak(vec![0u8; 2 << 20].into_boxed_slice());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar(&[Entry::File("zeros", zeros)]))
        .expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 64 * 1024);
    let error = import("bomb.tar.gz", &bomb);
    assert!(
        error.contains("the uncompressed layer is larger than the limit of 262144 bytes"),
        "{error}"
    );
    let error = import("big.tar", &tar(&[Entry::File("big", &zeros[..100 * 1024])]));
    assert!(
        error.contains("the layer is larger than the limit of 65536 bytes"),
        "{error}"
    );

    // An archive whose manifest.json is over the metadata limit.
    let padding = " ".repeat(5000);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(padding.len() as u64 + 2);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(
            &mut header,
            "manifest.json",
            format!("[{padding}]").as_bytes(),
        )
        .expect("append");
    let path = world.dir.path().join("fat-manifest.tar");
    std::fs::write(&path, builder.into_inner().expect("tar")).expect("write");
    let error = store
        .load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("larger than the 4096-byte limit"), "{error}");
    assert!(store.list().expect("list").is_empty());
}
