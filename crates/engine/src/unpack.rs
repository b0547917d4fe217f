//! Tar streams unpacked beneath a directory: image layers (with OCI whiteouts turned into
//! overlayfs ones, and owners, modes, times and device nodes kept) and `image load` archives
//! (files, directories and links only). Every entry is made through [`Beneath`]: its parent is
//! opened one component at a time without following links, and the entry itself is made with a
//! `*at` call on that parent that never follows a link at its name. So no entry, whatever links
//! the same tar made before it, lands outside its directory.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, makedev,
};
use rustix::io::Errno;

use crate::beneath::{self, Beneath};

/// The OCI marker that makes its directory opaque: lower layers' content there is hidden.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The prefix of OCI whiteouts: `.wh.NAME` deletes NAME of the lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// AUFS's own bookkeeping (`.wh..wh.plnk`, …), which Docker skips too.
const AUFS_METADATA_PREFIX: &[u8] = b".wh..wh.";

/// What a tar stream is, and so what its entries may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// An image layer: every entry type, owners and modes kept, whiteouts applied.
    Layer,
    /// An `image load` archive (docker save or OCI layout): files, directories, symbolic and
    /// hard links; nothing else, owned by the daemon.
    Archive,
}

/// Unpacks the tar `reader` beneath `dest` and returns its number of entries. The caller bounds
/// the stream (`util::BoundedReader`), so that a small compressed layer can't fill the disk.
pub fn unpack<R: Read>(reader: R, dest: &Path, kind: TarKind) -> io::Result<u64> {
    let root = Beneath::open(dest)?;
    let mut archive = tar::Archive::new(reader);
    let mut count = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        count += 1;
        let path = entry.path()?.into_owned();
        let refuse = |problem: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {}: {problem}", path.display()),
            )
        };
        let names = beneath::components(&path).map_err(|e| refuse(e.to_string()))?;
        let Some((name, parents)) = names.split_last() else {
            continue;
        };
        let parent = root
            .directory(parents, true)
            .map_err(|e| refuse(e.to_string()))?;
        let made = match kind {
            TarKind::Layer => apply_layer_entry(&root, &parent, name, &mut entry),
            TarKind::Archive => apply_archive_entry(&root, &parent, name, &mut entry),
        };
        made.map_err(|e| refuse(e.to_string()))?;
    }
    Ok(count)
}

