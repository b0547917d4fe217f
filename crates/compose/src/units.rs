//! Published ports in compose's short syntax (`8000-8001:80-81/udp`), read with `spec`'s one
//! parser of the short form, as `--publish` reads it, into the model's ports. Durations, sizes
//! and the protocol's words are `spec`'s too, as for every flag.

use shoal_proto::api::port_config::{Protocol, TrafficPolicy};

use crate::model::{Port, PublishMode};

/// One published port after expanding ranges, with the host address compose's short syntax
/// may name (swarm ignores it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub host_ip: Option<String>,
}

impl PortSpec {
    /// The port as the model holds it, published through the routing mesh.
    pub fn to_port(&self) -> Port {
        Port {
            mode: PublishMode::Ingress,
            target: self.target,
            published: self.published,
            protocol: self.protocol,
            traffic_policy: TrafficPolicy::PreferLocal,
        }
    }
}

/// A port number `spec` checked (1 to 65535, or 0 for "none"), as the model's `u16`.
pub(crate) fn narrow(port: u32) -> u16 {
    u16::try_from(port).unwrap_or(u16::MAX)
}

/// Parses the short port syntax `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
pub fn parse_port_short(text: &str) -> Result<Vec<PortSpec>, String> {
    let short = spec::ports::short_form(text).map_err(|error| error.to_string())?;
    Ok(short
        .ports
        .iter()
        .map(|port| PortSpec {
            target: narrow(port.target_port),
            published: (port.published_port != 0).then(|| narrow(port.published_port)),
            protocol: port.protocol(),
            host_ip: short.host_ip.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ports() {
        let one = |p: &str| parse_port_short(p).expect(p);
        assert_eq!(
            one("15000:80"),
            [PortSpec {
                target: 80,
                published: Some(15000),
                protocol: Protocol::Tcp,
                host_ip: None
            }]
        );
        assert_eq!(one("6379")[0].published, None);
        assert_eq!(one("53:53/udp")[0].protocol, Protocol::Udp);
        assert_eq!(
            one("127.0.0.1:8080:80")[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        let range = one("8000-8001:80-81");
        assert_eq!(range.len(), 2);
        assert_eq!((range[1].published, range[1].target), (Some(8001), 81));
        assert!(parse_port_short("70000").is_err());
        assert!(parse_port_short("80:0").is_err());
        assert!(parse_port_short("80/icmp").is_err());
        assert!(parse_port_short("8000-8002:80-81").is_err());
        assert!(parse_port_short("8000:80-81").is_err());
        assert!(parse_port_short("http").is_err());
    }
}
