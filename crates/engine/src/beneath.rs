//! Paths resolved beneath a root directory, never through the host's view of them. Image content
//! is hostile input: a layer or archive may hold a symlink to `/` and then an entry "inside" it.
//! So the image store makes layer entries, and reads image files (`/etc/passwd`, archive
//! members), only through handles opened from the root, one component at a time, and a path
//! that would pass through a link or `..` is refused.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// What a read beneath a root found at a path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing is there.
    Missing,
    /// An overlay whiteout (a 0/0 character device): the file was deleted in this layer.
    Whiteout,
    /// A regular file's contents.
    File(Vec<u8>),
}

/// An open directory that every path is resolved beneath.
pub(crate) struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Opens `path`, a directory the caller trusts (the store's own scratch or layer directory).
    pub(crate) fn open(path: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root })
    }

    /// Opens the directory `components` names beneath the root, walking one component at a
    /// time without following links; with `create`, missing directories are made (mode 0755).
    /// Refuses a component that is a link or not a directory.
    pub(crate) fn directory(&self, components: &[&OsStr], create: bool) -> io::Result<OwnedFd> {
        let mut current = rustix::io::dup(&self.root)?;
        for (depth, name) in components.iter().enumerate() {
            let open = |dir: &OwnedFd| {
                rustix::fs::openat(
                    dir,
                    *name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let next = match open(&current) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&current, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => open(&current),
                        Err(error) => Err(error),
                    }
                }
                other => other,
            };
            current = next.map_err(|error| match error {
                Errno::LOOP | Errno::NOTDIR => io::Error::other(format!(
                    "{} is a link or a file, not a directory: nothing may be placed or read \
                     through it",
                    display(&components[..=depth])
                )),
                other => io::Error::from(other),
            })?;
        }
        Ok(current)
    }

    /// Reads the file at `relative`, resolving links as if the root were `/` (so an absolute
    /// link or `..` can't leave it). Anything but a regular file (a directory, a device, a FIFO)
    /// is refused, and so is a file over `limit` bytes.
    pub(crate) fn read(&self, relative: &Path, limit: u64) -> io::Result<Found> {
        match self.open_regular(relative, limit)? {
            Opened::Missing => Ok(Found::Missing),
            Opened::Whiteout => Ok(Found::Whiteout),
            Opened::File(file) => {
                let mut contents = Vec::new();
                file.take(limit + 1).read_to_end(&mut contents)?;
                if contents.len() as u64 > limit {
                    return Err(too_large(relative, limit));
                }
                Ok(Found::File(contents))
            }
        }
    }

    /// Opens the regular file at `relative` for reading, as [`Beneath::read`] resolves it;
    /// a missing file or a whiteout is an error here.
    pub(crate) fn open_file(&self, relative: &Path, limit: u64) -> io::Result<File> {
        match self.open_regular(relative, limit)? {
            Opened::File(file) => Ok(file),
            Opened::Missing | Opened::Whiteout => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is missing", relative.display()),
            )),
        }
    }

    fn open_regular(&self, relative: &Path, limit: u64) -> io::Result<Opened> {
        // Non-blocking, so that opening a FIFO planted in the image can't hang the daemon.
        let opened = rustix::fs::openat2(
            &self.root,
            relative,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Opened::Missing),
            Err(error) => {
                return Err(io::Error::other(format!(
                    "{}: {}",
                    relative.display(),
                    io::Error::from(error)
                )));
            }
        };
        let stat = rustix::fs::fstat(&fd)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::CharacterDevice if stat.st_rdev == 0 => return Ok(Opened::Whiteout),
            other => {
                return Err(io::Error::other(format!(
                    "{} is not a regular file ({other:?})",
                    relative.display()
                )));
            }
        }
        if stat.st_size as u64 > limit {
            return Err(too_large(relative, limit));
        }
        // O_NONBLOCK stays set; on a regular file it changes nothing.
        Ok(Opened::File(File::from(fd)))
    }
}

enum Opened {
    Missing,
    Whiteout,
    File(File),
}

fn too_large(relative: &Path, limit: u64) -> io::Error {
    io::Error::other(format!(
        "{} is larger than the {limit}-byte limit",
        relative.display()
    ))
}

