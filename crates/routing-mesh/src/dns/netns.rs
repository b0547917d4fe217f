//! Sockets opened inside a task's network namespace, so the daemon serves the task's DNS without a
//! process or a thread living there: a short-lived thread enters the namespace
//! (`overlay_net::netns::run_in`), opens the sockets, and ends. The sockets stay in the namespace
//! they were opened in, and the daemon's runtime serves them from anywhere.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use overlay_net::netns;

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
    netns::run_in(Some(netns_path), move || -> io::Result<TaskSockets> {
        let udp = UdpSocket::bind(address)?;
        udp.set_nonblocking(true)?;
        // The standard library sets SO_REUSEADDR on listeners, so a restarted daemon binds again
        // while old connections linger in TIME_WAIT.
        let tcp = TcpListener::bind(address)?;
        tcp.set_nonblocking(true)?;
        Ok(TaskSockets { udp, tcp })
    })?
    .map_err(|source| DnsError::Bind {
        path: netns_path.to_owned(),
        address,
        source,
    })
}
