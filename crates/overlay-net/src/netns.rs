//! Network namespaces, for every crate of the node: named ones under /run/netns, made the way
//! `ip netns add` makes them (a file with the namespace bind-mounted on it, so it outlives the
//! thread that made it and a restarted daemon finds it); work done on a short-lived thread that
//! has entered one (sockets it opens stay there: routing-mesh's DNS opens a task's that way);
//! and programs run inside one through nsenter, so nothing of this process enters it.
//!
//! A namespace belongs to a thread, not a process. A fresh thread is used each time rather than
//! one of a pool, so no thread that might run other work is ever left in another namespace.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::Error;

/// Where named network namespaces live, as iproute2 keeps them.
pub const NETNS_DIR: &str = "/run/netns";

/// nsenter(1): runs a program inside a namespace without this process entering it.
pub const NSENTER: &str = "nsenter";

/// The file of a named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |e| Error::Io {
        what,
        source: io::Error::from(e),
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `ns` (`None`: the
/// caller's), and returns what it returns. Sockets opened by `f` stay in that namespace, and so
/// do processes it starts. Blocks until the thread ends; async code calls it through
/// `spawn_blocking`.
pub fn run_in<T, F>(ns: Option<&Path>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = match ns {
        Some(p) => Some(File::open(p).map_err(io_err(format!(
            "open network namespace {} (is the namespace there?)",
            p.display()
        )))?),
        None => None,
    };
    let what = ns.map_or_else(|| "the caller's".to_string(), |p| p.display().to_string());
    let thread_what = what.clone();
    std::thread::Builder::new()
        .name("shoal-netns".to_owned())
        .spawn(move || {
            if let Some(file) = file {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(nix_err(format!("enter network namespace {thread_what}")))?;
            }
            Ok(f())
        })
        .map_err(io_err(format!(
            "start a thread to work in network namespace {what}"
        )))?
        .join()
        .map_err(|_| Error::Io {
            what: format!("a thread working in network namespace {what} panicked"),
            source: io::Error::other("panic"),
        })?
}

/// [`run_in`], with a sysfs of that network namespace at /sys, so that `/sys/class/net` lists
/// its links rather than those of the namespace the node's sysfs was mounted from. The sysfs is
/// mounted in a mount namespace of the thread's own, made private first so that nothing of it
/// reaches the node's mounts, and goes with the thread.
pub fn run_in_with_sysfs<T, F>(ns: Option<&Path>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_in(ns, move || -> Result<T, Error> {
        unshare(CloneFlags::CLONE_NEWNS).map_err(nix_err("unshare a mount namespace"))?;
        let private = MsFlags::MS_PRIVATE | MsFlags::MS_REC;
        mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
            .map_err(nix_err("make a thread's mounts private"))?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        mount(Some("sysfs"), "/sys", Some("sysfs"), flags, None::<&str>)
            .map_err(nix_err("mount the network namespace's sysfs on /sys"))?;
        Ok(f())
    })?
}

/// A command that runs `program` inside the network namespace at `ns` through `nsenter`
/// (`nsenter --net=PATH PROGRAM`), or `program` itself when `ns` is `None` (the caller's).
pub fn command(
    nsenter: impl AsRef<OsStr>,
    ns: Option<&Path>,
    program: impl AsRef<OsStr>,
) -> Command {
    match ns {
        Some(ns) => {
            let mut net = std::ffi::OsString::from("--net=");
            net.push(ns);
            let mut command = Command::new(nsenter);
            command.arg(net).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Makes /run/netns a shared mount, as iproute2 does, so namespaces mounted there show in
/// every mount namespace that shares it.
fn share_netns_dir() -> Result<(), Error> {
    fs::create_dir_all(NETNS_DIR).map_err(io_err(format!("create {NETNS_DIR}")))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself first.
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(nix_err(format!("bind-mount {NETNS_DIR} onto itself")))?;
    mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
        .map_err(nix_err(format!("make {NETNS_DIR} a shared mount")))
}

/// Whether `p` has a network namespace mounted on it (a bare file left by a crash has not).
pub fn is_namespace(p: &Path) -> bool {
    File::open(p)
        .ok()
        .and_then(|f| nix::sys::statfs::fstatfs(&f).ok())
        .is_some_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Creates the named namespace, or leaves it as it is when it is there.
pub fn create(name: &str) -> Result<(), Error> {
    let target = path(name);
    if is_namespace(&target) {
        return Ok(());
    }
    share_netns_dir()?;
    File::create(&target).map_err(io_err(format!("create {}", target.display())))?;
    let mount_target = target.clone();
    let made = run_in(None, move || -> Result<(), Error> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(nix_err("unshare a new network namespace"))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &mount_target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err(format!(
            "bind-mount the new network namespace on {}",
            mount_target.display()
        )))
    })
    .and_then(|r| r);
    if made.is_err() {
        let _ = fs::remove_file(&target);
    }
    made
}

/// Removes the named namespace; its links go when nothing else holds it.
pub fn delete(name: &str) -> Result<(), Error> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(nix_err(format!("unmount {}", target.display()))(e)),
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("remove {}", target.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The named namespaces whose names start with `prefix`, with a namespace mounted on them.
pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("list {NETNS_DIR}"))(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {NETNS_DIR}")))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
