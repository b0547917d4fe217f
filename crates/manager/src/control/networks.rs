//! Networks as the control API sees them: the checks of a create against the networks that
//! exist (a subnet another network asked for or was given is refused, naming it, and so is a
//! second ingress network), a service's
//! attachments bound to network ids, which services and tasks use a network (so a removal can be
//! refused, naming them; the ingress network's users are the services publishing through the
//! routing mesh), docker's `network ls` filters, and which networks a prune removes.
//! Pure: the caller reads, decides, writes.

use std::collections::BTreeMap;

use shoal_proto::api::{Network, NetworkSpec, Service, ServiceSpec, Task, TaskState};
use spec::network::Subnet;

use super::resolve;
use crate::error::ManagerError;
use crate::objects::ClusterObject;

/// The scope every network the control API serves has, as docker's `network ls` shows it.
pub(crate) const SWARM_SCOPE: &str = "swarm";

fn invalid(message: String) -> ManagerError {
    ManagerError::InvalidArgument(message)
}

/// The subnets a network asked for (its spec) and was given (its allocation), as stored; those
/// that don't parse (none should) are skipped, since they can't be compared.
fn subnets_of(network: &Network) -> Vec<Subnet> {
    let requested = network
        .spec
        .as_ref()
        .and_then(|spec| spec.ipam.as_ref())
        .map(|ipam| ipam.configs.as_slice())
        .unwrap_or_default();
    let allocated = network
        .ipam
        .as_ref()
        .map(|ipam| ipam.configs.as_slice())
        .unwrap_or_default();
    requested
        .iter()
        .chain(allocated)
        .filter_map(|config| Subnet::parse(&config.subnet, "subnet").ok())
        .collect()
}

/// Checks a new network's spec: spec's rules, then a name no network has, and subnets that
/// overlap no subnet another network asked for or was given.
pub(crate) fn check_create(spec: &NetworkSpec, existing: &[Network]) -> Result<(), ManagerError> {
    spec::validate::network_spec(spec)?;
    let name = spec
        .annotations
        .as_ref()
        .map_or("", |annotations| annotations.name.as_str());
    if let Some(taken) = existing
        .iter()
        .find(|network| network.unique_name() == name)
    {
        if taken.pending_delete {
            return Err(ManagerError::FailedPrecondition(format!(
                "network {name} (ID {}) is being removed and goes once the tasks of its removed services stop: try again in a few seconds, or choose another name",
                taken.id
            )));
        }
        return Err(ManagerError::FailedPrecondition(format!(
            "network {name} already exists (ID {}): choose another name, or remove it first with 'shoal network rm {name}'",
            taken.id
        )));
    }
    if spec.ingress
        && let Some(ingress) = crate::allocator::ingress_network(existing)
    {
        return Err(ManagerError::FailedPrecondition(format!(
            "ingress network already exists ({}, ID {}): a swarm has one; remove it first with 'shoal network rm {}' (once no service publishes a port through the routing mesh), then create the new one",
            ingress.unique_name(),
            ingress.id,
            ingress.unique_name()
        )));
    }
    let requested = spec
        .ipam
        .as_ref()
        .map(|ipam| ipam.configs.as_slice())
        .unwrap_or_default();
    for config in requested.iter().filter(|config| !config.subnet.is_empty()) {
        let subnet = Subnet::parse(&config.subnet, "subnet")?;
        for network in existing {
            if let Some(other) = subnets_of(network)
                .into_iter()
                .find(|other| other.overlaps(subnet))
            {
                return Err(invalid(format!(
                    "subnet {subnet} overlaps subnet {other} of network {}: give a subnet that does not overlap, or leave --subnet out to get one from the address pool",
                    network.unique_name()
                )));
            }
        }
    }
    Ok(())
}

