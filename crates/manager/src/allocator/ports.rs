//! Published ports, the pure half: which ingress-mode published numbers the stored services
//! hold, and the ports a service gets for its spec.
//!
//! A port published through the routing mesh answers on every node, so its number (per
//! protocol) belongs to one service swarm-wide. A port given without a number gets the lowest
//! free one in `spec::ports::DYNAMIC_PUBLISHED_PORTS`, and keeps it across updates while the
//! spec still publishes that target without a number. Host-mode ports bind on their task's node
//! only, so they are not swarm-wide (the scheduler keeps two on one node apart).
//!
//! Nothing is remembered: what is in use is read from the stored services' `endpoint.ports`
//! every time, so a new leader, or any manager serving a call, starts from what Raft holds; a
//! service being removed holds nothing. The control API allocates on every write path
//! (`service create`, `update`, `rollback`, `stack deploy`), so a conflict is refused before
//! anything is written; the allocator phase runs the same function to bring a service whose
//! spec changed without it (an automatic rollback) back in line.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{
    Endpoint, PortConfig, Service, ServiceSpec, port_config::Protocol, port_config::PublishMode,
};
use spec::enums::text_of;
use spec::ports::DYNAMIC_PUBLISHED_PORTS;

use crate::objects::ClusterObject;

/// Why a service can't have the ports its spec asks for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortAllocationError {
    #[error(
        "port {port}/{protocol} is already published by service {holder}: choose another published port, or leave the number out to get a free one; to move it, remove it from {holder} first ('shoal service update --publish-rm {port}/{protocol} {holder}')"
    )]
    Conflict {
        port: u32,
        protocol: &'static str,
        holder: String,
    },
    #[error(
        "no published port is free in {first}-{last} for target port {target}/{protocol} of service {service}: give the port a published number, or remove ports other services publish"
    )]
    Exhausted {
        target: u32,
        protocol: &'static str,
        service: String,
        first: u32,
        last: u32,
    },
}

/// Who holds a published number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    service_id: String,
    service_name: String,
}

fn is_ingress(port: &PortConfig) -> bool {
    port.publish_mode() == PublishMode::Ingress
}

/// Whether the spec publishes any port through the routing mesh, so the service needs the
/// ingress network (a VIP there, and an address there for each task), as Swarm decides it.
pub fn needs_ingress(spec: Option<&ServiceSpec>) -> bool {
    first_ingress_port(spec).is_some()
}

/// The first ingress-mode port a spec publishes, for messages.
pub fn first_ingress_port(spec: Option<&ServiceSpec>) -> Option<&PortConfig> {
    spec.and_then(|spec| spec.endpoint.as_ref())
        .and_then(|endpoint| endpoint.ports.iter().find(|port| is_ingress(port)))
}

/// The swarm-wide published numbers (ingress mode, per protocol) and the services holding them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishedPorts {
    held: BTreeMap<(i32, u32), Holder>,
}

impl PublishedPorts {
    /// What the services hold: the ingress-mode ports with a number in their `endpoint.ports`
    /// (what was allocated), for every service not being removed. Should two services hold one
    /// number (none should), the one with the smaller id keeps it.
    pub fn of_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> PublishedPorts {
        let mut services: Vec<&Service> = services
            .into_iter()
            .filter(|service| !service.pending_delete)
            .collect();
        services.sort_by(|left, right| left.id.cmp(&right.id));
        let mut ports = PublishedPorts::default();
        for service in services {
            ports.claim(service);
        }
        ports
    }

    /// Records the numbers `service` holds in its endpoint, where no other service holds them.
    pub fn claim(&mut self, service: &Service) {
        for port in held_ports(service).iter().filter(|port| is_ingress(port)) {
            if port.published_port == 0 {
                continue;
            }
            self.held
                .entry((port.protocol, port.published_port))
                .or_insert_with(|| Holder {
                    service_id: service.id.clone(),
                    service_name: display_name(service),
                });
        }
    }

