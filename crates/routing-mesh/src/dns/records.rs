//! The pure core of embedded DNS: which names each network holds, and the answer to one question
//! from one task. No IO, no clock; the address order is shuffled with a generator passed in.
//!
//! Docker's rules, from moby's `libnetwork` (resolver.go, sandbox.go, service_common.go):
//! - on each network, `<service>` and each of its aliases name the service's VIP, or its serving
//!   tasks' addresses in `dnsrr` mode; `tasks.<service>` and `tasks.<alias>` name the serving
//!   tasks' addresses; a task's container name (`<service>.<slot>.<task id>`) names its address;
//! - a task serves while it runs and, when it has a healthcheck, is healthy; a service with no
//!   serving task has no names at all (its queries go upstream);
//! - names are case-insensitive and may end with a dot; `<name>.<network>` looks only in that
//!   network (whose name is case-sensitive); an ingress network holds no names;
//! - a task sees only the networks it is on; the first of them that holds the name answers;
//! - a name we hold answers A (and AAAA) with its addresses of that family, shuffled, possibly
//!   none (NOERROR, empty), and MX with NOERROR, empty; other types are forwarded even for our
//!   names;
//! - PTR for a serving task's address answers `<container name>.<network>.`; VIPs have none;
//! - anything else is forwarded upstream, except from a task whose networks are all internal and
//!   that names no nameserver of its own (SERVFAIL, as Docker answers when nothing can be
//!   asked), and except a single-label A or AAAA query from a task that set `ndots` itself
//!   (NOERROR, empty, so its resolver goes on with the search domains).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

/// The TTL of every record answered from the networks' own names (Docker's `respTTL`).
pub const RECORD_TTL: Duration = Duration::from_secs(600);

/// One network's names, as the node knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRecords {
    /// The network's id, as the asking tasks name it.
    pub id: String,
    /// The network's name, for `<name>.<network>` and PTR answers.
    pub name: String,
    /// The ingress network holds no names (Docker's addSvcRecords skips it).
    pub ingress: bool,
    /// Internal networks reach no upstream resolver.
    pub internal: bool,
    /// The services attached to the network.
    pub services: Vec<ServiceRecords>,
}

/// One service on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecords {
    pub name: String,
    /// The service's aliases on this network (`--network name=N,alias=A`).
    pub aliases: Vec<String>,
    pub endpoint: ServiceEndpoint,
    pub tasks: Vec<TaskRecord>,
}

/// How the service's own name resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceEndpoint {
    /// `vip` mode: the service's virtual IP on this network.
    VirtualIp(IpAddr),
    /// `dnsrr` mode: the addresses of its serving tasks.
    DnsRoundRobin,
}

/// One task of a service on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// The task's container name, `<service>.<slot>.<task id>` (or `<service>.<node id>.<task
    /// id>` for a global task), as `worker::convert::container_name_for_task` makes it.
    pub container_name: String,
    /// The task's address on this network, without the prefix length.
    pub address: IpAddr,
    /// Whether the task runs: observed and desired state both RUNNING.
    pub running: bool,
    pub health: TaskHealth,
}

/// The task's health, as its container's healthcheck last said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskHealth {
    /// The container has no healthcheck.
    NoHealthcheck,
    /// It has one that has not passed yet.
    Starting,
    Healthy,
    Unhealthy,
}

impl TaskRecord {
    /// Whether the task is in DNS: running, and healthy when it has a healthcheck.
    fn serves(&self) -> bool {
        self.running && matches!(self.health, TaskHealth::NoHealthcheck | TaskHealth::Healthy)
    }
}

/// The kinds of question the core tells apart; the rest are forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Mx,
    Ptr,
    /// Any other type (TXT, SRV, ...).
    Other,
}

