//! Durations in Go syntax (`1m30s`), memory sizes (`512m`) and published ports, parsed and printed.

use std::time::Duration;

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `0`). Negative durations are refused: nothing
/// in a compose file can wait a negative time.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "use a number with a unit such as 500ms, 10s, 1m30s or 2h";
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.starts_with('-') {
        return Err(format!("duration {text:?} is negative: {hint}"));
    }
    let mut rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if rest.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: {hint}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("duration {text:?} is missing a unit: {hint}")),
            unit => {
                return Err(format!(
                    "duration {text:?} has unknown unit {unit:?}: {hint}"
                ));
            }
        };
        rest = &rest[unit_len..];
        total_nanos += value * unit_nanos;
    }
    if total_nanos > u64::MAX as f64 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Prints a duration as Go's `time.Duration.String()` does, which is what `docker stack config`
/// prints: `1m30s`, `10s`, `500ms`, `1h0m0s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let second_nanos = nanos % 60_000_000_000;
    let seconds = format!("{}s", fraction(second_nanos, 1_000_000_000));
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

/// `value / scale` in decimal without trailing zeros.
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let remainder = value % scale;
    if remainder == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let decimals = format!("{remainder:0digits$}");
    format!("{whole}.{}", decimals.trim_end_matches('0'))
}

/// Parses a memory size as docker does: a number with an optional binary unit (b, k, m, g, t, p,
/// with optional `i`/`b` suffixes), e.g. `512m`, `1.5g`, `32M`, `1024`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let hint = "use a number of bytes with an optional unit b, k, m, g or t, such as 512m or 1g";
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_len);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: {hint}"))?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid size {text:?}: unknown unit; {hint}")),
    };
    Ok((value * multiplier) as u64)
}

/// One published port after expanding ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: String,
    pub host_ip: Option<String>,
}

/// Parses the short port syntax `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
pub fn parse_port_short(text: &str) -> Result<Vec<PortSpec>, String> {
    let hint = "use TARGET, PUBLISHED:TARGET or PUBLISHED:TARGET/udp, e.g. \"8080:80\"";
    let (body, protocol) = match text.rsplit_once('/') {
        Some((body, protocol)) => (body, protocol.to_ascii_lowercase()),
        None => (text, "tcp".to_owned()),
    };
    check_protocol(&protocol)?;
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
            protocol: protocol.clone(),
            host_ip: host_ip.filter(|ip| !ip.is_empty()).map(str::to_owned),
        })
        .collect())
}

pub fn check_protocol(protocol: &str) -> Result<(), String> {
    match protocol {
        "tcp" | "udp" | "sctp" => Ok(()),
        other => Err(format!("unknown protocol {other:?}: use tcp, udp or sctp")),
    }
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
    fn durations_round_trip_in_go_syntax() {
        let cases = [
            ("10s", "10s"),
            ("1m30s", "1m30s"),
            ("90s", "1m30s"),
            ("500ms", "500ms"),
            ("1.5s", "1.5s"),
            ("1h", "1h0m0s"),
            ("2h45m", "2h45m0s"),
            ("0", "0s"),
            ("0s", "0s"),
            ("1500us", "1.5ms"),
            ("100ns", "100ns"),
        ];
        for (input, want) in cases {
            let parsed = parse_duration(input).expect(input);
            assert_eq!(format_duration(parsed), want, "{input}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(
            parse_duration("10")
                .expect_err("unit")
                .contains("missing a unit")
        );
        assert!(
            parse_duration("5x")
                .expect_err("unit")
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").expect_err("neg").contains("negative"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("8 MB"), Ok(8 << 20));
        assert!(parse_size("512x").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn short_ports() {
        let one = |p: &str| parse_port_short(p).expect(p);
        assert_eq!(
            one("15000:80"),
            [PortSpec {
                target: 80,
                published: Some(15000),
                protocol: "tcp".into(),
                host_ip: None
            }]
        );
        assert_eq!(one("6379")[0].published, None);
        assert_eq!(one("53:53/udp")[0].protocol, "udp");
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