    /// Forgets the numbers `service_id` holds.
    pub fn release(&mut self, service_id: &str) {
        self.held
            .retain(|_, holder| holder.service_id != service_id);
    }

    /// Whether some number is held here that `before` did not have held by the same service:
    /// a claim, which a concurrent write must not make too.
    pub fn claims_beyond(&self, before: &PublishedPorts) -> bool {
        self.held
            .iter()
            .any(|(key, holder)| before.held.get(key) != Some(holder))
    }

    /// The name of the service holding `port` for `protocol`, other than `service_id`.
    fn holder_other_than(&self, protocol: i32, port: u32, service_id: &str) -> Option<&str> {
        self.held
            .get(&(protocol, port))
            .filter(|holder| holder.service_id != service_id)
            .map(|holder| holder.service_name.as_str())
    }

    /// Gives `service` the ports its spec asks for, in the spec's order, in
    /// `service.endpoint.ports`, and records them as its own: its fixed numbers, refused when
    /// another service holds one; for each ingress port without a number, the number it held
    /// for that target and protocol (while free and in the dynamic range), or else the lowest
    /// free one. On a refusal nothing changes. Answers whether the numbers it holds changed.
    pub fn allocate(&mut self, service: &mut Service) -> Result<bool, PortAllocationError> {
        let before = self.clone();
        self.release(&service.id);
        let ports = match self.ports_for(service) {
            Ok(ports) => ports,
            Err(error) => {
                *self = before;
                return Err(error);
            }
        };
        let endpoint = service.endpoint.get_or_insert_with(|| Endpoint {
            spec: service.spec.as_ref().and_then(|spec| spec.endpoint.clone()),
            ..Default::default()
        });
        endpoint.ports = ports;
        self.claim(service);
        Ok(*self != before)
    }

    fn ports_for(&self, service: &Service) -> Result<Vec<PortConfig>, PortAllocationError> {
        let name = display_name(service);
        let wanted: Vec<PortConfig> = service
            .spec
            .as_ref()
            .and_then(|spec| spec.endpoint.as_ref())
            .map(|endpoint| endpoint.ports.clone())
            .unwrap_or_default();
        // Numbers this spec asks for itself, per protocol: a reused or chosen number avoids them.
        let mut used_here: BTreeSet<(i32, u32)> = BTreeSet::new();
        for port in wanted
            .iter()
            .filter(|port| is_ingress(port) && port.published_port != 0)
        {
            if let Some(holder) =
                self.holder_other_than(port.protocol, port.published_port, &service.id)
            {
                return Err(PortAllocationError::Conflict {
                    port: port.published_port,
                    protocol: text_of::<Protocol>(port.protocol),
                    holder: holder.to_owned(),
                });
            }
            used_here.insert((port.protocol, port.published_port));
        }
        let free = |used_here: &BTreeSet<(i32, u32)>, protocol: i32, number: u32| {
            !used_here.contains(&(protocol, number))
                && self
                    .holder_other_than(protocol, number, &service.id)
                    .is_none()
        };
        // The numbers held before, to keep for ports still published without one.
        let mut reusable: Vec<PortConfig> = held_ports(service)
            .into_iter()
            .filter(|port| {
                is_ingress(port) && DYNAMIC_PUBLISHED_PORTS.contains(&port.published_port)
            })
            .collect();
        let mut allocated = Vec::with_capacity(wanted.len());
        for port in wanted {
            if !is_ingress(&port) || port.published_port != 0 {
                allocated.push(port);
                continue;
            }
            let kept = reusable.iter().position(|held| {
                held.protocol == port.protocol
                    && held.target_port == port.target_port
                    && free(&used_here, port.protocol, held.published_port)
            });
            let number = match kept {
                Some(index) => reusable.remove(index).published_port,
                None => DYNAMIC_PUBLISHED_PORTS
                    .clone()
                    .find(|number| free(&used_here, port.protocol, *number))
                    .ok_or_else(|| PortAllocationError::Exhausted {
                        target: port.target_port,
                        protocol: text_of::<Protocol>(port.protocol),
                        service: name.clone(),
                        first: *DYNAMIC_PUBLISHED_PORTS.start(),
                        last: *DYNAMIC_PUBLISHED_PORTS.end(),
                    })?,
            };
            used_here.insert((port.protocol, number));
            allocated.push(PortConfig {
                published_port: number,
                ..port
            });
        }
        Ok(allocated)
    }
}

