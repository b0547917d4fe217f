//! Published ports, written once: Docker's `--publish` value (the long form
//! `published=P,target=T[,protocol=…][,mode=…]` with shoal's `traffic-policy=…`, and the short
//! form `[PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]` that compose's `ports:` shares), what
//! `--publish-rm` names, the range a published number is chosen from when none is given, and
//! the rules of a service's ports (`validate::service_spec` applies them on every write path).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use shoal_proto::api::{
    PortConfig, ServiceSpec, port_config::Protocol, port_config::PublishMode,
    port_config::TrafficPolicy,
};

use crate::SpecError;
use crate::enums::{TextForm, text_of};

/// Where the cluster picks a published number for a port given without one (Swarm's range).
pub const DYNAMIC_PUBLISHED_PORTS: RangeInclusive<u32> = 30000..=32767;
/// The largest port number TCP, UDP and SCTP carry.
pub const MAX_PORT: u32 = 65535;

const LONG_FORM_USAGE: &str = "give published=PORT,target=PORT[,protocol=tcp|udp|sctp][,mode=ingress|host][,traffic-policy=prefer-local|cluster|local], or PUBLISHED:TARGET[/PROTOCOL] such as 8080:80";
const SHORT_FORM_USAGE: &str =
    "give TARGET, PUBLISHED:TARGET or PUBLISHED:TARGET/udp, or ranges such as 8080-8081:80-81";

fn rule(message: String) -> SpecError {
    SpecError::rule(message)
}

/// A port given in the short form, with the host address it names, if any: compose ignores
/// that address with a warning, `--publish` refuses it (swarm publishes on every address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortForm {
    pub host_ip: Option<String>,
    /// One port per published number, in ingress mode; `published_port` 0 where none was given.
    pub ports: Vec<PortConfig>,
}

/// A port number from 1 to 65535, such as a target port; `what` names it in messages.
pub fn port_number(text: &str, what: &str) -> Result<u32, SpecError> {
    match text.trim().parse::<u32>() {
        Ok(port @ 1..=MAX_PORT) => Ok(port),
        _ => Err(rule(format!(
            "invalid {what} {text:?}: give a port number from 1 to {MAX_PORT}"
        ))),
    }
}

/// A published port number: 0 (the cluster chooses one) or 1 to 65535.
pub fn published_number(text: &str) -> Result<u32, SpecError> {
    match text.trim().parse::<u32>() {
        Ok(port @ 0..=MAX_PORT) => Ok(port),
        _ => Err(rule(format!(
            "invalid published port {text:?}: give a port number from 1 to {MAX_PORT}, or leave it out to get one from {}-{}",
            DYNAMIC_PUBLISHED_PORTS.start(),
            DYNAMIC_PUBLISHED_PORTS.end()
        ))),
    }
}

/// `80` or `8000-8010`, an inclusive range of ports; `allow_zero` for published ports, where
/// 0 lets the cluster choose.
pub fn port_range(text: &str, what: &str, allow_zero: bool) -> Result<(u32, u32), SpecError> {
    range_of(text, what, allow_zero).map_err(|problem| {
        let hint = if allow_zero {
            format!(
                "give port numbers up to {MAX_PORT}, or leave the published port out to get one from {}-{}",
                DYNAMIC_PUBLISHED_PORTS.start(),
                DYNAMIC_PUBLISHED_PORTS.end()
            )
        } else {
            format!("give port numbers from 1 to {MAX_PORT}, such as 80 or 8000-8010")
        };
        rule(format!("{problem}: {hint}"))
    })
}

/// The range, or what is wrong with it, as a phrase for a message.
fn range_of(text: &str, what: &str, allow_zero: bool) -> Result<(u32, u32), String> {
    let lowest = if allow_zero { 0 } else { 1 };
    let number = |part: &str| match part.trim().parse::<u32>() {
        Ok(port) if (lowest..=MAX_PORT).contains(&port) => Ok(port),
        _ => Err(format!(
            "{what} {part:?} is not a port number from {lowest} to {MAX_PORT}"
        )),
    };
    let (start, end) = text.split_once('-').unwrap_or((text, text));
    let (start, end) = (number(start)?, number(end)?);
    if end < start {
        return Err(format!("{what} range {text:?} ends before it starts"));
    }
    Ok((start, end))
}