/// Binds the networks a service spec attaches to (by name, id or unique id prefix, as Docker's
/// daemon resolves them before SwarmKit sees the spec) to their ids, on every write path, so
/// whatever client sent the spec, the store holds ids. A network that does not exist, or that a
/// reference names ambiguously, is refused naming it (with `not_found_hint`, when not empty, as
/// what to do),
/// as are Docker's local networks (`host`, `bridge`, `none`), the ingress network, and a network
/// given twice. The deprecated top-level list is bound the same way.
pub(crate) fn bind_attachments(
    spec: &mut ServiceSpec,
    networks: &[Network],
    not_found_hint: &str,
) -> Result<(), ManagerError> {
    let task_networks = spec.task.as_mut().map(|task| &mut task.networks);
    for attachments in task_networks.into_iter().chain([&mut spec.networks]) {
        // Network id → the reference that named it first, to name both in a refusal.
        let mut bound: BTreeMap<String, String> = BTreeMap::new();
        for attachment in attachments.iter_mut() {
            let reference = attachment.target.clone();
            let network = resolve_attachment(networks, &reference, not_found_hint)?;
            if network.spec.as_ref().is_some_and(|spec| spec.ingress) {
                return Err(ManagerError::InvalidArgument(format!(
                    "Service cannot be explicitly attached to the ingress network {:?}: the routing mesh reaches published ports without it, so attach the service to an overlay network of your own",
                    network.unique_name()
                )));
            }
            if let Some(first) = bound.insert(network.id.clone(), reference.clone()) {
                let also = if first == reference {
                    String::new()
                } else {
                    format!(" (as {first} and as {reference})")
                };
                return Err(ManagerError::InvalidArgument(format!(
                    "network {} is attached twice{also}: give each network once, with all its aliases",
                    network.unique_name()
                )));
            }
            attachment.target = network.id.clone();
        }
    }
    Ok(())
}

/// The network an attachment names; Docker's own local networks, which no swarm network can be
/// named after, are refused with Docker's words.
fn resolve_attachment<'a>(
    networks: &'a [Network],
    reference: &str,
    not_found_hint: &str,
) -> Result<&'a Network, ManagerError> {
    let found = resolve::resolve(
        networks,
        reference,
        "network",
        |network| &network.id,
        |network| network.unique_name(),
    );
    match found {
        Err(ManagerError::NotFound { .. })
            if spec::validate::PREDEFINED_NETWORK_NAMES.contains(&reference) =>
        {
            Err(ManagerError::InvalidArgument(format!(
                "The network {reference} cannot be used with services. Only networks scoped to the swarm can be used, such as those created with the overlay driver."
            )))
        }
        Err(ManagerError::NotFound { .. }) if !not_found_hint.is_empty() => {
            Err(ManagerError::InvalidArgument(format!(
                "network {reference} not found: {not_found_hint}"
            )))
        }
        Ok(network) if network.pending_delete => Err(ManagerError::FailedPrecondition(format!(
            "network {} is being removed (its last services are stopping): attach to another network, or create it again once it is gone",
            network.unique_name()
        ))),
        other => other,
    }
}

fn attachment_targets(service: &Service) -> impl Iterator<Item = &str> {
    service
        .spec
        .as_ref()
        .map(crate::allocator::service_attachments)
        .unwrap_or_default()
        .iter()
        .map(|attachment| attachment.target.as_str())
}

/// One user of a network: a service attached to it, or the service of a live task still
/// attached to it.
struct NetworkUser {
    /// As refusals show it: a service's name (saying so when it is being removed), or the
    /// task's id when its service is gone.
    shown: String,
    /// The service is being removed (or is gone): it lets the network go once its tasks stop.
    going: bool,
}

fn network_users(id: &str, services: &[Service], tasks: &[Task]) -> Vec<NetworkUser> {
    let user_of = |service: &Service| {
        let name = match service.unique_name() {
            "" => service.id.as_str(),
            name => name,
        };
        NetworkUser {
            shown: match service.pending_delete {
                true => format!("{name} (being removed)"),
                false => name.to_owned(),
            },
            going: service.pending_delete,
        }
    };
    let mut users: Vec<NetworkUser> = services
        .iter()
        .filter(|service| attachment_targets(service).any(|target| target == id))
        .map(user_of)
        .collect();
    for task in tasks {
        let attached = task.networks.iter().any(|attachment| {
            attachment
                .network
                .as_ref()
                .is_some_and(|network| network.id == id)
        });
        // A task the orchestrator has told to stop lets its network go once it is down.
        if !attached || task.desired_state > TaskState::Running as i32 {
            continue;
        }
        let user = services
            .iter()
            .find(|service| service.id == task.service_id)
            .map_or_else(
                || NetworkUser {
                    shown: format!("task {}", task.id),
                    going: true,
                },
                user_of,
            );
        users.push(user);
    }
    users
}

