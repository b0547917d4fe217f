//! The pure core of VIP load balancing: from the services on a task's networks to the elements of
//! one nftables table whose rules never change, and from what a table holds to the few element
//! commands that make it hold what is wanted.
//!
//! The table's rules are fixed (`LAYOUT`): every packet a task sends to a VIP is DNAT'ed in the
//! `output` hook to `ip daddr . numgen random mod SLOTS` looked up in the interval map
//! `backends`, where each backend of the VIP owns an equal run of the `SLOTS` slots. Everything
//! that varies (which VIPs exist, which of their ports are served, which backends are ready)
//! lives in set and map elements, so a backend or service change is element commands only and
//! conntrack keeps every established flow where it was DNAT'ed. A VIP with no backend, or a port
//! the service does not serve, misses the map and is rejected by the `filter` chain at once (a
//! TCP reset, an ICMP port unreachable otherwise), so a client fails fast instead of hanging.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::VipError;
use crate::table::TableElements;

/// The slots a VIP's backends share. 720720 is the least common multiple of 1 to 16, so up to 16
/// backends (and any count dividing it) get exactly equal shares; past that, shares differ by at
/// most one slot in 720720. One interval element per backend, whatever the count.
pub const SLOTS: u32 = 720_720;

/// The table name the daemon uses in each task's network namespace (DESIGN.md: `inet shoal`).
pub const DAEMON_TABLE: &str = "shoal";

/// The transport protocols a VIP port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name nft reads and writes for it.
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Reads nft's name or IP protocol number.
    pub fn from_nft(name: &str) -> Option<Protocol> {
        match name {
            "tcp" | "6" => Some(Protocol::Tcp),
            "udp" | "17" => Some(Protocol::Udp),
            "sctp" | "132" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// Which ports of a VIP reach the service's tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipPorts {
    /// Every port and protocol, as Swarm's VIPs do.
    All,
    /// Only these (protocol, target port) pairs; the others are rejected.
    Only(BTreeSet<(Protocol, u16)>),
}

/// One service as seen from a task: its VIP on a network the task is on, the ports it serves,
/// and the addresses of its tasks that are ready to serve (running, and healthy when it has a
/// healthcheck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipService {
    pub vip: Ipv4Addr,
    pub ports: VipPorts,
    pub backends: BTreeSet<Ipv4Addr>,
}

