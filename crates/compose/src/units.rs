//! Published ports in compose's short syntax (`8000-8001:80-81/udp`), parsed and checked.
//! Durations, sizes and the protocol's words are `spec`'s, as for every flag.

use shoal_proto::api::port_config::Protocol;
use spec::enums::TextForm;

/// One published port after expanding ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
    pub host_ip: Option<String>,
}

/// Parses the short port syntax `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
pub fn parse_port_short(text: &str) -> Result<Vec<PortSpec>, String> {
    let hint = "use TARGET, PUBLISHED:TARGET or PUBLISHED:TARGET/udp, e.g. \"8080:80\"";
    let (body, protocol) = match text.rsplit_once('/') {
        Some((body, protocol)) => (
            body,
            Protocol::parse(&protocol.to_ascii_lowercase()).map_err(|error| error.to_string())?,
        ),
        None => (text, Protocol::Tcp),
    };
    let (host_ip, published, target) = match body.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
        [target] => (None, None, *target),
        [target, published] => (None, Some(*published), *target),
        [target, published, ip] => (Some(ip.trim_matches(['[', ']'])), Some(*published), *target),
        _ => return Err(format!("invalid port {text:?}: {hint}")),
    };
    let targets = parse_range(target).map_err(|e| format!("invalid port {text:?}: {e}; {hint}"))?;
    let published = match published {
        None | Some("") => None,
        Some(published) => Some(
            parse_range(published).map_err(|e| format!("invalid port {text:?}: {e}; {hint}"))?,
        ),
    };
    if let Some((start, end)) = published
        && end - start != targets.1 - targets.0
        && start != end
    {
        return Err(format!(
            "invalid port {text:?}: the published and target ranges differ in length"
        ));
    }
    Ok((targets.0..=targets.1)
        .enumerate()
        .map(|(offset, target)| PortSpec {
            target,
            published: published.map(|(start, end)| {
                if start == end {
                    start
                } else {
                    start + offset as u16
                }
            }),
            protocol,
            host_ip: host_ip.filter(|ip| !ip.is_empty()).map(str::to_owned),
        })
        .collect())
}

/// Parses `80` or `8000-8010` into an inclusive range.
pub fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let (start, end) = text.split_once('-').unwrap_or((text, text));
    let start = parse_port_number(start)?;
    let end = parse_port_number(end)?;
    if end < start {
        return Err(format!("range {text:?} ends before it starts"));
    }
    Ok((start, end))
}

pub fn parse_port_number(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(format!("{text:?} is not a port number between 1 and 65535")),
    }
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
        assert!(parse_port_short("http").is_err());
    }
}
