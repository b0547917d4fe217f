//! Published ports on the control API's write paths (`service create`, `update`, `rollback`,
//! `stack deploy`): the services a write creates or re-specifies get their ports against what
//! the other stored services hold, with the allocator's rules
//! ([`crate::allocator::PublishedPorts`]), so a conflict is refused, naming the port and the
//! service holding it, before anything is written. Pure: the caller reads, decides, writes.
//!
//! A write that claims a number also rewrites the ingress network at the version it read. The
//! store checks versions only of what a transaction writes, so without that two writes decided
//! on one read (two `service create -p 8080:80` at once, through two managers) could both
//! commit; with it, the second conflicts and is decided again on a fresh read, where the first
//! one's number is taken.

use shoal_proto::api::{Network, Service};

use crate::allocator::{self, PublishedPorts};
use crate::error::ManagerError;
use crate::objects::ClusterObject;

/// Gives each of `changed` (services about to be created or re-specified, in order) the ports
/// its spec asks for, against what the stored services hold, leaving out the services in
/// `changed` themselves and those `leaving` (ids of services a stack deploy prunes). A service
/// publishing through the routing mesh needs the ingress network. Answers the ingress network,
/// to be rewritten at its version read, when the write claims a number no service held.
pub(crate) fn allocate_published_ports(
    stored: &[Service],
    networks: &[Network],
    changed: &mut [Service],
    leaving: &[String],
) -> Result<Option<Network>, ManagerError> {
    let before = PublishedPorts::of_services(stored);
    let mut published = PublishedPorts::of_services(stored.iter().filter(|service| {
        !leaving.contains(&service.id) && !changed.iter().any(|other| other.id == service.id)
    }));
    let ingress = allocator::ingress_network(networks);
    for service in changed.iter_mut() {
        if ingress.is_none()
            && let Some(port) = allocator::ports::first_ingress_port(service.spec.as_ref())
        {
            return Err(ManagerError::FailedPrecondition(format!(
                "service {} publishes port {} through the routing mesh, but the swarm has no ingress network: create one with 'shoal network create -d overlay --ingress ingress', or publish the port with mode=host",
                service.unique_name(),
                spec::ports::describe(port)
            )));
        }
        published
            .allocate(service)
            .map_err(|error| ManagerError::InvalidArgument(error.to_string()))?;
    }
    Ok(ingress
        .filter(|_| published.claims_beyond(&before))
        .cloned())
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{
        Annotations, Endpoint, EndpointSpec, NetworkSpec, PortConfig, ServiceSpec,
        port_config::PublishMode,
    };

    use super::*;

    fn tcp(published: u32, target: u32) -> PortConfig {
        PortConfig {
            target_port: target,
            published_port: published,
            ..Default::default()
        }
    }

    fn service(id: &str, wanted: Vec<PortConfig>, held: Vec<PortConfig>) -> Service {
        let endpoint = EndpointSpec {
            ports: wanted,
            ..Default::default()
        };
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: id.into(),
                    ..Default::default()
                }),
                endpoint: Some(endpoint.clone()),
                ..Default::default()
            }),
            endpoint: Some(Endpoint {
                spec: Some(endpoint),
                ports: held,
                virtual_ips: Vec::new(),
            }),
            ..Default::default()
        }
    }

    fn ingress() -> Network {
        Network {
            id: "ing".into(),
            spec: Some(NetworkSpec {
                ingress: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn numbers(service: &Service) -> Vec<u32> {
        service
            .endpoint
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(|port| port.published_port)
            .collect()
    }

    #[test]
    fn a_claim_rewrites_the_ingress_network_and_a_conflict_names_the_holder() {
        let stored = [service("web", vec![tcp(8080, 80)], vec![tcp(8080, 80)])];
        let mut new = [service("api", vec![tcp(0, 80)], vec![])];
        let guard = allocate_published_ports(&stored, &[ingress()], &mut new, &[]).unwrap();
        assert_eq!(guard.map(|network| network.id), Some("ing".to_owned()));
        assert_eq!(numbers(&new[0]), [30000]);

        let mut clash = [service("api", vec![tcp(8080, 80)], vec![])];
        let error = allocate_published_ports(&stored, &[ingress()], &mut clash, &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("port 8080/tcp is already published by service web"),
            "{error}"
        );
    }

    #[test]
    fn an_update_that_keeps_its_numbers_claims_nothing_new() {
        let stored = [service("web", vec![tcp(0, 80)], vec![tcp(30000, 80)])];
        let mut updated = [stored[0].clone()];
        let annotations = updated[0].spec.as_mut().unwrap().annotations.as_mut();
        annotations
            .unwrap()
            .labels
            .insert("tier".into(), "front".into());
        let guard = allocate_published_ports(&stored, &[ingress()], &mut updated, &[]).unwrap();
        assert_eq!(guard, None);
        assert_eq!(numbers(&updated[0]), [30000]);
    }

    #[test]
    fn services_of_one_deploy_may_swap_numbers_and_take_those_of_pruned_ones() {
        let stored = [
            service("a", vec![tcp(8080, 80)], vec![tcp(8080, 80)]),
            service("b", vec![tcp(9090, 80)], vec![tcp(9090, 80)]),
            service("gone", vec![tcp(7070, 80)], vec![tcp(7070, 80)]),
        ];
        let mut changed = [
            service("a", vec![tcp(9090, 80)], vec![tcp(8080, 80)]),
            service("b", vec![tcp(8080, 80)], vec![tcp(9090, 80)]),
            service("c", vec![tcp(7070, 80)], vec![]),
        ];
        allocate_published_ports(&stored, &[ingress()], &mut changed, &["gone".to_owned()])
            .unwrap();
        assert_eq!(
            changed.iter().map(numbers).collect::<Vec<_>>(),
            [[9090], [8080], [7070]]
        );
        // Without the prune, c would take what "gone" still holds.
        let error = allocate_published_ports(&stored, &[ingress()], &mut changed, &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("already published by service gone")
        );
    }

    #[test]
    fn routing_mesh_ports_need_the_ingress_network_host_ports_do_not() {
        let mut mesh = [service("web", vec![tcp(8080, 80)], vec![])];
        assert_eq!(
            allocate_published_ports(&[], &[], &mut mesh, &[])
                .unwrap_err()
                .to_string(),
            "service web publishes port 8080:80/tcp through the routing mesh, but the swarm has no ingress network: create one with 'shoal network create -d overlay --ingress ingress', or publish the port with mode=host"
        );
        let mut host_port = tcp(8080, 80);
        host_port.publish_mode = PublishMode::Host as i32;
        let mut host = [service("web", vec![host_port], vec![])];
        assert_eq!(
            allocate_published_ports(&[], &[], &mut host, &[]).unwrap(),
            None
        );
    }
}