/// A protocol word in any case, as Docker lowercases it.
pub fn protocol(text: &str) -> Result<Protocol, SpecError> {
    Protocol::parse(&text.trim().to_ascii_lowercase())
}

fn ingress_port(protocol: Protocol, target: u32, published: u32) -> PortConfig {
    PortConfig {
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        publish_mode: PublishMode::Ingress as i32,
        ..Default::default()
    }
}

/// The short form as Docker's `nat.ParsePortSpec` reads it:
/// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`. Ranges of the same length pair up
/// (`8080-8081:80-81`), a published range with one target publishes each number to that target
/// (`8080-8081:80`), a target range alone publishes each with a number the cluster chooses.
pub fn short_form(text: &str) -> Result<ShortForm, SpecError> {
    let invalid = |problem: String| rule(format!("invalid port {text:?}: {problem}"));
    let (body, protocol) = match text.rsplit_once('/') {
        Some((body, "")) => (body, Protocol::Tcp),
        Some((body, word)) => (body, protocol(word)?),
        None => (text, Protocol::Tcp),
    };
    let (host_ip, published, target) = match body.rsplitn(3, ':').collect::<Vec<_>>().as_slice() {
        [target] => (None, None, *target),
        [target, published] => (None, Some(*published), *target),
        [target, published, ip] => (Some(ip.trim_matches(['[', ']'])), Some(*published), *target),
        _ => return Err(invalid(SHORT_FORM_USAGE.to_owned())),
    };
    if target.trim().is_empty() {
        return Err(invalid(format!("no target port; {SHORT_FORM_USAGE}")));
    }
    let targets = range_of(target, "target port", false)
        .map_err(|problem| invalid(format!("{problem}; {SHORT_FORM_USAGE}")))?;
    let published = match published.map(str::trim) {
        None | Some("") => None,
        Some(published) => Some(
            range_of(published, "published port", true)
                .map_err(|problem| invalid(format!("{problem}; {SHORT_FORM_USAGE}")))?,
        ),
    };
    let target_count = targets.1 - targets.0;
    let ports = match published {
        None => (targets.0..=targets.1)
            .map(|target| ingress_port(protocol, target, 0))
            .collect(),
        Some((start, end)) if end - start == target_count => (0..=target_count)
            .map(|offset| ingress_port(protocol, targets.0 + offset, start + offset))
            .collect(),
        Some((start, end)) if target_count == 0 => (start..=end)
            .map(|published| ingress_port(protocol, targets.0, published))
            .collect(),
        Some(_) => {
            return Err(invalid(
                "the published and target ranges differ in length: give ranges of the same length, such as 8080-8081:80-81".to_owned(),
            ));
        }
    };
    Ok(ShortForm {
        host_ip: host_ip
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
            .map(str::to_owned),
        ports,
    })
}

