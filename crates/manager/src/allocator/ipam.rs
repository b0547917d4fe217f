//! The allocator's address policy over spec's subnets (`spec::network::Subnet` holds the
//! parsing, containment, overlap and host rules): subnets carved from the address pools, the
//! addresses a network hands out (a host address of its subnet, never its gateway, and only
//! inside its range when it has one), and the serial search for the next free one. Addresses
//! are numbers here, so the search can wrap round.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use spec::network::Subnet;

/// The network address, as a number.
fn first(subnet: Subnet) -> u32 {
    u32::from(subnet.network())
}

/// The broadcast address, as a number.
fn last(subnet: Subnet) -> u32 {
    u32::from(subnet.broadcast())
}

/// Parses a subnet as stored (a pool, a network's subnet or range), which spec's rules checked
/// when it was written; `None` for anything they refuse.
pub(super) fn parse_subnet(text: &str) -> Option<Subnet> {
    Subnet::parse(text.trim(), "subnet").ok()
}

/// `address` written with `subnet`'s prefix length, as task addresses and VIPs are stored
/// (`10.0.1.5/24`).
pub(super) fn address_with_prefix(subnet: Subnet, address: u32) -> String {
    format!("{}/{}", Ipv4Addr::from(address), subnet.prefix_len())
}

/// Parses an address as stored in a task or a VIP (`10.0.1.5/24`) or a gateway (`10.0.1.1`).
pub(super) fn parse_address(text: &str) -> Option<u32> {
    let address = text.split_once('/').map_or(text, |(address, _)| address);
    address.trim().parse::<Ipv4Addr>().ok().map(u32::from)
}

pub(super) fn format_address(address: u32) -> String {
    Ipv4Addr::from(address).to_string()
}

/// The first subnet of `prefix_len` bits in `pools` (in order, each from its start) that
/// overlaps none of `taken`: Docker hands subnets out in order and reuses freed ones.
pub(super) fn carve_subnet(pools: &[Subnet], prefix_len: u8, taken: &[Subnet]) -> Option<Subnet> {
    let step = 1u64 << (32 - u32::from(prefix_len.min(32)));
    for pool in pools.iter().filter(|pool| pool.prefix_len() <= prefix_len) {
        let mut start = u64::from(first(*pool));
        while start + step - 1 <= u64::from(last(*pool)) {
            let candidate =
                Subnet::containing(Ipv4Addr::from(u32::try_from(start).ok()?), prefix_len)?;
            match taken.iter().find(|subnet| subnet.overlaps(candidate)) {
                // Skips the whole of a larger subnet in the way at once, to the next aligned
                // candidate after it.
                Some(in_the_way) => {
                    let past = u64::from(last(*in_the_way)) + 1;
                    start = past.div_ceil(step) * step;
                }
                None => return Some(candidate),
            }
        }
    }
    None
}

/// One IPAM config as allocated: where its addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    pub subnet: Subnet,
    pub range: Option<Subnet>,
    pub gateway: u32,
}

impl AddressSpace {
    /// Docker's default gateway: the subnet's first host address, or with a range, the lowest
    /// address of the range other than the network address.
    pub fn default_gateway(subnet: Subnet, range: Option<Subnet>) -> u32 {
        match range {
            Some(range) if range.network() != subnet.network() => first(range),
            Some(range) => first(range).saturating_add(1),
            None => subnet.first_host().map_or(first(subnet), u32::from),
        }
    }

    fn bounds(&self) -> (u32, u32) {
        let range = self.range.unwrap_or(self.subnet);
        (first(range), last(range))
    }

    /// Whether `address` may be handed to a task or a VIP: inside the range (or the subnet),
    /// a host address of the subnet, and not the gateway.
    pub fn is_assignable(&self, address: u32) -> bool {
        let (low, high) = self.bounds();
        (low..=high).contains(&address)
            && self.subnet.is_host(Ipv4Addr::from(address))
            && address != self.gateway
    }

    /// The first assignable address not in `in_use` after `after` (or from the start when
    /// `after` is elsewhere), wrapping round once: Docker's serial allocation, so an address
    /// just freed is taken again only after every other one has been.
    pub fn next_free(&self, in_use: &BTreeSet<u32>, after: Option<u32>) -> Option<u32> {
        let (low, high) = self.bounds();
        let start = after
            .filter(|after| (low..high).contains(after))
            .map_or(low, |after| after + 1);
        (start..=high)
            .chain(low..start)
            .find(|address| self.is_assignable(*address) && !in_use.contains(address))
    }

    /// Whether `address` lies in this space's subnet.
    pub fn contains(&self, address: u32) -> bool {
        self.subnet.contains(Ipv4Addr::from(address))
    }
}
