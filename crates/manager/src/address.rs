//! Choosing the address a manager advertises, as docker does: the one given, else the listen
//! address when it names an interface, else the node's only non-loopback IPv4 address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::error::ManagerError;

/// Swarm's cluster port.
pub const DEFAULT_CLUSTER_PORT: u16 = 2377;

/// Parses `--listen-addr` (IP, IP:PORT or empty for 0.0.0.0:2377).
pub fn parse_listen_addr(listen: &str) -> Result<SocketAddr, ManagerError> {
    if listen.is_empty() {
        return Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_CLUSTER_PORT,
        ));
    }
    if let Ok(ip) = listen.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_CLUSTER_PORT));
    }
    listen.parse::<SocketAddr>().map_err(|_| {
        ManagerError::InvalidArgument(format!(
            "invalid listen address {listen:?}: give IP or IP:PORT, such as 0.0.0.0:2377"
        ))
    })
}

/// The address to advertise, given `--advertise-addr` (IP or IP:PORT, may be empty), the
/// bound listen address and the host's non-loopback IPv4 addresses.
pub fn choose_advertise_addr(
    advertise: &str,
    listening_on: SocketAddr,
    host_addresses: &[Ipv4Addr],
) -> Result<SocketAddr, ManagerError> {
    let port = listening_on.port();
    if !advertise.is_empty() {
        if let Ok(ip) = advertise.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        return advertise.parse::<SocketAddr>().map_err(|_| {
            ManagerError::InvalidArgument(format!(
                "invalid advertise address {advertise:?}: give IP or IP:PORT, such as 192.168.1.10"
            ))
        });
    }
    if !listening_on.ip().is_unspecified() {
        return Ok(listening_on);
    }
    match host_addresses {
        [only] => Ok(SocketAddr::new(IpAddr::V4(*only), port)),
        [] => Err(ManagerError::InvalidArgument(
            "this host has no non-loopback IPv4 address to advertise: pass --advertise-addr"
                .to_owned(),
        )),
        several => Err(ManagerError::InvalidArgument(format!(
            "could not choose an address to advertise: this host has several ({}); pass --advertise-addr",
            several
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The host's non-loopback IPv4 addresses, in interface order, from getifaddrs(3).
pub fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addresses = Vec::new();
    for interface in interfaces {
        let Some(ip) = interface
            .address
            .as_ref()
            .and_then(|address| address.as_sockaddr_in())
            .map(|address| address.ip())
        else {
            continue;
        };
        if !ip.is_loopback() && !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn listen_addresses_default_to_all_interfaces_on_2377() {
        assert_eq!(parse_listen_addr("").unwrap(), listen("0.0.0.0:2377"));
        assert_eq!(
            parse_listen_addr("10.1.2.3").unwrap(),
            listen("10.1.2.3:2377")
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap(),
            listen("127.0.0.1:0")
        );
        assert!(
            parse_listen_addr("nonsense")
                .unwrap_err()
                .to_string()
                .contains("IP:PORT")
        );
    }

    #[test]
    fn advertise_address_is_given_or_derived_or_refused_with_a_fix() {
        let any = listen("0.0.0.0:2377");
        let one = [Ipv4Addr::new(10, 0, 0, 5)];
        let two = [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(172, 17, 0, 1)];
        assert_eq!(
            choose_advertise_addr("192.168.1.9", any, &two).unwrap(),
            listen("192.168.1.9:2377")
        );
        assert_eq!(
            choose_advertise_addr("", listen("127.0.0.1:4000"), &two).unwrap(),
            listen("127.0.0.1:4000")
        );
        assert_eq!(
            choose_advertise_addr("", any, &one).unwrap(),
            listen("10.0.0.5:2377")
        );
        let several = choose_advertise_addr("", any, &two)
            .unwrap_err()
            .to_string();
        assert!(several.contains("10.0.0.5, 172.17.0.1") && several.contains("--advertise-addr"));
        assert!(
            choose_advertise_addr("", any, &[])
                .unwrap_err()
                .to_string()
                .contains("--advertise-addr")
        );
    }
}
