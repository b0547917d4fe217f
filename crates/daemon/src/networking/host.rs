//! What the node's networking reads of the host: the addresses on its interfaces (for the
//! gateway bridge's subnet) and the MTU of the interface that holds the node's address. Read in
//! the calling thread's network namespace.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use overlay_net::Ipv4Cidr;

/// Every IPv4 address on the host's interfaces, with its interface, except those of `skip`.
fn interface_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addresses
        .filter_map(|interface| {
            let address = interface.address?.as_sockaddr_in()?.ip();
            Some((interface.interface_name, address))
        })
        .collect())
}

/// The gateway bridge's subnet: the first of Docker's candidates no interface but this node's
/// own bridge (`own_bridge`) has an address in.
pub(super) fn gateway_bridge_subnet(own_bridge: &str) -> Ipv4Cidr {
    let taken: Vec<Ipv4Addr> = interface_addresses()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "could not list the host's addresses; the gateway bridge takes 172.18.0.0/16");
            Vec::new()
        })
        .into_iter()
        .filter(|(name, _)| name != own_bridge)
        .map(|(_, address)| address)
        .collect();
    super::core::pick_gateway_bridge(&taken)
}

/// The MTU of the interface holding `address`.
pub(super) fn mtu_of_interface_with(address: Ipv4Addr) -> io::Result<u32> {
    let name = interface_addresses()?
        .into_iter()
        .find(|(_, held)| *held == address)
        .map(|(name, _)| name)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no interface holds it: advertise an address of this host",
            )
        })?;
    interface_mtu(&name)
}

/// SIOCGIFMTU on a socket of the caller's namespace (sysfs would show the namespace it was
/// mounted in, not the caller's).
fn interface_mtu(name: &str) -> io::Result<u32> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name} is too long"),
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: the socket is open, and SIOCGIFMTU reads the name from and writes the MTU into
    // the ifreq it is given, which lives for the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut request) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU succeeded, so the union holds the MTU.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other(format!("{name} reports MTU {mtu}")))
}
