//! The upstream resolvers embedded DNS forwards other names to: a task's own (`--dns`), else the
//! host's, from its `/etc/resolv.conf`, as Docker takes them.

use std::net::{IpAddr, SocketAddr};

use super::netns::EMBEDDED_DNS_ADDRESS;

/// How many upstream resolvers are tried for one question, in order (Docker's `maxExtDNS`).
pub const MAX_UPSTREAMS: usize = 3;

/// The port upstream resolvers listen on.
const DNS_PORT: u16 = 53;

/// The `nameserver` entries of a resolv.conf text, at most [`MAX_UPSTREAMS`], without the
/// embedded DNS's own address (a task's `--dns 127.0.0.11` would only ask itself). Lines that do
/// not parse are skipped, as the C library skips them.
pub fn upstreams_from_resolv_conf(text: &[u8]) -> Vec<SocketAddr> {
    let (config, _unparsed_lines) = resolv_conf::Config::parse_with_errors(text);
    config
        .nameservers
        .iter()
        .map(IpAddr::from)
        .filter(|address| *address != EMBEDDED_DNS_ADDRESS.ip())
        .take(MAX_UPSTREAMS)
        .map(|address| SocketAddr::new(address, DNS_PORT))
        .collect()
}

/// A task's own nameservers (`--dns`, `ContainerSpec.dns_config.nameservers`), at most
/// [`MAX_UPSTREAMS`], without the embedded DNS's own address; an entry that is not an IP address
/// is skipped (the spec's validation refuses it before it is stored).
pub fn task_upstreams(nameservers: &[String]) -> Vec<SocketAddr> {
    nameservers
        .iter()
        .filter_map(|nameserver| nameserver.trim().parse::<IpAddr>().ok())
        .filter(|address| *address != EMBEDDED_DNS_ADDRESS.ip())
        .take(MAX_UPSTREAMS)
        .map(|address| SocketAddr::new(address, DNS_PORT))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_s_nameservers_without_the_embedded_address_three_at_most() {
        let nameservers: Vec<String> = [
            "127.0.0.11",
            "10.0.1.53",
            "fd00::53",
            "dns.example",
            "10.0.1.54",
            "10.0.1.55",
        ]
        .iter()
        .map(|nameserver| (*nameserver).to_owned())
        .collect();
        assert_eq!(
            task_upstreams(&nameservers),
            vec![
                "10.0.1.53:53".parse::<SocketAddr>().expect("address"),
                "[fd00::53]:53".parse().expect("address"),
                "10.0.1.54:53".parse().expect("address"),
            ]
        );
    }

    #[test]
    fn takes_the_first_three_nameservers_without_the_embedded_address() {
        let text = b"# made by hand\nsearch example.com\nnameserver 127.0.0.11\n\
            nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver bogus\n\
            options ndots:2\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().expect("address"),
                "[2001:db8::1]:53".parse().expect("address"),
                "192.0.2.2:53".parse().expect("address"),
            ]
        );
    }

    #[test]
    fn a_file_without_nameservers_gives_none() {
        assert!(upstreams_from_resolv_conf(b"search example.com\n").is_empty());
    }
}