/// Who uses network `id`: the services whose spec attaches to it (those being removed say so),
/// then the services of live tasks that still carry an attachment to it, by name, sorted and
/// without repeats.
pub(crate) fn users_of(id: &str, services: &[Service], tasks: &[Task]) -> Vec<String> {
    let mut users: Vec<String> = network_users(id, services, tasks)
        .into_iter()
        .map(|user| user.shown)
        .collect();
    users.sort();
    users.dedup();
    users
}

/// The services publishing a port through the routing mesh, by name, sorted: the users of
/// the ingress network, which no service names as an attachment.
fn ingress_users(services: &[Service]) -> Vec<String> {
    let mut users: Vec<String> = services
        .iter()
        .filter(|service| {
            !service.pending_delete && crate::allocator::needs_ingress(service.spec.as_ref())
        })
        .map(|service| match service.unique_name() {
            "" => service.id.clone(),
            name => name.to_owned(),
        })
        .collect();
    users.sort();
    users
}

/// What removing a network does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Nothing uses it: it is deleted now.
    Now,
    /// Only services being removed (and their tasks) use it: it is marked `pending_delete`,
    /// hidden from lists and new attachments, and the allocator deletes it once they are gone,
    /// as SwarmKit does, so `stack rm` takes a stack's networks with its services.
    OnceUnused,
}

/// Decides the removal of a network: refused while a service that stays uses it; for the
/// ingress network, while a service publishes a port through the routing mesh.
pub(crate) fn check_remove(
    network: &Network,
    services: &[Service],
    tasks: &[Task],
) -> Result<Removal, ManagerError> {
    if network.spec.as_ref().is_some_and(|spec| spec.ingress) {
        let users = ingress_users(services);
        if !users.is_empty() {
            return Err(ManagerError::FailedPrecondition(format!(
                "network {} is the ingress network, and service(s) {} publish ports through the routing mesh: remove those ports first ('shoal service update --publish-rm PORT SERVICE') or the services",
                network.unique_name(),
                users.join(", ")
            )));
        }
    }
    let users = network_users(&network.id, services, tasks);
    if users.is_empty() {
        return Ok(Removal::Now);
    }
    let mut staying: Vec<String> = users
        .into_iter()
        .filter(|user| !user.going)
        .map(|user| user.shown)
        .collect();
    if staying.is_empty() {
        return Ok(Removal::OnceUnused);
    }
    staying.sort();
    staying.dedup();
    let name = network.unique_name();
    Err(ManagerError::FailedPrecondition(format!(
        "network {name} is in use by service(s) {}: remove them or detach them from it first ('shoal service update --network-rm {name} SERVICE')",
        staying.join(", ")
    )))
}

/// A `key=value` filter of `network ls` or `network prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter<'a> {
    key: &'a str,
    negated: bool,
    value: &'a str,
}

fn parse_filters<'a>(
    filters: &'a [String],
    accepted: &[&str],
) -> Result<Vec<Filter<'a>>, ManagerError> {
    filters
        .iter()
        .map(|filter| {
            let (key, value, negated) = match (filter.split_once("!="), filter.split_once('=')) {
                (Some((key, value)), _) if !key.contains('=') => (key, value, true),
                (_, Some((key, value))) => (key, value, false),
                _ => {
                    return Err(invalid(format!(
                        "invalid filter {filter:?}: give key=value, such as name=backend"
                    )));
                }
            };
            let key = key.trim();
            if !accepted.contains(&key) || (negated && key != "label") {
                return Err(invalid(format!(
                    "invalid filter {key:?}: use {}",
                    accepted.join(", ")
                )));
            }
            Ok(Filter {
                key,
                negated,
                value: value.trim(),
            })
        })
        .collect()
}