/// A `--publish` value: the long form (fields in any case, as Docker's; shoal adds
/// `traffic-policy`, which only ingress ports take) or the short form without a host address,
/// since a swarm publishes on every address of every node.
pub fn publish_flag(text: &str) -> Result<Vec<PortConfig>, SpecError> {
    if text.trim().is_empty() {
        return Err(rule(format!("no port given: {LONG_FORM_USAGE}")));
    }
    if !text.contains('=') {
        let short = short_form(text.trim())?;
        if let Some(ip) = short.host_ip {
            return Err(rule(format!(
                "invalid port {text:?}: a host IP ({ip}) is not supported: a swarm publishes the port on every address of every node, so leave the address out"
            )));
        }
        return Ok(short.ports);
    }
    let mut port = PortConfig::default();
    let mut target_given = false;
    let mut traffic_policy_given = false;
    for field in crate::csv::split_line(text)? {
        let Some((key, value)) = field
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
        else {
            return Err(rule(format!(
                "invalid field {field:?} in port {text:?}: {LONG_FORM_USAGE}"
            )));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        match key.as_str() {
            "published" => port.published_port = published_number(value)?,
            "target" => {
                port.target_port = port_number(value, "target port")?;
                target_given = true;
            }
            "protocol" => port.protocol = protocol(value)? as i32,
            "mode" => port.publish_mode = PublishMode::parse(&value.to_ascii_lowercase())? as i32,
            "traffic-policy" => {
                port.traffic_policy = TrafficPolicy::parse(&value.to_ascii_lowercase())? as i32;
                traffic_policy_given = true;
            }
            unknown => {
                return Err(rule(format!(
                    "unknown field {unknown:?} in port {text:?}: {LONG_FORM_USAGE}"
                )));
            }
        }
    }
    if !target_given {
        return Err(rule(format!(
            "port {text:?} has no target: add target=PORT, the port inside the container"
        )));
    }
    if traffic_policy_given && port.publish_mode() == PublishMode::Host {
        return Err(traffic_policy_needs_ingress(&port));
    }
    Ok(vec![port])
}

fn traffic_policy_needs_ingress(port: &PortConfig) -> SpecError {
    rule(format!(
        "port {}: traffic-policy applies to ports published through the routing mesh (mode=ingress); a mode=host port is served only by the task on its node, so leave traffic-policy out",
        describe(port)
    ))
}

/// A port as messages name it: `8080:80/tcp`, or `80/tcp` when the cluster chooses the number.
pub fn describe(port: &PortConfig) -> String {
    let protocol = text_of::<Protocol>(port.protocol);
    if port.published_port == 0 {
        format!("{}/{protocol}", port.target_port)
    } else {
        format!("{}:{}/{protocol}", port.published_port, port.target_port)
    }
}

/// What a `--publish-rm` value names: a bare `PORT[/PROTOCOL]`, or a whole port as `--publish`
/// gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRemoval {
    /// `8080` or `53/udp`: the port published on that number, or failing that (as Docker reads
    /// the value) the ports with that target.
    Number { port: u32, protocol: Protocol },
    /// A whole port: those with its target, protocol and mode, and its published number when
    /// it gives one.
    Port(PortConfig),
}

/// Parses a `--publish-rm` value.
pub fn publish_removal(text: &str) -> Result<Vec<PortRemoval>, SpecError> {
    let trimmed = text.trim();
    let bare = !trimmed.contains([':', '=', '-']);
    if bare {
        let (number, protocol) = match trimmed.split_once('/') {
            Some((number, word)) => (number, self::protocol(word)?),
            None => (trimmed, Protocol::Tcp),
        };
        return Ok(vec![PortRemoval::Number {
            port: port_number(number, "port").map_err(|error| {
                rule(format!(
                    "{error}; --publish-rm takes PORT[/PROTOCOL], such as 8080 or 53/udp, or a port as --publish takes it"
                ))
            })?,
            protocol,
        }]);
    }
    Ok(publish_flag(trimmed)?
        .into_iter()
        .map(PortRemoval::Port)
        .collect())
}

/// `ports` without those `removals` name. A bare number takes the ports published on it when
/// there are any, the ports with that target otherwise (Docker's reading).
pub fn remove_ports(ports: &mut Vec<PortConfig>, removals: &[PortRemoval]) {
    for removal in removals {
        match removal {
            PortRemoval::Number { port, protocol } => {
                let same_protocol = |candidate: &PortConfig| candidate.protocol == *protocol as i32;
                let published_here = ports
                    .iter()
                    .any(|candidate| same_protocol(candidate) && candidate.published_port == *port);
                ports.retain(|candidate| {
                    let named = if published_here {
                        candidate.published_port == *port
                    } else {
                        candidate.target_port == *port
                    };
                    !(same_protocol(candidate) && named)
                });
            }
            PortRemoval::Port(removed) => ports.retain(|candidate| {
                let named = candidate.protocol == removed.protocol
                    && candidate.target_port == removed.target_port
                    && candidate.publish_mode == removed.publish_mode
                    && (removed.published_port == 0
                        || candidate.published_port == removed.published_port);
                !named
            }),
        }
    }
}