/// The task asking: the networks it is on, in its order of preference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AskingTask {
    /// Network ids.
    pub networks: Vec<String>,
    /// Whether the task's own options set `ndots` to 1 or more (`--dns-option ndots:N`), as
    /// [`task_resolv_conf`](super::task_resolv_conf) says. Docker also counts `ndots:0` and
    /// invalid values (moby#53104); with those the task's resolver asks for the name as it is,
    /// so it is forwarded here.
    pub ndots_set: bool,
    /// Whether the task names its own nameservers (`--dns`): then they are asked in place of
    /// the host's, from the task's namespace, so even a task only on internal networks
    /// forwards (to a nameserver on one of them, say).
    pub own_upstreams: bool,
}

/// What to send back for one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours: NOERROR with these records (none is a real answer), each with
    /// [`RECORD_TTL`] and the question's own name.
    Records(Vec<AnswerRecord>),
    /// The name is not ours: the upstream resolvers answer it.
    Forward,
    /// The name is not ours and the task may reach no upstream resolver.
    ServerFailure,
}

/// One record of an answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnswerRecord {
    /// A for an IPv4 address, AAAA for an IPv6 one.
    Address(IpAddr),
    /// PTR, a fully qualified name with its final dot.
    Pointer(String),
}

/// Every network's names, indexed for answering. Built once per change of what the node knows;
/// answering only reads it.
#[derive(Clone, Debug, Default)]
pub struct DnsTable {
    networks: HashMap<String, NetworkIndex>,
}

#[derive(Clone, Debug, Default)]
struct NetworkIndex {
    name: String,
    internal: bool,
    /// Lower-case name → its addresses (never empty).
    addresses: HashMap<String, Vec<IpAddr>>,
    /// Serving task address → its PTR target.
    pointers: HashMap<IpAddr, String>,
}

impl NetworkIndex {
    fn build(network: NetworkRecords) -> Self {
        let mut index = NetworkIndex {
            name: network.name,
            internal: network.internal,
            ..NetworkIndex::default()
        };
        if network.ingress {
            return index;
        }
        for service in &network.services {
            let serving: Vec<&TaskRecord> =
                service.tasks.iter().filter(|task| task.serves()).collect();
            if serving.is_empty() {
                continue;
            }
            let task_addresses: Vec<IpAddr> = serving.iter().map(|task| task.address).collect();
            let service_addresses = match service.endpoint {
                ServiceEndpoint::VirtualIp(vip) => vec![vip],
                ServiceEndpoint::DnsRoundRobin => task_addresses.clone(),
            };
            for name in std::iter::once(&service.name).chain(&service.aliases) {
                let name = name.to_lowercase();
                index.add(format!("tasks.{name}"), &task_addresses);
                index.add(name, &service_addresses);
            }
            for task in serving {
                index.add(task.container_name.to_lowercase(), &[task.address]);
                index.pointers.insert(
                    task.address,
                    format!("{}.{}.", task.container_name, index.name),
                );
            }
        }
        for addresses in index.addresses.values_mut() {
            addresses.sort_unstable();
            addresses.dedup();
        }
        index
    }

    fn add(&mut self, name: String, addresses: &[IpAddr]) {
        self.addresses
            .entry(name)
            .or_default()
            .extend_from_slice(addresses);
    }
}

impl DnsTable {
    /// Indexes the networks' names.
    pub fn new(networks: impl IntoIterator<Item = NetworkRecords>) -> Self {
        DnsTable {
            networks: networks
                .into_iter()
                .map(|network| (network.id.clone(), NetworkIndex::build(network)))
                .collect(),
        }
    }