/// An nftables table name, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    /// Checks `name` against what nft accepts unquoted. Tests use their own names, so they never
    /// touch the daemon's [`DAEMON_TABLE`].
    pub fn new(name: &str) -> Result<TableName, VipError> {
        let mut characters = name.chars();
        let starts_with_letter = characters.next().is_some_and(|c| c.is_ascii_alphabetic());
        if starts_with_letter
            && name.len() <= 64
            && characters.all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            Ok(TableName(name.to_owned()))
        } else {
            Err(VipError::TableName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The elements of a table: everything in it that is not a fixed rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elements {
    /// Every VIP; what the DNAT leaves addressed to one is rejected.
    pub vips: BTreeSet<Ipv4Addr>,
    /// VIPs that serve every port.
    pub vip_any: BTreeSet<Ipv4Addr>,
    /// (VIP, protocol, port) served by VIPs that serve only some ports.
    pub vip_ports: BTreeSet<(Ipv4Addr, Protocol, u16)>,
    /// (VIP, first slot, last slot) → backend address.
    pub backends: BTreeMap<(Ipv4Addr, u32, u32), Ipv4Addr>,
}

/// The elements that make `services` what a task's table balances. Backends share the slots in
/// address order, so the same input always gives the same elements.
pub fn desired_elements(services: &[VipService]) -> Result<Elements, VipError> {
    let mut elements = Elements::default();
    for service in services {
        if !elements.vips.insert(service.vip) {
            return Err(VipError::DuplicateVip(service.vip));
        }
        match &service.ports {
            VipPorts::All => {
                elements.vip_any.insert(service.vip);
            }
            VipPorts::Only(ports) => elements.vip_ports.extend(
                ports
                    .iter()
                    .map(|&(protocol, port)| (service.vip, protocol, port)),
            ),
        }
        let runs = slot_runs(service.backends.len())
            .ok_or_else(|| too_many(service.vip, service.backends.len()))?;
        for ((first, last), backend) in runs.zip(&service.backends) {
            elements
                .backends
                .insert((service.vip, first, last), *backend);
        }
    }
    Ok(elements)
}

/// The runs of [`SLOTS`] that `count` backends own, in order, as (first slot, last slot): equal
/// shares, the first `SLOTS % count` one slot larger. `None` when there are more backends than
/// slots. The VIP tables and the routing mesh share the rule.
pub(crate) fn slot_runs(count: usize) -> Option<impl Iterator<Item = (u32, u32)>> {
    let count = u32::try_from(count).ok().filter(|&count| count <= SLOTS)?;
    let share = SLOTS.checked_div(count).unwrap_or(0);
    let larger_shares = SLOTS.checked_rem(count).unwrap_or(0);
    Some((0..count).scan(0u32, move |first, index| {
        let size = share + u32::from(index < larger_shares);
        let run = (*first, *first + size - 1);
        *first += size;
        Some(run)
    }))
}

fn too_many(vip: Ipv4Addr, count: usize) -> VipError {
    VipError::TooManyBackends {
        vip,
        count,
        slots: SLOTS,
    }
}

/// The fixed part of the table: its sets, maps, chains and rules, with no element. `{table}` is
/// replaced by the table's name.
const LAYOUT: &str = "\
table inet {table} {
	map backends {
		typeof ip daddr . numgen random mod 720720 : ip daddr
		flags interval
	}
	set vip_ports {
		typeof ip daddr . meta l4proto . th dport
	}
	set vip_any {
		typeof ip daddr
	}
	set vips {
		typeof ip daddr
	}
	chain nat_output {
		type nat hook output priority -100; policy accept;
		ip daddr . meta l4proto . th dport @vip_ports dnat ip to ip daddr . numgen random mod 720720 map @backends
		ip daddr @vip_any dnat ip to ip daddr . numgen random mod 720720 map @backends
	}
	chain filter_output {
		type filter hook output priority filter; policy accept;
		ip daddr @vips meta l4proto tcp reject with tcp reset
		ip daddr @vips reject with icmpx port-unreachable
	}
}
";

impl TableElements for Elements {
    const LAYOUT: &'static str = LAYOUT;

    fn is_empty(&self) -> bool {
        self.vips.is_empty()
            && self.vip_any.is_empty()
            && self.vip_ports.is_empty()
            && self.backends.is_empty()
    }

    fn minus(&self, other: &Elements) -> Elements {
        Elements {
            vips: self.vips.difference(&other.vips).copied().collect(),
            vip_any: self.vip_any.difference(&other.vip_any).copied().collect(),
            vip_ports: self
                .vip_ports
                .difference(&other.vip_ports)
                .copied()
                .collect(),
            backends: self
                .backends
                .iter()
                .filter(|(key, backend)| other.backends.get(key) != Some(backend))
                .map(|(key, backend)| (*key, *backend))
                .collect(),
        }
    }

    fn lines(&self, data: bool) -> Vec<(&'static str, Vec<String>)> {
        vec![
            (
                "backends",
                self.backends
                    .iter()
                    .map(|((vip, first, last), backend)| {
                        if data {
                            format!("{vip} . {first}-{last} : {backend}")
                        } else {
                            format!("{vip} . {first}-{last}")
                        }
                    })
                    .collect(),
            ),
            (
                "vip_ports",
                self.vip_ports
                    .iter()
                    .map(|(vip, protocol, port)| {
                        format!("{vip} . {} . {port}", protocol.nft_name())
                    })
                    .collect(),
            ),
            (
                "vip_any",
                self.vip_any.iter().map(ToString::to_string).collect(),
            ),
            ("vips", self.vips.iter().map(ToString::to_string).collect()),
        ]
    }

    fn read_layout(objects: &[serde_json::Value]) -> Option<Elements> {
        super::observe::read_layout(objects)
    }
}

/// What a VIP table holds now, as read back by the apply shell.
pub type Observed = crate::table::Observed<Elements>;

/// The commands that turn what a VIP table holds into what is wanted: one nft transaction.
pub type Change = crate::table::Change<Elements>;

#[cfg(test)]
mod tests;