/// Whether a network's labels have `wanted`: a key, or key=value.
fn has_label(network: &Network, wanted: &str) -> bool {
    let labels = network
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map(|annotations| &annotations.labels);
    let Some(labels) = labels else {
        return false;
    };
    match wanted.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|found| found == value),
        None => labels.contains_key(wanted),
    }
}

fn driver_of(network: &Network) -> &str {
    let driver = network
        .spec
        .as_ref()
        .and_then(|spec| spec.driver_config.as_ref())
        .map_or("", |driver| driver.name.as_str());
    if driver.is_empty() {
        spec::network::OVERLAY_DRIVER
    } else {
        driver
    }
}

fn matches(network: &Network, filter: &Filter<'_>) -> bool {
    let hit = match filter.key {
        // docker matches names by substring and IDs by prefix.
        "name" => network.unique_name().contains(filter.value),
        "id" => network.id.starts_with(filter.value),
        "label" => has_label(network, filter.value),
        "driver" => driver_of(network) == filter.value,
        "scope" => filter.value == SWARM_SCOPE,
        // Every network here is user-made: docker's builtin ones (bridge, host, none) are local.
        "type" => filter.value == "custom",
        _ => false,
    };
    hit != filter.negated
}

/// Whether `network` passes every filter key: one of a key's values must match, and all of a
/// negated key's must.
fn passes(network: &Network, filters: &[Filter<'_>]) -> bool {
    let mut keys: Vec<(&str, bool)> = filters.iter().map(|f| (f.key, f.negated)).collect();
    keys.dedup();
    keys.iter().all(|(key, negated)| {
        let mut of_key = filters
            .iter()
            .filter(|filter| filter.key == *key && filter.negated == *negated);
        if *negated {
            of_key.all(|filter| matches(network, filter))
        } else {
            of_key.any(|filter| matches(network, filter))
        }
    })
}

/// `network ls --filter`: the networks that pass, sorted by name.
pub(crate) fn list(
    networks: Vec<Network>,
    filters: &[String],
) -> Result<Vec<Network>, ManagerError> {
    let filters = parse_filters(filters, &["name", "id", "label", "driver", "scope", "type"])?;
    let mut listed: Vec<Network> = networks
        .into_iter()
        .filter(|network| !network.pending_delete && passes(network, &filters))
        .collect();
    listed.sort_by(|a, b| a.unique_name().cmp(b.unique_name()).then(a.id.cmp(&b.id)));
    Ok(listed)
}

/// `network prune`: the networks nothing uses that pass the label filters, sorted by name. The
/// ingress network stays, as docker keeps it.
pub(crate) fn prunable<'a>(
    networks: &'a [Network],
    services: &[Service],
    tasks: &[Task],
    filters: &[String],
) -> Result<Vec<&'a Network>, ManagerError> {
    let filters = parse_filters(filters, &["label"])?;
    let mut unused: Vec<&Network> = networks
        .iter()
        .filter(|network| !network.pending_delete)
        .filter(|network| !network.spec.as_ref().is_some_and(|spec| spec.ingress))
        .filter(|network| passes(network, &filters))
        .filter(|network| users_of(&network.id, services, tasks).is_empty())
        .collect();
    unused.sort_by(|a, b| a.unique_name().cmp(b.unique_name()));
    Ok(unused)
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{
        Annotations, Driver, IpamConfig, IpamOptions, NetworkAttachment, NetworkAttachmentConfig,
        ServiceSpec, TaskSpec,
    };

    use super::*;

    fn spec(name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            annotations: Some(Annotations {
                name: name.into(),
                labels: [("tier".to_owned(), name.to_owned())].into(),
                ..Default::default()
            }),
            driver_config: Some(Driver {
                name: "overlay".into(),
                ..Default::default()
            }),
            ipam: (!subnet.is_empty()).then(|| IpamOptions {
                driver: None,
                configs: vec![IpamConfig {
                    subnet: subnet.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn network(id: &str, name: &str, requested: &str, allocated: &str) -> Network {
        Network {
            id: id.into(),
            spec: Some(spec(name, requested)),
            ipam: (!allocated.is_empty()).then(|| IpamOptions {
                driver: None,
                configs: vec![IpamConfig {
                    subnet: allocated.into(),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn service(id: &str, name: &str, task_networks: &[&str], deprecated: &[&str]) -> Service {
        let attach = |targets: &[&str]| {
            targets
                .iter()
                .map(|target| NetworkAttachmentConfig {
                    target: (*target).into(),
                    ..Default::default()
                })
                .collect()
        };
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                task: Some(TaskSpec {
                    networks: attach(task_networks),
                    ..Default::default()
                }),
                networks: attach(deprecated),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, service_id: &str, network_id: &str, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: service_id.into(),
            desired_state: desired as i32,
            networks: vec![NetworkAttachment {
                network: Some(Network {
                    id: network_id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn error<T: std::fmt::Debug>(result: Result<T, ManagerError>) -> String {
        result.unwrap_err().to_string()
    }

    /// The targets of a spec's attachments, task list then deprecated list, after binding.
    fn bound(
        task_networks: &[&str],
        deprecated: &[&str],
        networks: &[Network],
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let mut spec = service("s", "web", task_networks, deprecated).spec.unwrap();
        bind_attachments(&mut spec, networks, "").map_err(|error| error.to_string())?;
        let targets = |list: &[NetworkAttachmentConfig]| {
            list.iter().map(|a| a.target.clone()).collect::<Vec<_>>()
        };
        Ok((
            targets(&spec.task.unwrap().networks),
            targets(&spec.networks),
        ))
    }

    #[test]
    fn attachments_bind_to_ids_by_name_id_or_unique_prefix() {
        let networks = [
            network("abc111", "front", "", ""),
            network("abc222", "back", "", ""),
            network("xyz333", "other", "", ""),
        ];
        assert_eq!(
            bound(&["front", "abc222", "xyz"], &[], &networks).unwrap(),
            (
                vec!["abc111".into(), "abc222".into(), "xyz333".into()],
                vec![]
            )
        );
        assert_eq!(
            bound(&[], &["back"], &networks).unwrap(),
            (vec![], vec!["abc222".into()])
        );
        assert_eq!(
            bound(&["nowhere"], &[], &networks).unwrap_err(),
            "network nowhere not found: list them with 'shoal network ls'"
        );
        assert!(
            bound(&["abc"], &[], &networks)
                .unwrap_err()
                .contains("network reference \"abc\" is ambiguous: it matches 2 networks")
        );
        let mut spec = service("s", "web", &["nowhere"], &[]).spec.unwrap();
        assert_eq!(
            bind_attachments(&mut spec, &networks, "declare it in the compose file")
                .unwrap_err()
                .to_string(),
            "network nowhere not found: declare it in the compose file"
        );
    }

    #[test]
    fn attachments_refuse_local_networks_ingress_and_repeats() {
        let mut ingress = network("ing999", "ingress", "", "");
        ingress.spec.as_mut().unwrap().ingress = true;
        let networks = [network("abc111", "front", "", ""), ingress];
        for local in ["host", "bridge", "none"] {
            assert_eq!(
                bound(&[local], &[], &networks).unwrap_err(),
                format!(
                    "The network {local} cannot be used with services. Only networks scoped to the swarm can be used, such as those created with the overlay driver."
                )
            );
        }
        assert!(
            bound(&["ingress"], &[], &networks)
                .unwrap_err()
                .starts_with(
                    "Service cannot be explicitly attached to the ingress network \"ingress\""
                )
        );
        assert_eq!(
            bound(&["front", "abc111"], &[], &networks).unwrap_err(),
            "network front is attached twice (as front and as abc111): give each network once, with all its aliases"
        );
        assert!(
            bound(&["front", "front"], &[], &networks)
                .unwrap_err()
                .starts_with("network front is attached twice: ")
        );
    }

    #[test]
    fn a_create_refuses_taken_names_and_overlapping_subnets_naming_the_other_network() {
        let existing = [
            network("n1", "front", "10.1.0.0/16", ""),
            network("n2", "back", "", "10.0.1.0/24"),
        ];
        assert!(check_create(&spec("new", "10.2.0.0/24"), &existing).is_ok());
        assert!(check_create(&spec("new", ""), &existing).is_ok());
        assert_eq!(
            error(check_create(&spec("front", ""), &existing)),
            "network front already exists (ID n1): choose another name, or remove it first with 'shoal network rm front'"
        );
        let requested = error(check_create(&spec("new", "10.1.5.0/24"), &existing));
        assert!(
            requested
                .starts_with("subnet 10.1.5.0/24 overlaps subnet 10.1.0.0/16 of network front"),
            "{requested}"
        );
        let allocated = error(check_create(&spec("new", "10.0.0.0/16"), &existing));
        assert!(
            allocated.starts_with("subnet 10.0.0.0/16 overlaps subnet 10.0.1.0/24 of network back"),
            "{allocated}"
        );
        // spec's own rules come first.
        assert!(error(check_create(&spec("new", "10.2.0.1/24"), &existing)).contains("host bits"));
    }

    #[test]
    fn users_are_services_attached_by_either_list_and_the_services_of_live_tasks() {
        let services = [
            service("s1", "web", &["n1"], &[]),
            service("s2", "old", &[], &["n1"]),
            // The deprecated list is not read when the task's list has entries.
            service("s3", "api", &["n2"], &["n1"]),
            Service {
                pending_delete: true,
                ..service("s4", "gone", &["n1"], &[])
            },
        ];
        assert_eq!(
            users_of("n1", &services, &[]),
            ["gone (being removed)", "old", "web"]
        );
        assert!(users_of("n3", &services, &[]).is_empty());
        let tasks = [
            task("t1", "s3", "n3", TaskState::Running),
            task("t2", "s9", "n3", TaskState::Running),
            task("t3", "s1", "n3", TaskState::Shutdown),
        ];
        assert_eq!(users_of("n3", &services, &tasks), ["api", "task t2"]);
        let refused = error(check_remove(
            &network("n1", "front", "", ""),
            &services,
            &[],
        ));
        assert_eq!(
            refused,
            "network front is in use by service(s) old, web: remove them or detach them from it first ('shoal service update --network-rm front SERVICE')"
        );
        assert_eq!(
            check_remove(&network("n9", "free", "", ""), &services, &tasks).unwrap(),
            Removal::Now
        );
    }

    #[test]
    fn a_network_only_going_services_use_goes_once_they_are_gone() {
        let gone = Service {
            pending_delete: true,
            ..service("s4", "gone", &["n1"], &[])
        };
        let front = network("n1", "front", "", "");
        let running = [task("t1", "s4", "n1", TaskState::Running)];
        assert_eq!(
            check_remove(&front, std::slice::from_ref(&gone), &running).unwrap(),
            Removal::OnceUnused
        );
        // A task whose service is deleted already holds it no longer than it runs.
        let orphan = [task("t2", "s9", "n1", TaskState::Running)];
        assert_eq!(
            check_remove(&front, &[], &orphan).unwrap(),
            Removal::OnceUnused
        );

        // Being removed, it takes no new attachment and keeps its name till it goes.
        let marked = Network {
            pending_delete: true,
            ..front
        };
        let mut spec = service("s5", "new", &["front"], &[]).spec.unwrap();
        let refused = error(bind_attachments(
            &mut spec,
            std::slice::from_ref(&marked),
            "",
        ));
        assert!(
            refused.contains("network front is being removed"),
            "{refused}"
        );
        let taken = error(check_create(&self::spec("front", ""), &[marked]));
        assert!(taken.contains("is being removed"), "{taken}");
    }

    #[test]
    fn one_ingress_network_which_goes_only_once_nothing_publishes_through_it() {
        let mut ingress = network("ing", "ingress", "10.0.0.0/24", "10.0.0.0/24");
        ingress.spec.as_mut().unwrap().ingress = true;
        let mut second = spec("mesh", "");
        second.ingress = true;
        assert!(check_create(&second, &[]).is_ok());
        assert_eq!(
            error(check_create(&second, std::slice::from_ref(&ingress))),
            "ingress network already exists (ingress, ID ing): a swarm has one; remove it first with 'shoal network rm ingress' (once no service publishes a port through the routing mesh), then create the new one"
        );

        let publishing =
            |id: &str, name: &str, mode: shoal_proto::api::port_config::PublishMode| {
                let mut service = service(id, name, &[], &[]);
                service.spec.as_mut().unwrap().endpoint = Some(shoal_proto::api::EndpointSpec {
                    ports: vec![shoal_proto::api::PortConfig {
                        target_port: 80,
                        publish_mode: mode as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                service
            };
        use shoal_proto::api::port_config::PublishMode;
        let services = [
            publishing("s1", "web", PublishMode::Ingress),
            publishing("s2", "api", PublishMode::Ingress),
            publishing("s3", "local", PublishMode::Host),
        ];
        assert_eq!(
            error(check_remove(&ingress, &services, &[])),
            "network ingress is the ingress network, and service(s) api, web publish ports through the routing mesh: remove those ports first ('shoal service update --publish-rm PORT SERVICE') or the services"
        );
        assert_eq!(
            check_remove(&ingress, &services[2..], &[]).unwrap(),
            Removal::Now
        );
        // A task of a removed service still holding an address there keeps it until it stops.
        let tasks = [task("t1", "s1", "ing", TaskState::Running)];
        assert_eq!(
            check_remove(&ingress, &services[2..], &tasks).unwrap(),
            Removal::OnceUnused
        );
    }

    #[test]
    fn list_filters_follow_docker() {
        let all = || {
            vec![
                network("abc1", "front", "", ""),
                network("abd2", "back", "", ""),
                Network {
                    pending_delete: true,
                    ..network("xyz3", "leaving", "", "")
                },
            ]
        };
        let names = |filters: &[&str]| -> Vec<String> {
            let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
            list(all(), &filters)
                .unwrap()
                .iter()
                .map(|n| n.unique_name().to_owned())
                .collect()
        };
        assert_eq!(names(&[]), ["back", "front"]);
        assert_eq!(names(&["name=ron"]), ["front"]);
        assert_eq!(names(&["id=ab"]), ["back", "front"]);
        assert_eq!(names(&["id=abc"]), ["front"]);
        assert_eq!(names(&["label=tier"]), ["back", "front"]);
        assert_eq!(names(&["label=tier=back"]), ["back"]);
        // Values of one key are alternatives; keys all apply.
        assert_eq!(names(&["name=front", "name=back"]), ["back", "front"]);
        assert_eq!(
            names(&["name=front", "label=tier=back"]),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&["driver=overlay", "scope=swarm", "type=custom"]),
            ["back", "front"]
        );
        assert!(names(&["scope=local"]).is_empty());
        let refused = list(all(), &["colour=red".to_owned()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            refused,
            "invalid filter \"colour\": use name, id, label, driver, scope, type"
        );
        assert!(list(all(), &["name".to_owned()]).is_err());
    }

    #[test]
    fn prune_takes_unused_networks_passing_label_filters_and_keeps_ingress() {
        let mut ingress = network("i", "ingress", "", "");
        ingress.spec.as_mut().unwrap().ingress = true;
        let networks = [
            network("n1", "front", "", ""),
            network("n2", "back", "", ""),
            network("n3", "spare", "", ""),
            ingress,
        ];
        let services = [service("s1", "web", &["n1"], &[])];
        let tasks = [task("t1", "s9", "n2", TaskState::Running)];
        let names = |filters: &[&str]| -> Vec<String> {
            let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
            prunable(&networks, &services, &tasks, &filters)
                .unwrap()
                .iter()
                .map(|n| n.unique_name().to_owned())
                .collect()
        };
        assert_eq!(names(&[]), ["spare"]);
        assert!(names(&["label=tier=front"]).is_empty());
        assert_eq!(names(&["label!=tier=front"]), ["spare"]);
        assert!(names(&["label!=tier"]).is_empty());
        assert!(prunable(&networks, &services, &tasks, &["name=x".to_owned()]).is_err());
    }
}