    /// Answers one question (`name` as asked, with or without its final dot) from `asker`.
    pub fn answer<R: Rng + ?Sized>(
        &self,
        name: &str,
        query_type: QueryType,
        asker: &AskingTask,
        rng: &mut R,
    ) -> Answer {
        let name = name.strip_suffix('.').unwrap_or(name);
        match query_type {
            QueryType::A | QueryType::Aaaa | QueryType::Mx => {
                if let Some(mut addresses) = self.lookup(name, query_type, asker) {
                    if query_type == QueryType::Mx {
                        return Answer::Records(Vec::new());
                    }
                    addresses.shuffle(rng);
                    return Answer::Records(
                        addresses.into_iter().map(AnswerRecord::Address).collect(),
                    );
                }
                if query_type != QueryType::Mx && asker.ndots_set && !name.contains('.') {
                    return Answer::Records(Vec::new());
                }
            }
            QueryType::Ptr => {
                if let Some(target) =
                    reverse_name_address(name).and_then(|address| self.pointer(address, asker))
                {
                    return Answer::Records(vec![AnswerRecord::Pointer(target.to_owned())]);
                }
            }
            QueryType::Other => {}
        }
        if self.may_forward(asker) {
            Answer::Forward
        } else {
            Answer::ServerFailure
        }
    }

    /// The addresses of `name` of the question's family (possibly none) when one of the
    /// asker's networks holds it; `None` when none does.
    fn lookup(&self, name: &str, query_type: QueryType, asker: &AskingTask) -> Option<Vec<IpAddr>> {
        let wants_v6 = query_type == QueryType::Aaaa;
        // `a.b.c` is tried as `a.b.c` everywhere, then `a.b` in network `c`, then `a` in `b.c`.
        let splits = name.rmatch_indices('.').map(|(dot, _)| dot);
        let candidates = std::iter::once((name, None))
            .chain(splits.map(|dot| (&name[..dot], Some(&name[dot + 1..]))));
        for (short_name, network_name) in candidates {
            let short_name = short_name.to_lowercase();
            // Held by a network, but only with addresses of the other family.
            let mut known = false;
            for network in self.asker_networks(asker) {
                if network_name.is_some_and(|wanted| wanted != network.name) {
                    continue;
                }
                let Some(addresses) = network.addresses.get(&short_name) else {
                    continue;
                };
                known = true;
                let of_family: Vec<IpAddr> = addresses
                    .iter()
                    .copied()
                    .filter(|address| address.is_ipv6() == wants_v6)
                    .collect();
                if !of_family.is_empty() {
                    return Some(of_family);
                }
            }
            if known {
                return Some(Vec::new());
            }
        }
        None
    }

    fn pointer<'t>(&'t self, address: IpAddr, asker: &AskingTask) -> Option<&'t str> {
        self.asker_networks(asker)
            .find_map(|network| network.pointers.get(&address))
            .map(String::as_str)
    }

    fn asker_networks<'t, 'a>(
        &'t self,
        asker: &'a AskingTask,
    ) -> impl Iterator<Item = &'t NetworkIndex> + use<'t, 'a> {
        asker.networks.iter().filter_map(|id| self.networks.get(id))
    }

    /// A task reaches the upstream resolvers when it names its own, or unless every network of
    /// it that we know is internal.
    fn may_forward(&self, asker: &AskingTask) -> bool {
        if asker.own_upstreams {
            return true;
        }
        let mut networks = self.asker_networks(asker).peekable();
        networks.peek().is_none() || networks.any(|network| !network.internal)
    }
}

/// The address a reverse-lookup name (`4.3.2.1.in-addr.arpa`, or the nibbles under `ip6.arpa`)
/// stands for.
fn reverse_name_address(name: &str) -> Option<IpAddr> {
    let lower = name.to_ascii_lowercase();
    if let Some(octets) = lower.strip_suffix(".in-addr.arpa") {
        let mut parts: Vec<u8> = Vec::with_capacity(4);
        for part in octets.rsplit('.') {
            parts.push(part.parse().ok()?);
        }
        let octets: [u8; 4] = parts.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let nibbles = lower.strip_suffix(".ip6.arpa")?;
    let mut value: u128 = 0;
    let mut count = 0;
    for nibble in nibbles.rsplit('.') {
        if nibble.len() != 1 {
            return None;
        }
        value = (value << 4) | u128::from(u8::from_str_radix(nibble, 16).ok()?);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(value)))
}

#[cfg(test)]
mod tests;
