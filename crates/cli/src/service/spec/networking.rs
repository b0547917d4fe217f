//! The networking flags: `--network` attachments, `--endpoint-mode`, published ports
//! (`--publish`, `--publish-add`, `--publish-rm`), DNS settings and host mappings, as `create`
//! sets them and `update` changes them (docker's add and remove rules).
//! Values are parsed by `spec`'s rules; network references stay as typed on create (the manager
//! binds them to ids) and are matched by id on update, through ids the caller looked up.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use shoal_proto::api;
use spec::enums::TextForm as _;

use super::*;

/// What each network reference given to `update` names: reference → network id.
pub(crate) type NetworkIds = HashMap<String, String>;

/// `--network` values as attachments, sorted by target as docker's CLI sends them.
pub(super) fn parse_networks(
    flag: &str,
    values: &[String],
) -> anyhow::Result<Vec<api::NetworkAttachmentConfig>> {
    let mut attachments = values
        .iter()
        .map(|text| {
            spec::network::attachment_flag(text)
                .map_err(|e| anyhow!(e.in_field(format!("--{flag}"))))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    attachments.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(attachments)
}

/// `--endpoint-mode`: vip or dnsrr, in any case, as docker lowercases it.
pub(super) fn parse_endpoint_mode(text: &str) -> anyhow::Result<i32> {
    Ok(
        api::endpoint_spec::ResolutionMode::parse(&text.to_ascii_lowercase())
            .map_err(|error| error.in_field("--endpoint-mode"))? as i32,
    )
}

/// Each value checked and normalised by one of `spec::dns`'s rules, named after its flag.
fn checked(
    flag: &str,
    values: &[String],
    check: fn(&str) -> Result<String, spec::SpecError>,
) -> anyhow::Result<Vec<String>> {
    values
        .iter()
        .map(|value| check(value).map_err(|error| anyhow!(error.in_field(format!("--{flag}")))))
        .collect()
}

/// `--host HOST:IP` values as the entries Swarm stores, `IP HOST`.
fn parse_hosts(flag: &str, values: &[String]) -> anyhow::Result<Vec<String>> {
    values
        .iter()
        .map(|value| {
            let (host, ip) = spec::dns::extra_host(value)
                .map_err(|error| anyhow!(error.in_field(format!("--{flag}"))))?;
            Ok(spec::dns::host_entry(&host, &ip))
        })
        .collect()
}

/// The DNS config `create` sends: always one, empty when no flag sets it, as docker's CLI does.
pub(super) fn create_dns_config(
    args: &CreateArgs,
) -> anyhow::Result<api::container_spec::DnsConfig> {
    Ok(api::container_spec::DnsConfig {
        nameservers: checked("dns", &args.dns, spec::dns::nameserver)?,
        search: checked("dns-search", &args.dns_search, spec::dns::search_domain)?,
        options: checked("dns-option", &args.dns_options, spec::dns::resolver_option)?,
    })
}

/// The hosts entries `create` sends.
pub(super) fn create_hosts(args: &CreateArgs) -> anyhow::Result<Vec<String>> {
    parse_hosts("host", &args.hosts)
}

/// The network references `update` needs ids for, to match attachments: those of
/// `--network-rm`, and the targets of `--network-add`.
pub(crate) fn network_references(args: &UpdateArgs) -> anyhow::Result<Vec<String>> {
    let mut references = args.network_rm.clone();
    references.extend(
        parse_networks("network-add", &args.network_add)?
            .into_iter()
            .map(|attachment| attachment.target),
    );
    references.sort();
    references.dedup();
    Ok(references)
}

/// `--network-add` and `--network-rm`, as docker's `updateNetworks`: the deprecated top-level
/// list moves into the task's, removed networks go (by id), added ones are bound to their ids
/// and refused when already attached, and the list is sorted by id.
pub(super) fn update_networks(
    spec: &mut api::ServiceSpec,
    args: &UpdateArgs,
    network_ids: &NetworkIds,
) -> anyhow::Result<()> {
    if args.network_add.is_empty() && args.network_rm.is_empty() {
        return Ok(());
    }
    let id_of = |reference: &str| -> anyhow::Result<String> {
        network_ids.get(reference).cloned().ok_or_else(|| {
            anyhow!("network {reference} not found: list them with 'shoal network ls'")
        })
    };
    let removed = args
        .network_rm
        .iter()
        .map(|reference| id_of(reference))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let task = spec.task.get_or_insert_default();
    let mut networks = std::mem::take(&mut task.networks);
    if networks.is_empty() {
        networks = std::mem::take(&mut spec.networks);
    }
    spec.networks.clear();
    networks.retain(|attachment| !removed.contains(&attachment.target));
    for mut added in parse_networks("network-add", &args.network_add)? {
        let id = id_of(&added.target)?;
        if networks.iter().any(|attachment| attachment.target == id) {
            bail!(
                "--network-add: the service is already attached to network {}: to change its aliases, give --network-rm {} too",
                added.target,
                added.target
            );
        }
        added.target = id;
        networks.push(added);
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    task.networks = networks;
    Ok(())
}

/// `--publish` values as ports, in the order given.
pub(super) fn parse_publish(flag: &str, values: &[String]) -> anyhow::Result<Vec<api::PortConfig>> {
    let mut ports = Vec::new();
    for text in values {
        ports.extend(
            spec::ports::publish_flag(text)
                .map_err(|e| anyhow!(e.in_field(format!("--{flag}"))))?,
        );
    }
    Ok(ports)
}

/// `--publish-rm` then `--publish-add`, as docker's `updatePorts`: the removed ports go, the
/// added ones join (one the service already has, exactly, is not added twice), so removing
/// and adding in one update moves a port.
pub(super) fn update_ports(spec: &mut api::ServiceSpec, args: &UpdateArgs) -> anyhow::Result<()> {
    if args.publish_add.is_empty() && args.publish_rm.is_empty() {
        return Ok(());
    }
    let mut removals = Vec::new();
    for text in &args.publish_rm {
        removals.extend(
            spec::ports::publish_removal(text).map_err(|e| anyhow!(e.in_field("--publish-rm")))?,
        );
    }
    let added = parse_publish("publish-add", &args.publish_add)?;
    let endpoint = spec.endpoint.get_or_insert_default();
    spec::ports::remove_ports(&mut endpoint.ports, &removals);
    for port in added {
        if !endpoint.ports.contains(&port) {
            endpoint.ports.push(port);
        }
    }
    Ok(())
}

/// The service's ports checked as a whole with `spec`'s rules (the manager checks them again),
/// so a port given twice, or a fixed host port with several tasks a node, fails here first.
pub(super) fn check_ports(spec: &api::ServiceSpec) -> anyhow::Result<()> {
    spec::validate::service_endpoint(spec).map_err(|error| anyhow!(error))
}

/// `--endpoint-mode` on update.
pub(super) fn update_endpoint_mode(
    spec: &mut api::ServiceSpec,
    args: &UpdateArgs,
) -> anyhow::Result<()> {
    if let Some(mode) = &args.endpoint_mode {
        spec.endpoint.get_or_insert_default().mode = parse_endpoint_mode(mode)?;
    }
    Ok(())
}

/// One list of the DNS config, as docker's `updateDNSConfig` changes it: the added values
/// appended, repeats dropped, removed values taken out, and the rest sorted.
fn update_list(current: &mut Vec<String>, added: Vec<String>, removed: &[String]) {
    let mut values = std::mem::take(current);
    values.extend(added);
    let mut seen = std::collections::HashSet::new();
    values.retain(|value| seen.insert(value.clone()) && !removed.contains(value));
    values.sort();
    *current = values;
}

/// `--dns-add/-rm`, `--dns-search-add/-rm` and `--dns-option-add/-rm`.
pub(super) fn update_dns(
    container: &mut api::ContainerSpec,
    args: &UpdateArgs,
) -> anyhow::Result<()> {
    let any = [
        &args.dns_add,
        &args.dns_rm,
        &args.dns_search_add,
        &args.dns_search_rm,
        &args.dns_option_add,
        &args.dns_option_rm,
    ]
    .iter()
    .any(|values| !values.is_empty());
    if !any {
        return Ok(());
    }
    let config = container.dns_config.get_or_insert_default();
    update_list(
        &mut config.nameservers,
        checked("dns-add", &args.dns_add, spec::dns::nameserver)?,
        &args.dns_rm,
    );
    update_list(
        &mut config.search,
        checked(
            "dns-search-add",
            &args.dns_search_add,
            spec::dns::search_domain,
        )?,
        &args.dns_search_rm,
    );
    update_list(
        &mut config.options,
        checked(
            "dns-option-add",
            &args.dns_option_add,
            spec::dns::resolver_option,
        )?,
        &args.dns_option_rm,
    );
    Ok(())
}

/// `--host-add` and `--host-rm`, as docker's `updateHosts`: `--host-rm HOST` takes the name out
/// of every entry and `HOST:IP` out of the entries of that address, an entry left with no name
/// goes, added mappings are appended, and repeats dropped.
pub(super) fn update_hosts(
    container: &mut api::ContainerSpec,
    args: &UpdateArgs,
) -> anyhow::Result<()> {
    if args.host_add.is_empty() && args.host_rm.is_empty() {
        return Ok(());
    }
    let removed: Vec<(&str, &str)> = args
        .host_rm
        .iter()
        .map(|entry| {
            entry
                .split_once('=')
                .or_else(|| entry.split_once(':'))
                .unwrap_or((entry.as_str(), ""))
        })
        .collect();
    let added = parse_hosts("host-add", &args.host_add)?;
    let mut hosts = Vec::new();
    for entry in std::mem::take(&mut container.hosts) {
        let Some((ip, names)) = spec::dns::split_host_entry(&entry) else {
            hosts.push(entry);
            continue;
        };
        let kept: Vec<&str> = names
            .into_iter()
            .filter(|name| {
                !removed
                    .iter()
                    .any(|(host, address)| host == name && (address.is_empty() || *address == ip))
            })
            .collect();
        if !kept.is_empty() {
            hosts.push(format!("{ip} {}", kept.join(" ")));
        }
    }
    hosts.extend(added);
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|entry| seen.insert(entry.clone()));
    container.hosts = hosts;
    Ok(())
}