fn held_ports(service: &Service) -> Vec<PortConfig> {
    service
        .endpoint
        .as_ref()
        .map(|endpoint| endpoint.ports.clone())
        .unwrap_or_default()
}

fn display_name(service: &Service) -> String {
    match service.unique_name() {
        "" => service.id.clone(),
        name => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{Annotations, EndpointSpec, port_config::TrafficPolicy};

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

    /// A service whose spec asks for `wanted` and whose endpoint holds `held`.
    fn service(id: &str, wanted: Vec<PortConfig>, held: Vec<PortConfig>) -> Service {
        let endpoint = EndpointSpec {
            ports: wanted,
            ..Default::default()
        };
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: format!("svc-{id}"),
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

    fn allocated(ports: &mut PublishedPorts, service: &mut Service) -> Vec<String> {
        ports.allocate(service).expect("allocates");
        service
            .endpoint
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .map(spec::ports::describe)
            .collect()
    }

    #[test]
    fn fixed_numbers_are_kept_and_unnumbered_ones_get_the_lowest_free() {
        let others = [service("a", vec![], vec![tcp(30000, 80), tcp(30002, 81)])];
        let mut ports = PublishedPorts::of_services(&others);
        let mut web = service("w", vec![tcp(8080, 80), tcp(0, 80), tcp(0, 443)], vec![]);
        assert_eq!(
            allocated(&mut ports, &mut web),
            ["8080:80/tcp", "30001:80/tcp", "30003:443/tcp"]
        );
        // Recorded: the next service gets the number after them.
        let mut next = service("x", vec![tcp(0, 80)], vec![]);
        assert_eq!(allocated(&mut ports, &mut next), ["30004:80/tcp"]);
    }

    #[test]
    fn a_number_belongs_to_one_service_per_protocol() {
        let others = [service("a", vec![], vec![tcp(8080, 80)])];
        let mut ports = PublishedPorts::of_services(&others);
        let mut web = service("w", vec![tcp(8080, 81)], vec![]);
        let error = ports.allocate(&mut web).unwrap_err();
        assert_eq!(
            error.to_string(),
            "port 8080/tcp is already published by service svc-a: choose another published port, or leave the number out to get a free one; to move it, remove it from svc-a first ('shoal service update --publish-rm 8080/tcp svc-a')"
        );
        // Nothing changed: neither the service nor what is recorded.
        assert_eq!(web.endpoint.as_ref().unwrap().ports, Vec::new());
        assert_eq!(ports, PublishedPorts::of_services(&others));
        // The same number over UDP, or in host mode, is another port.
        let mut udp = service(
            "u",
            vec![
                port(8080, 53, Protocol::Udp, PublishMode::Ingress),
                port(8080, 80, Protocol::Sctp, PublishMode::Host),
            ],
            vec![],
        );
        assert_eq!(
            allocated(&mut ports, &mut udp),
            ["8080:53/udp", "8080:80/sctp"]
        );
        // A service keeps what it holds when it is allocated again.
        let mut holder = others[0].clone();
        holder.spec.as_mut().unwrap().endpoint = Some(EndpointSpec {
            ports: vec![tcp(8080, 80)],
            ..Default::default()
        });
        assert_eq!(ports.allocate(&mut holder), Ok(false));
    }

    #[test]
    fn a_chosen_number_stays_across_updates_while_the_target_is_published() {
        let mut ports = PublishedPorts::default();
        let mut web = service("w", vec![tcp(0, 80), tcp(0, 81)], vec![]);
        assert_eq!(
            allocated(&mut ports, &mut web),
            ["30000:80/tcp", "30001:81/tcp"]
        );
        // Another service takes the next free number meanwhile.
        let mut other = service("o", vec![tcp(0, 9000)], vec![]);
        assert_eq!(allocated(&mut ports, &mut other), ["30002:9000/tcp"]);
        // The update drops target 80 and adds 82: 81 keeps its number, 82 gets the lowest free
        // one, which is 80's old number, now released.
        web.spec.as_mut().unwrap().endpoint.as_mut().unwrap().ports = vec![tcp(0, 81), tcp(0, 82)];
        assert_eq!(
            allocated(&mut ports, &mut web),
            ["30001:81/tcp", "30000:82/tcp"]
        );
        // A fixed number the spec now asks for wins over the one held for the same target,
        // which then gets the lowest free one.
        web.spec.as_mut().unwrap().endpoint.as_mut().unwrap().ports =
            vec![tcp(30001, 9999), tcp(0, 81)];
        assert_eq!(
            allocated(&mut ports, &mut web),
            ["30001:9999/tcp", "30000:81/tcp"]
        );
    }

    #[test]
    fn a_service_being_removed_holds_nothing_and_a_removed_port_is_free() {
        let mut going = service("a", vec![tcp(8080, 80)], vec![tcp(8080, 80)]);
        going.pending_delete = true;
        let mut ports = PublishedPorts::of_services([&going]);
        let mut web = service("w", vec![tcp(8080, 80)], vec![]);
        assert_eq!(allocated(&mut ports, &mut web), ["8080:80/tcp"]);
        web.spec.as_mut().unwrap().endpoint.as_mut().unwrap().ports = Vec::new();
        assert_eq!(ports.allocate(&mut web), Ok(true));
        assert_eq!(ports, PublishedPorts::default());
    }

    #[test]
    fn host_ports_and_traffic_policies_pass_through() {
        let mut ports = PublishedPorts::default();
        let mut local = tcp(0, 80);
        local.traffic_policy = TrafficPolicy::Local as i32;
        let host = port(0, 443, Protocol::Tcp, PublishMode::Host);
        let mut web = service("w", vec![local.clone(), host.clone()], vec![]);
        assert_eq!(ports.allocate(&mut web), Ok(true));
        let got = &web.endpoint.as_ref().unwrap().ports;
        assert_eq!(got[0].traffic_policy, TrafficPolicy::Local as i32);
        assert_eq!(got[0].published_port, 30000);
        assert_eq!(got[1], host);
    }

    #[test]
    fn the_range_runs_out_with_a_clear_error() {
        let full: Vec<Service> = DYNAMIC_PUBLISHED_PORTS
            .map(|number| service(&format!("s{number}"), vec![], vec![tcp(number, 80)]))
            .collect();
        let mut ports = PublishedPorts::of_services(&full);
        let mut web = service("w", vec![tcp(0, 80)], vec![]);
        assert_eq!(
            ports.allocate(&mut web).unwrap_err().to_string(),
            "no published port is free in 30000-32767 for target port 80/tcp of service svc-w: give the port a published number, or remove ports other services publish"
        );
    }

    #[test]
    fn the_ingress_network_is_needed_for_ingress_ports_only() {
        let spec = |ports| ServiceSpec {
            endpoint: Some(EndpointSpec {
                ports,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!needs_ingress(None));
        assert!(!needs_ingress(Some(&spec(vec![]))));
        assert!(!needs_ingress(Some(&spec(vec![port(
            8080,
            80,
            Protocol::Tcp,
            PublishMode::Host
        )]))));
        assert!(needs_ingress(Some(&spec(vec![tcp(0, 80)]))));
    }
}