/// The rules of a service's ports: a target from 1 to 65535, a published number of 0 (the
/// cluster chooses) or 1 to 65535, a known protocol, mode and traffic policy (a traffic policy
/// only on ingress ports), no published number twice for one protocol, and no fixed host-mode
/// port on a service that may put two tasks on one node (they could not both bind it).
pub fn check_ports(spec: &ServiceSpec) -> Result<(), SpecError> {
    let Some(endpoint) = spec.endpoint.as_ref() else {
        return Ok(());
    };
    let mut published: BTreeSet<(i32, u32)> = BTreeSet::new();
    for port in &endpoint.ports {
        if !(1..=MAX_PORT).contains(&port.target_port) {
            return Err(rule(format!(
                "port {}: target port {} is out of range: give a port number from 1 to {MAX_PORT}",
                describe(port),
                port.target_port
            )));
        }
        if port.published_port > MAX_PORT {
            return Err(rule(format!(
                "port {}: published port {} is out of range: give a port number from 1 to {MAX_PORT}, or leave it out to get one from {}-{}",
                describe(port),
                port.published_port,
                DYNAMIC_PUBLISHED_PORTS.start(),
                DYNAMIC_PUBLISHED_PORTS.end()
            )));
        }
        if Protocol::try_from(port.protocol).is_err() {
            return Err(rule(format!(
                "port {}: unknown protocol number {}: use tcp, udp or sctp",
                describe(port),
                port.protocol
            )));
        }
        let Ok(mode) = PublishMode::try_from(port.publish_mode) else {
            return Err(rule(format!(
                "port {}: unknown publish mode number {}: use ingress or host",
                describe(port),
                port.publish_mode
            )));
        };
        let Ok(traffic_policy) = TrafficPolicy::try_from(port.traffic_policy) else {
            return Err(rule(format!(
                "port {}: unknown traffic policy number {}: use prefer-local, cluster or local",
                describe(port),
                port.traffic_policy
            )));
        };
        if mode == PublishMode::Host && traffic_policy != TrafficPolicy::PreferLocal {
            return Err(traffic_policy_needs_ingress(port));
        }
        if port.published_port != 0 && !published.insert((port.protocol, port.published_port)) {
            return Err(rule(format!(
                "published port {}/{} is given twice: publish each port once (to change where it goes, remove it and add it again)",
                port.published_port,
                text_of::<Protocol>(port.protocol)
            )));
        }
    }
    host_ports_rule(spec)
}

