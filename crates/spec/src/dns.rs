//! How a service's containers resolve names, as Docker's CLI and compose spell it: nameservers
//! (`--dns`, compose `dns`), search domains (`--dns-search`, `dns_search`), resolver options
//! (`--dns-option`, `dns_opt`) and extra hosts file entries (`--host HOST:IP`, `extra_hosts`),
//! which Swarm stores as `IP HOST` ([`host_entry`]). The flags and compose call the parsers; `check_dns_config`
//! and `check_host_entry` hold a stored spec to the same rules.

use std::net::IpAddr;

use shoal_proto::api::container_spec::DnsConfig;

use crate::SpecError;

/// The longest search domain Docker accepts.
const MAX_DOMAIN_LENGTH: usize = 254;

/// A nameserver: an IP address (Docker's `ValidateIPAddress`), returned as Go prints it.
pub fn nameserver(text: &str) -> Result<String, SpecError> {
    text.trim()
        .parse::<IpAddr>()
        .map(|address| address.to_string())
        .map_err(|_| {
            SpecError::rule(format!(
                "invalid DNS server {text:?}: give an IP address, such as 10.0.0.2 or 2001:db8::53"
            ))
        })
}

/// A search domain as Docker's `ValidateDNSSearch` takes it: `.` (no search domain), or labels
/// of letters, digits and inner '-' joined by dots, with at least one letter; a trailing dot is
/// dropped.
pub fn search_domain(text: &str) -> Result<String, SpecError> {
    let trimmed = text.trim_matches(' ');
    if trimmed == "." {
        return Ok(trimmed.to_owned());
    }
    let domain = trimmed.trim_end();
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
    };
    let valid = domain.bytes().any(|b| b.is_ascii_alphabetic())
        && domain.len() <= MAX_DOMAIN_LENGTH
        && domain.split('.').all(label_ok);
    if !valid {
        return Err(SpecError::rule(format!(
            "invalid DNS search domain {text:?}: give a domain name such as example.com (letters, digits and '-', labels joined by dots)"
        )));
    }
    Ok(domain.to_owned())
}

/// A resolver option as resolv.conf's `options` line takes it (`ndots:2`, `timeout:3`,
/// `rotate`). Docker passes anything on; a blank or a space would break the line, so those are
/// refused.
pub fn resolver_option(text: &str) -> Result<String, SpecError> {
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(SpecError::rule(format!(
            "invalid DNS option {text:?}: give one resolv.conf option without spaces, such as ndots:2 or timeout:3"
        )));
    }
    Ok(text.to_owned())
}

/// Docker's name for the host's gateway address in `--add-host`, which shoal does not resolve.
const HOST_GATEWAY: &str = "host-gateway";

/// `HOST:IP` or `HOST=IP` (Docker's `ValidateExtraHost`: split at the first '=', else at the
/// first ':', so an IPv6 address needs no brackets) as the host and its address, checked by
/// [`host_mapping`].
pub fn extra_host(text: &str) -> Result<(String, String), SpecError> {
    let (host, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| {
            SpecError::rule(format!(
                "invalid host mapping {text:?}: give HOST:IP, such as db.local:10.0.0.5"
            ))
        })?;
    host_mapping(host, ip)
}

/// A host name and its address: a name without ':' or spaces, and an IP address (brackets
/// around it are dropped; otherwise it stays as given, as Docker keeps it).
pub fn host_mapping(host: &str, ip: &str) -> Result<(String, String), SpecError> {
    if host.is_empty() || host.contains(':') || host.chars().any(char::is_whitespace) {
        return Err(SpecError::rule(format!(
            "invalid host name {host:?} in a host mapping: give a name without ':' or spaces, as in db.local:10.0.0.5"
        )));
    }
    if ip == HOST_GATEWAY {
        return Err(SpecError::rule(format!(
            "{HOST_GATEWAY} is not supported in host mappings: give the host's IP address instead"
        )));
    }
    let ip = ip
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(ip);
    if ip.parse::<IpAddr>().is_err() {
        return Err(SpecError::rule(format!(
            "invalid IP address {ip:?} in the mapping of host {host}: give an address such as 10.0.0.5 or 2001:db8::5"
        )));
    }
    Ok((host.to_owned(), ip.to_owned()))
}

/// The hosts entry Swarm stores for `host` at `ip`: `IP HOST`.
pub fn host_entry(host: &str, ip: &str) -> String {
    format!("{ip} {host}")
}