/// The normal components of a path from image content; a `..` anywhere is refused, and `/` and
/// `.` are dropped, so `/etc/./passwd` and `etc/passwd` are the same entry.
pub(crate) fn components(path: &Path) -> io::Result<Vec<&OsStr>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::other(format!(
                    "{} climbs out with '..'",
                    path.display()
                )));
            }
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` if it is there, a whole directory tree included, without following
/// any link inside it.
pub(crate) fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let inner = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        empty_directory(inner)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

fn empty_directory(dir: OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    for name in names {
        remove_entry(
            dir.as_fd(),
            std::os::unix::ffi::OsStrExt::from_bytes(&name[..]),
        )?;
    }
    Ok(())
}

fn display(components: &[&OsStr]) -> String {
    components
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolve_links_as_if_the_root_were_slash() -> io::Result<()> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), b"host")?;
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join("etc"))?;
        std::fs::write(root.path().join("etc/real"), b"image")?;
        let secret = outside.path().join("secret");
        std::os::unix::fs::symlink(&secret, root.path().join("etc/absolute"))?;
        std::os::unix::fs::symlink("../../../../../../..", root.path().join("etc/up"))?;
        std::os::unix::fs::symlink("real", root.path().join("etc/relative"))?;
        std::os::unix::fs::symlink("/etc/real", root.path().join("etc/rooted"))?;
        let beneath = Beneath::open(root.path())?;

        let read = |path: &str| {
            beneath
                .read(Path::new(path), 1024)
                .map_err(|e| e.to_string())
        };
        assert_eq!(read("etc/relative"), Ok(Found::File(b"image".to_vec())));
        assert_eq!(read("/etc/rooted"), Ok(Found::File(b"image".to_vec())));
        // The absolute link names a host path, which beneath the root does not exist.
        assert_eq!(read("etc/absolute"), Ok(Found::Missing));
        let up = secret.strip_prefix("/").unwrap_or(&secret).display();
        assert_eq!(read(&format!("etc/up/{up}")), Ok(Found::Missing));
        assert!(read("etc").is_err_and(|e| e.contains("not a regular file")));
        assert!(
            beneath
                .read(Path::new("etc/real"), 3)
                .is_err_and(|e| e.to_string().contains("larger than the 3-byte limit"))
        );
        Ok(())
    }

    #[test]
    fn the_walk_refuses_links_and_files_on_the_way() -> io::Result<()> {
        let outside = tempfile::tempdir()?;
        let root = tempfile::tempdir()?;
        std::os::unix::fs::symlink(outside.path(), root.path().join("link"))?;
        std::fs::write(root.path().join("file"), b"")?;
        let beneath = Beneath::open(root.path())?;
        let refused = |path: &str| {
            let path = Path::new(path);
            beneath
                .directory(&components(path)?, true)
                .map(|_| ())
                .map_err(|e| e.to_string())
                .err()
                .ok_or_else(|| io::Error::other(format!("{} was opened", path.display())))
        };
        assert!(refused("link/new")?.contains("link is a link or a file"));
        assert!(refused("file/new")?.contains("file is a link or a file"));
        assert_eq!(std::fs::read_dir(outside.path())?.count(), 0);
        beneath.directory(&components(Path::new("/a/./b/c"))?, true)?;
        assert!(root.path().join("a/b/c").is_dir());
        assert!(components(Path::new("a/../b")).is_err());
        Ok(())
    }

    #[test]
    fn removal_stays_inside_the_tree() -> io::Result<()> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("keep"), b"")?;
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("tree/sub"))?;
        std::fs::write(root.path().join("tree/sub/file"), b"")?;
        std::os::unix::fs::symlink(outside.path(), root.path().join("tree/link"))?;
        let top = Beneath::open(root.path())?.directory(&[], false)?;
        remove_entry(top.as_fd(), OsStr::new("tree"))?;
        remove_entry(top.as_fd(), OsStr::new("absent"))?;
        assert_eq!(std::fs::read_dir(root.path())?.count(), 0);
        assert!(outside.path().join("keep").exists());
        Ok(())
    }
}
