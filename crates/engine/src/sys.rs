//! Thin, safe wrappers over the few kernel calls the engine makes beyond plain file IO: mounts,
//! pidfds, process-group and reaper control. Each keeps its `unsafe` to one audited line.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{EngineError, Result};

fn c_string(text: &[u8]) -> Result<CString> {
    CString::new(text).map_err(|e| EngineError::invalid("path", e))
}

/// Mounts an overlay of `lower` (bottom first) with `upper`/`work` on `target`.
pub fn mount_overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    // overlayfs lists lower layers top first.
    let lowers: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount("overlay", target, "overlay", 0, Some(&options))
}

/// mount(2).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let source_c = c_string(source.as_bytes())?;
    let target_c = c_string(target.as_os_str().as_bytes())?;
    let fstype_c = c_string(fstype.as_bytes())?;
    let data_c = data.map(|d| c_string(d.as_bytes())).transpose()?;
    let data_ptr = data_c
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null for data.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data_ptr,
        )
    };
    if rc != 0 {
        return Err(EngineError::last_os(format!(
            "mount {fstype} on {}",
            target.display()
        )));
    }
    Ok(())
}

/// Unmounts `target` if something is mounted there (detaching lazily if it is busy).
pub fn unmount_if_mounted(target: &Path) -> Result<()> {
    let target_c = c_string(target.as_os_str().as_bytes())?;
    // SAFETY: `target_c` is a NUL-terminated path.
    let rc = unsafe { libc::umount2(target_c.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            let rc = unsafe { libc::umount2(target_c.as_ptr(), libc::MNT_DETACH) };
            if rc == 0 {
                Ok(())
            } else {
                Err(EngineError::last_os(format!("umount {}", target.display())))
            }
        }
        _ => Err(EngineError::Sys {
            call: format!("umount {}", target.display()),
            source: error,
        }),
    }
}

/// Whether `target` is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = target.display().to_string();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// pidfd_open(2): a handle on a process that cannot be confused with a later one of the same pid.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(EngineError::last_os(format!("pidfd_open {pid}")));
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2).
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo and zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        // ESRCH: it already exited, which is what the caller wanted.
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(EngineError::Sys {
            call: format!("signal {signal}"),
            source: error,
        });
    }
    Ok(())
}

/// Whether process `pid` exists and its command line contains `needle` (guards against pid reuse).
pub fn process_matches(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == needle.as_bytes())
        })
        .unwrap_or(false)
}

/// Makes this process the reaper of its orphaned descendants, so a container's init, once its
/// runtime exits, becomes our child and we can collect its exit status.
pub fn set_child_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(EngineError::last_os("prctl(PR_SET_CHILD_SUBREAPER)"));
    }
    Ok(())
}

/// Outcome of `waitpid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    /// A child exited or was killed; the exit code docker would show (128 + signal if killed).
    Exited {
        /// The pid.
        pid: i32,
        /// The code.
        code: i32,
    },
    /// No child has changed state (only with `nohang`).
    Nothing,
}

/// waitpid(2) for `pid` (or any child with -1).
pub fn waitpid(pid: i32, nohang: bool) -> Result<Reaped> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let rc = unsafe { libc::waitpid(pid, &mut status, if nohang { libc::WNOHANG } else { 0 }) };
        if rc > 0 {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            return Ok(Reaped::Exited { pid: rc, code });
        }
        if rc == 0 {
            return Ok(Reaped::Nothing);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if error.raw_os_error() == Some(libc::ECHILD) {
            return Ok(Reaped::Nothing);
        }
        return Err(EngineError::Sys {
            call: format!("waitpid {pid}"),
            source: error,
        });
    }
}

/// Forks. Only for single-threaded callers (the shim, before it starts anything).
///
/// Returns `Some(child_pid)` in the parent and `None` in the child.
pub fn fork_single_threaded() -> Result<Option<i32>> {
    // SAFETY: the only caller is the shim's main function before any thread exists, so the
    // child inherits a consistent copy of the whole process.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(EngineError::last_os("fork")),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// setsid(2): leaves the daemon's session and process group, so signals aimed at the daemon's
/// terminal or group do not reach containers.
pub fn setsid() {
    // SAFETY: setsid takes no arguments; failure (already a group leader) is harmless here.
    unsafe { libc::setsid() };
}

/// Ends the process at once without running destructors or atexit handlers: the parent half
/// of the shim's fork, whose state belongs to the child.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Waits until one of `fds` is readable (or hung up), up to `timeout_ms` (-1 = forever).
/// Returns a readiness flag per fd.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pollfds` is a valid array of `pollfds.len()` entries for the call's duration.
        let rc = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if rc >= 0 {
            return Ok(pollfds.iter().map(|p| p.revents != 0).collect());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(EngineError::Sys {
                call: "poll".to_owned(),
                source: error,
            });
        }
    }
}

/// kill(2) by pid, for processes we hold no pidfd on; ESRCH is not an error.
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill takes two integers.
    unsafe { libc::kill(pid, signal) };
}