/// The host names and address of a stored entry (`IP HOST [HOST...]`), or `None` when it is
/// not one.
pub fn split_host_entry(entry: &str) -> Option<(&str, Vec<&str>)> {
    let mut words = entry.split_whitespace();
    let ip = words.next()?;
    let hosts: Vec<&str> = words.collect();
    (!hosts.is_empty()).then_some((ip, hosts))
}

/// A stored hosts entry: `IP HOST [HOST...]` with an IP address.
pub fn check_host_entry(entry: &str) -> Result<(), SpecError> {
    let valid = split_host_entry(entry).is_some_and(|(ip, hosts)| {
        ip.parse::<IpAddr>().is_ok() && hosts.iter().all(|h| !h.contains(':'))
    });
    if !valid {
        return Err(SpecError::rule(format!(
            "invalid hosts entry {entry:?}: give \"IP HOST\", such as \"10.0.0.5 db.local\""
        )));
    }
    Ok(())
}

/// A stored DNS config: every nameserver an IP address, every search domain and option as the
/// flags take them.
pub fn check_dns_config(config: &DnsConfig) -> Result<(), SpecError> {
    for server in &config.nameservers {
        nameserver(server)?;
    }
    for domain in &config.search {
        search_domain(domain)?;
    }
    for option in &config.options {
        resolver_option(option)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_ip_addresses() {
        assert_eq!(nameserver("8.8.8.8").unwrap(), "8.8.8.8");
        assert_eq!(nameserver(" 2001:db8:0:0::53 ").unwrap(), "2001:db8::53");
        for text in ["", "dns.example.com", "8.8.8", "8.8.8.8:53"] {
            assert!(
                nameserver(text)
                    .unwrap_err()
                    .to_string()
                    .contains("invalid DNS server"),
                "{text}"
            );
        }
    }

    #[test]
    fn search_domains_follow_docker() {
        assert_eq!(search_domain("example.com").unwrap(), "example.com");
        assert_eq!(search_domain("example.com.").unwrap(), "example.com");
        assert_eq!(search_domain(" svc.a-1.local ").unwrap(), "svc.a-1.local");
        assert_eq!(search_domain(".").unwrap(), ".");
        assert_eq!(search_domain("a").unwrap(), "a");
        for text in [
            "", "123", "-a.com", "a-.com", "a..com", "a b.com", "a_b.com",
        ] {
            assert!(search_domain(text).is_err(), "{text}");
        }
        assert!(search_domain(&format!("{}.com", "a".repeat(260))).is_err());
    }

    #[test]
    fn resolver_options_are_single_words() {
        assert_eq!(resolver_option("ndots:2").unwrap(), "ndots:2");
        assert!(resolver_option("").is_err());
        assert!(resolver_option("ndots: 2").is_err());
    }

    #[test]
    fn extra_hosts_become_swarm_entries() {
        let entry = |text| {
            let (host, ip) = extra_host(text).unwrap();
            host_entry(&host, &ip)
        };
        assert_eq!(entry("db:10.0.0.5"), "10.0.0.5 db");
        assert_eq!(entry("db=10.0.0.5"), "10.0.0.5 db");
        assert_eq!(entry("v6:2001:db8::5"), "2001:db8::5 v6");
        assert_eq!(entry("v6=[2001:db8::5]"), "2001:db8::5 v6");
        assert!(
            extra_host("db")
                .unwrap_err()
                .to_string()
                .contains("HOST:IP")
        );
        assert!(
            extra_host(":10.0.0.5")
                .unwrap_err()
                .to_string()
                .contains("invalid host name")
        );
        assert!(
            extra_host("db:nope")
                .unwrap_err()
                .to_string()
                .contains("invalid IP address")
        );
        assert!(
            extra_host("db:host-gateway")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn stored_entries_and_configs_are_checked() {
        assert!(check_host_entry("10.0.0.5 db db.local").is_ok());
        assert!(check_host_entry("db 10.0.0.5").is_err());
        assert!(check_host_entry("10.0.0.5").is_err());
        let config = |servers: &[&str], search: &[&str], options: &[&str]| DnsConfig {
            nameservers: servers.iter().map(|s| (*s).to_owned()).collect(),
            search: search.iter().map(|s| (*s).to_owned()).collect(),
            options: options.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(check_dns_config(&config(&["1.1.1.1"], &["example.com"], &["ndots:1"])).is_ok());
        assert!(check_dns_config(&config(&["one"], &[], &[])).is_err());
        assert!(check_dns_config(&config(&[], &["-x"], &[])).is_err());
        assert!(check_dns_config(&config(&[], &[], &["a b"])).is_err());
    }
}