fn apply_layer_entry<R: Read>(
    root: &Beneath,
    parent: &OwnedFd,
    name: &OsStr,
    entry: &mut tar::Entry<'_, R>,
) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return rustix::fs::fsetxattr(parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
            .map_err(Into::into);
    }
    if bytes.starts_with(AUFS_METADATA_PREFIX) {
        return Ok(());
    }
    if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(io::Error::other("a whiteout must name an entry"));
        }
        let hidden = OsStr::from_bytes(hidden);
        beneath::remove_entry(parent.as_fd(), hidden)?;
        return rustix::fs::mknodat(
            parent,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(Into::into);
    }
    let header = entry.header();
    let mode = Mode::from_raw_mode(header.mode()? & 0o7777);
    let owner = (
        Uid::from_raw(header.uid()? as u32),
        Gid::from_raw(header.gid()? as u32),
    );
    let mtime = header.mtime()?;
    let entry_type = header.entry_type();
    let made = make_entry(root, parent.as_fd(), name, entry, entry_type, mode)?;
    if matches!(made, Made::Nothing) {
        return Ok(());
    }
    rustix::fs::chownat(
        parent,
        name,
        Some(owner.0),
        Some(owner.1),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    // chown clears set-id bits, so the mode goes on after it; links have no mode of their own.
    if let Made::Opened(fd) = made {
        rustix::fs::fchmod(&fd, mode)?;
    }
    let time = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn apply_archive_entry<R: Read>(
    root: &Beneath,
    parent: &OwnedFd,
    name: &OsStr,
    entry: &mut tar::Entry<'_, R>,
) -> io::Result<()> {
    let entry_type = entry.header().entry_type();
    if entry_type.is_character_special() || entry_type.is_block_special() || entry_type.is_fifo() {
        return Err(io::Error::other(format!(
            "is a {entry_type:?}; an image archive holds only files, directories and links"
        )));
    }
    // The daemon alone reads what it unpacks here, so the archive's owners and modes are
    // dropped: files stay 0600 and directories 0700, owned by the daemon.
    make_entry(root, parent.as_fd(), name, entry, entry_type, Mode::empty())?;
    Ok(())
}

/// What [`make_entry`] made.
enum Made {
    /// Nothing: the entry type makes nothing.
    Nothing,
    /// A file or directory, open to set its mode on.
    Opened(OwnedFd),
    /// A link, device node or FIFO.
    Node,
}

/// Makes `name` in `parent` as the entry says, replacing what was there (a directory stays when
/// the entry is a directory too); `mode` is used for device nodes and FIFOs only.
fn make_entry<R: Read>(
    root: &Beneath,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    entry: &mut tar::Entry<'_, R>,
    entry_type: tar::EntryType,
    mode: Mode,
) -> io::Result<Made> {
    use tar::EntryType;
    let directory_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match entry_type {
        EntryType::Directory => {
            let existing = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
            let is_directory = existing
                .as_ref()
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
            if !is_directory {
                beneath::remove_entry(parent, name)?;
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
            }
            let fd = rustix::fs::openat(parent, name, directory_flags, Mode::empty())?;
            Ok(Made::Opened(fd))
        }
        // The tar crate reads a sparse file's holes back as zeros.
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            beneath::remove_entry(parent, name)?;
            let fd = rustix::fs::openat(
                parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut file = std::fs::File::from(fd);
            io::copy(entry, &mut file)?;
            Ok(Made::Opened(OwnedFd::from(file)))
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()?
                .ok_or_else(|| io::Error::other("a symbolic link without a target"))?;
            beneath::remove_entry(parent, name)?;
            // The target is stored as written and never followed here: only the container,
            // inside its own root, resolves it.
            rustix::fs::symlinkat(&*target, parent, name)?;
            Ok(Made::Node)
        }
        EntryType::Link => {
            let target = entry
                .link_name()?
                .ok_or_else(|| io::Error::other("a hard link without a target"))?;
            let target_names = beneath::components(&target)?;
            let Some((target_name, target_parents)) = target_names.split_last() else {
                return Err(io::Error::other("a hard link to the layer's root"));
            };
            let target_parent = root.directory(target_parents, false)?;
            beneath::remove_entry(parent, name)?;
            // No AT_SYMLINK_FOLLOW: a link to a symbolic link links the symbolic link itself.
            rustix::fs::linkat(&target_parent, *target_name, parent, name, AtFlags::empty())
                .map_err(|error| match error {
                    Errno::NOENT => io::Error::other(format!(
                        "a hard link to {}, which is not in this tar",
                        target.display()
                    )),
                    other => other.into(),
                })?;
            Ok(Made::Node)
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let file_type = match entry_type {
                EntryType::Char => FileType::CharacterDevice,
                EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            // A FIFO has no device numbers; tar writers leave the fields blank or zero.
            let device = if file_type == FileType::Fifo {
                makedev(0, 0)
            } else {
                let header = entry.header();
                makedev(
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                )
            };
            beneath::remove_entry(parent, name)?;
            rustix::fs::mknodat(parent, name, file_type, mode, device)?;
            // mknodat's mode went through the umask, and opening a device or FIFO to fchmod it
            // could block or act on the device. chmodat follows a link at its name, but the name
            // was made just above as a device node.
            rustix::fs::chmodat(parent, name, mode, AtFlags::empty())?;
            Ok(Made::Node)
        }
        // Extension headers (PAX, GNU long names) are read by the tar crate itself; anything
        // else a layer may hold (sockets have no tar type) makes nothing.
        _ => Ok(Made::Nothing),
    }
}
