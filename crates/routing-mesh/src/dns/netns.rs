//! Sockets opened inside a task's network namespace, so the daemon serves the task's DNS without a
//! process or a thread living there.
//!
//! A network namespace belongs to a thread, not a process: a short-lived thread enters the
//! namespace with setns(2), opens the sockets, and ends. The sockets stay in the namespace they
//! were opened in, and the daemon's runtime serves them from anywhere. A fresh thread is used
//! rather than one of a pool, so no thread that might run other work is ever left in a task's
//! namespace.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use super::DnsError;

/// Where every task finds its DNS, as in Docker.
pub const EMBEDDED_DNS_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// The UDP socket and TCP listener of one task's embedded DNS, bound, non-blocking.
#[derive(Debug)]
pub struct TaskSockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

/// Opens the UDP socket and the TCP listener at `address` inside the network namespace at
/// `netns_path` (`/run/netns/NAME`, `/proc/PID/ns/net`). The namespace's `lo` must be up.
pub fn open_task_sockets(netns_path: &Path, address: SocketAddr) -> Result<TaskSockets, DnsError> {
    let bind_error = |source: io::Error| DnsError::Bind {
        path: netns_path.to_owned(),
        address,
        source,
    };
    run_in_netns(netns_path, move || {
        let udp = UdpSocket::bind(address)?;
        udp.set_nonblocking(true)?;
        // The standard library sets SO_REUSEADDR on listeners, so a restarted daemon binds again
        // while old connections linger in TIME_WAIT.
        let tcp = TcpListener::bind(address)?;
        tcp.set_nonblocking(true)?;
        Ok(TaskSockets { udp, tcp })
    })
    .map_err(|error| match error {
        DnsError::InNamespace { source, .. } => bind_error(source),
        other => other,
    })
}

/// Runs `work` on a fresh thread inside the network namespace at `netns_path` and returns what
/// it made. Sockets `work` opens belong to that namespace. Blocks until that thread ends (a few
/// system calls); async code calls it through `spawn_blocking`.
pub fn run_in_netns<T, F>(netns_path: &Path, work: F) -> Result<T, DnsError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path: PathBuf = netns_path.to_owned();
    let namespace = File::open(&path).map_err(|source| DnsError::OpenNamespace {
        path: path.clone(),
        source,
    })?;
    let thread_path = path.clone();
    let thread = std::thread::Builder::new()
        .name("shoal-netns".to_owned())
        .spawn(move || {
            setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|source| {
                DnsError::EnterNamespace {
                    path: thread_path.clone(),
                    source,
                }
            })?;
            work().map_err(|source| DnsError::InNamespace {
                path: thread_path,
                source,
            })
        })
        .map_err(|error| DnsError::NamespaceThread {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    thread.join().map_err(|_| DnsError::NamespaceThread {
        path,
        reason: "it panicked".to_owned(),
    })?
}
