//! The test image: a busybox root filesystem tarball built from the machine's static
//! `/bin/busybox` (Debian's busybox-static), the same image `crates/cli/tests/support` builds.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::HarnessError;

/// Writes a busybox root filesystem tarball to `path`: `/bin/busybox` with a symlink per
/// applet, `/etc/passwd` and `/etc/group` for root and nobody, and the usual empty directories.
/// The tarball appears at `path` only once whole.
pub fn build_busybox_tarball(path: &Path) -> Result<(), HarnessError> {
    // Unique per call, so hosts importing at the same time never write the same file.
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let build = BUILDS.fetch_add(1, Ordering::Relaxed);
    let partial = path.with_extension(format!("partial-{}-{build}", std::process::id()));
    let context = |what: &str| format!("{what} in {}", partial.display());
    let file = File::create(&partial).map_err(HarnessError::io(context("creating")))?;
    let mut builder = tar::Builder::new(file);
    for name in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        let mode = if name == "tmp" { 0o1777 } else { 0o755 };
        let mut header = header(tar::EntryType::Directory, mode, 0);
        builder
            .append_data(&mut header, name, std::io::empty())
            .map_err(HarnessError::io(context("adding a directory")))?;
    }
    let busybox =
        std::fs::read("/bin/busybox").map_err(HarnessError::io("reading /bin/busybox"))?;
    let files: [(&str, &[u8], u32); 3] = [
        ("bin/busybox", &busybox, 0o755),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            0o644,
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644),
    ];
    for (name, contents, mode) in files {
        let mut header = header(tar::EntryType::Regular, mode, contents.len() as u64);
        builder
            .append_data(&mut header, name, contents)
            .map_err(HarnessError::io(context("adding a file")))?;
    }
    let applets = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(HarnessError::io("running busybox --list"))?;
    for applet in String::from_utf8_lossy(&applets.stdout)
        .lines()
        .filter(|applet| *applet != "busybox")
    {
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .map_err(HarnessError::io(context("adding an applet link")))?;
    }
    builder
        .into_inner()
        .and_then(|file| file.sync_all())
        .map_err(HarnessError::io(context("finishing")))?;
    std::fs::rename(&partial, path).map_err(HarnessError::io(format!(
        "renaming {} to {}",
        partial.display(),
        path.display()
    )))
}

/// A tar header owned by root with a fixed mtime, so the image digest is the same every run.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    header
}