/// Brings up `lo` in the network namespace of process `pid`, then returns to our own. Runs in
/// the single-threaded shim, between the runtime creating the container and starting it, so
/// the container's first instruction already sees a working loopback (runc does this itself;
/// libcontainer does not). In a namespace the container joined (`network_namespace`), `lo` is
/// that namespace's and usually up already; raising it again changes nothing else there.
pub fn bring_up_loopback_of(pid: i32) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let own = std::fs::File::open("/proc/self/ns/net")
        .map_err(EngineError::io("opening our network namespace"))?;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(EngineError::io("opening the container's network namespace"))?;
    // SAFETY: setns takes a namespace fd we hold open and a namespace type.
    if unsafe { libc::setns(theirs.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(EngineError::last_os(
            "setns into the container's network namespace",
        ));
    }
    let result = set_loopback_up();
    // SAFETY: as above, back to the namespace we came from.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // Staying in the container's namespace would be wrong for everything after; give up.
        eprintln!(
            "cannot return to the host network namespace: {}",
            std::io::Error::last_os_error()
        );
        exit_immediately(1);
    }
    result
}

fn set_loopback_up() -> Result<()> {
    // SAFETY: socket takes three integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(EngineError::last_os("socket for interface flags"));
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS, which read and write
    // only its name and flags; the flags member of the union is the one these calls use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(EngineError::last_os("reading lo's flags"));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(EngineError::last_os("bringing lo up"));
        }
    }
    Ok(())
}

/// Set by [`on_stop_signal`] when SIGTERM, SIGINT or SIGHUP arrives.
static STOP_SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    STOP_SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Records SIGTERM, SIGINT and SIGHUP instead of dying of them, and returns whether one has
/// arrived since. For the single-threaded exec helper, which must outlive its own stop signal
/// long enough to kill what it runs. Handlers are reset on exec, so children run with the
/// default ones.
pub fn record_stop_signals() -> Result<fn() -> bool> {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let handler: extern "C" fn(libc::c_int) = on_stop_signal;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(EngineError::last_os("signal"));
        }
    }
    Ok(|| STOP_SIGNALLED.load(std::sync::atomic::Ordering::SeqCst))
}

/// The system's memory page size, what tmpfs sizes are counted in.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes one integer and reads no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|size| *size > 0)
        .unwrap_or(4096)
}

/// Waits for child `pid` to exit and returns its exit code; once `stop_requested` says so,
/// kills it (and its process group, when it leads one) with SIGKILL first. This is how a
/// healthcheck that timed out is ended inside the container: the engine stops the exec helper,
/// and the helper kills the probe it started, which SIGKILL to the helper alone would leave
/// running.
pub fn wait_or_kill(pid: i32, stop_requested: &dyn Fn() -> bool) -> Result<i32> {
    const POLL: std::time::Duration = std::time::Duration::from_millis(10);
    loop {
        if let Reaped::Exited { code, .. } = waitpid(pid, true)? {
            return Ok(code);
        }
        if stop_requested() {
            // SAFETY: getpgid takes one integer.
            if unsafe { libc::getpgid(pid) } == pid {
                kill(-pid, libc::SIGKILL);
            }
            kill(pid, libc::SIGKILL);
            return match waitpid(pid, false)? {
                Reaped::Exited { code, .. } => Ok(code),
                Reaped::Nothing => Ok(128 + libc::SIGKILL),
            };
        }
        std::thread::sleep(POLL);
    }
}

/// Removes cgroup `path` (`/shoal/<id>`) from every hierarchy under `/sys/fs/cgroup`, killing
/// what is still in it. A runtime's own delete can leave one behind: a healthcheck's exec helper
/// that joined the cgroup as the container died keeps it busy until that helper has exited.
pub fn remove_cgroup_everywhere(path: &str) -> Result<()> {
    const ATTEMPTS: u32 = 200;
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Ok(());
    };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(path.trim_start_matches('/'));
        for attempt in 1..=ATTEMPTS {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                Err(error) if attempt == ATTEMPTS => {
                    return Err(EngineError::io(format!(
                        "removing cgroup {}",
                        dir.display()
                    ))(error));
                }
                Err(_) => {
                    let procs =
                        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|line| line.trim().parse().ok()) {
                        kill(pid, libc::SIGKILL);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    #[allow(
        clippy::zombie_processes,
        reason = "wait_or_kill reaps the child with waitpid"
    )]
    fn a_child_that_ends_gives_its_exit_code() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(wait_or_kill(pid, &|| false).unwrap(), 3);
    }

    #[test]
    #[allow(
        clippy::zombie_processes,
        reason = "wait_or_kill reaps the child with waitpid"
    )]
    fn a_stop_request_kills_the_child_and_its_group() {
        // The probe leads its own group, with a grandchild in it, as a shell running a
        // pipeline would.
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30; wait"]);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let asked_at = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let code = wait_or_kill(pid, &|| Instant::now() >= asked_at).unwrap();
        assert_eq!(code, 128 + libc::SIGKILL);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Nothing of the group still runs (killed ones may linger as zombies until reaped).
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(running_in_group(pid), Vec::<String>::new());
    }

    /// The processes of group `pgid` that are not zombies, from /proc.
    fn running_in_group(pgid: i32) -> Vec<String> {
        let mut running = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
                running.push(stat);
            }
        }
        running
    }
}