/// Two tasks on one node can't both bind a fixed host port, so a service publishing one may
/// not ask for more than one task per node.
fn host_ports_rule(spec: &ServiceSpec) -> Result<(), SpecError> {
    let max_per_node = spec
        .task
        .as_ref()
        .and_then(|task| task.placement.as_ref())
        .map_or(0, |placement| placement.max_replicas);
    if max_per_node <= 1 {
        return Ok(());
    }
    let Some(port) = spec.endpoint.as_ref().and_then(|endpoint| {
        endpoint
            .ports
            .iter()
            .find(|port| port.publish_mode() == PublishMode::Host && port.published_port != 0)
    }) else {
        return Ok(());
    };
    Err(rule(format!(
        "port {} is published in host mode, so each node can run only one of the service's tasks, but --replicas-max-per-node is {max_per_node}: set it to 1, publish the port with mode=ingress, or leave the published port out",
        describe(port)
    )))
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{EndpointSpec, Placement, TaskSpec};

    use super::*;

    fn port(published: u32, target: u32, protocol: Protocol, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: protocol as i32,
            target_port: target,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        }
    }

    fn tcp(published: u32, target: u32) -> PortConfig {
        port(published, target, Protocol::Tcp, PublishMode::Ingress)
    }

    fn error_of<T: std::fmt::Debug>(result: Result<T, SpecError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn short_forms_as_docker_reads_them() {
        let ports = |text: &str| publish_flag(text).unwrap();
        assert_eq!(ports("8080:80"), [tcp(8080, 80)]);
        assert_eq!(ports("80"), [tcp(0, 80)]);
        assert_eq!(
            ports("53:53/UDP"),
            [port(53, 53, Protocol::Udp, PublishMode::Ingress)]
        );
        assert_eq!(
            ports("9000/sctp"),
            [port(0, 9000, Protocol::Sctp, PublishMode::Ingress)]
        );
        assert_eq!(ports("8080-8081:80-81"), [tcp(8080, 80), tcp(8081, 81)]);
        assert_eq!(ports("8080-8081:80"), [tcp(8080, 80), tcp(8081, 80)]);
        assert_eq!(ports("80-81"), [tcp(0, 80), tcp(0, 81)]);
        assert_eq!(ports(":80"), [tcp(0, 80)]);
        assert_eq!(ports("0:80"), [tcp(0, 80)]);
    }

    #[test]
    fn short_forms_refused_say_why() {
        for (text, expected) in [
            (
                "70000",
                "invalid port \"70000\": target port \"70000\" is not a port number from 1 to 65535; give TARGET",
            ),
            (
                "80:0",
                "target port \"0\" is not a port number from 1 to 65535",
            ),
            ("8080:", "no target port"),
            (
                "70000:80",
                "published port \"70000\" is not a port number from 0 to 65535",
            ),
            ("80/icmp", "invalid protocol \"icmp\": use tcp, udp or sctp"),
            (
                "8080:80-81",
                "the published and target ranges differ in length",
            ),
            (
                "8000-8002:80-81",
                "the published and target ranges differ in length",
            ),
            ("81-80", "ends before it starts"),
            ("http", "target port \"http\" is not a port number"),
            (
                "127.0.0.1:8080:80",
                "a host IP (127.0.0.1) is not supported",
            ),
            ("", "no port given"),
        ] {
            let error = error_of(publish_flag(text));
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert_eq!(
            short_form("[::1]:8080:80").unwrap().host_ip.as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn long_forms_take_docker_fields_and_the_traffic_policy() {
        let ports = |text: &str| publish_flag(text).unwrap();
        assert_eq!(ports("published=8080,target=80"), [tcp(8080, 80)]);
        assert_eq!(ports("target=80"), [tcp(0, 80)]);
        assert_eq!(
            ports("Published=53,Target=53,Protocol=UDP,Mode=host"),
            [port(53, 53, Protocol::Udp, PublishMode::Host)]
        );
        let mut local = tcp(8080, 80);
        local.traffic_policy = TrafficPolicy::Local as i32;
        assert_eq!(
            ports("published=8080,target=80,traffic-policy=local"),
            [local]
        );
        for (text, expected) in [
            ("published=8080", "has no target: add target=PORT"),
            ("published=8080,target=0", "invalid target port \"0\""),
            (
                "published=65536,target=80",
                "invalid published port \"65536\"",
            ),
            ("target=80,protocol=icmp", "invalid protocol \"icmp\""),
            (
                "target=80,mode=bridge",
                "invalid publish mode \"bridge\": use ingress or host",
            ),
            (
                "target=80,traffic-policy=nearest",
                "invalid traffic policy \"nearest\": use prefer-local, cluster or local",
            ),
            (
                "published=8080,target=80,mode=host,traffic-policy=local",
                "traffic-policy applies to ports published through the routing mesh",
            ),
            ("target=80,ip=1.2.3.4", "unknown field \"ip\""),
            ("target=80,x", "invalid field \"x\""),
        ] {
            let error = error_of(publish_flag(text));
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn publish_rm_takes_a_published_number_or_else_a_target_or_a_whole_port() {
        let removed = |ports: &[PortConfig], text: &str| {
            let mut ports = ports.to_vec();
            remove_ports(&mut ports, &publish_removal(text).unwrap());
            ports
        };
        let udp = port(53, 53, Protocol::Udp, PublishMode::Ingress);
        let ports = [tcp(8080, 80), tcp(80, 8000), udp.clone()];
        assert_eq!(removed(&ports, "8080"), [tcp(80, 8000), udp.clone()]);
        // 80 is published (by the second port), so that one goes, not the target 80.
        assert_eq!(removed(&ports, "80"), [tcp(8080, 80), udp.clone()]);
        // No port is published on 8000: it names the target, as Docker reads it.
        assert_eq!(removed(&ports, "8000"), [tcp(8080, 80), udp.clone()]);
        assert_eq!(removed(&ports, "53"), ports);
        assert_eq!(removed(&ports, "53/udp"), [tcp(8080, 80), tcp(80, 8000)]);
        assert_eq!(removed(&ports, "8080:80"), [tcp(80, 8000), udp.clone()]);
        assert_eq!(removed(&ports, "9999:80"), ports);
        assert_eq!(removed(&ports, "target=80"), [tcp(80, 8000), udp]);
        assert!(error_of(publish_removal("x")).contains("--publish-rm takes PORT[/PROTOCOL]"));
    }

    fn service(ports: Vec<PortConfig>, max_per_node: u64) -> ServiceSpec {
        ServiceSpec {
            task: Some(TaskSpec {
                placement: Some(Box::new(Placement {
                    max_replicas: max_per_node,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            endpoint: Some(EndpointSpec {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_publishes_each_number_once_per_protocol() {
        assert!(
            check_ports(&service(
                vec![tcp(8080, 80), tcp(8081, 80), tcp(0, 80), tcp(0, 80)],
                0
            ))
            .is_ok()
        );
        let udp = port(8080, 80, Protocol::Udp, PublishMode::Ingress);
        assert!(check_ports(&service(vec![tcp(8080, 80), udp], 0)).is_ok());
        let host = port(8080, 81, Protocol::Tcp, PublishMode::Host);
        assert_eq!(
            error_of(check_ports(&service(vec![tcp(8080, 80), host], 0))),
            "published port 8080/tcp is given twice: publish each port once (to change where it goes, remove it and add it again)"
        );
    }

    #[test]
    fn stored_ports_are_in_range_with_known_words() {
        let error = |port: PortConfig| error_of(check_ports(&service(vec![port], 0)));
        assert!(error(tcp(8080, 0)).contains("target port 0 is out of range"));
        assert!(error(tcp(8080, 70000)).contains("target port 70000 is out of range"));
        assert!(error(tcp(70000, 80)).contains("published port 70000 is out of range"));
        let mut unknown = tcp(8080, 80);
        unknown.protocol = 7;
        assert!(error(unknown).contains("unknown protocol number 7"));
        let mut unknown = tcp(8080, 80);
        unknown.publish_mode = 7;
        assert!(error(unknown).contains("unknown publish mode number 7"));
        let mut unknown = tcp(8080, 80);
        unknown.traffic_policy = 7;
        assert!(error(unknown).contains("unknown traffic policy number 7"));
        let mut host_cluster = port(8080, 80, Protocol::Tcp, PublishMode::Host);
        host_cluster.traffic_policy = TrafficPolicy::Cluster as i32;
        assert!(error(host_cluster).contains("traffic-policy applies to ports published"));
    }

    #[test]
    fn a_fixed_host_port_allows_one_task_per_node() {
        let host = port(8080, 80, Protocol::Tcp, PublishMode::Host);
        assert!(check_ports(&service(vec![host.clone()], 0)).is_ok());
        assert!(check_ports(&service(vec![host.clone()], 1)).is_ok());
        assert!(check_ports(&service(vec![tcp(8080, 80)], 2)).is_ok());
        let any_number = port(0, 80, Protocol::Tcp, PublishMode::Host);
        assert!(check_ports(&service(vec![any_number], 2)).is_ok());
        assert_eq!(
            error_of(check_ports(&service(vec![host], 2))),
            "port 8080:80/tcp is published in host mode, so each node can run only one of the service's tasks, but --replicas-max-per-node is 2: set it to 1, publish the port with mode=ingress, or leave the published port out"
        );
    }
}
