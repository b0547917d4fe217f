//! IPv4 arithmetic for the allocator: subnets carved from the address pools, the addresses a
//! network hands out (never its network, broadcast or gateway address, and only inside its
//! range when it has one), and the serial search for the next free one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An IPv4 subnet with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet(Ipv4Net);

impl Subnet {
    /// Parses a CIDR such as `10.0.1.0/24`; host bits are cleared, as Docker reads
    /// `10.0.1.5/24`. `None` for anything else, IPv6 networks included.
    pub fn parse(text: &str) -> Option<Subnet> {
        text.trim()
            .parse::<Ipv4Net>()
            .ok()
            .map(|net| Subnet(net.trunc()))
    }

    fn from_first(first: u32, prefix_len: u8) -> Option<Subnet> {
        Ipv4Net::new(Ipv4Addr::from(first), prefix_len)
            .ok()
            .map(|net| Subnet(net.trunc()))
    }

    /// The network address, as a number.
    pub fn first(&self) -> u32 {
        u32::from(self.0.network())
    }

    /// The broadcast address, as a number.
    pub fn last(&self) -> u32 {
        u32::from(self.0.broadcast())
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn contains(&self, address: u32) -> bool {
        (self.first()..=self.last()).contains(&address)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// `address` written with this subnet's prefix length, as task addresses and VIPs are
    /// stored (`10.0.1.5/24`).
    pub fn address_with_prefix(&self, address: u32) -> String {
        format!("{}/{}", Ipv4Addr::from(address), self.prefix_len())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
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
        let mut start = u64::from(pool.first());
        while start + step - 1 <= u64::from(pool.last()) {
            let candidate = Subnet::from_first(u32::try_from(start).ok()?, prefix_len)?;
            match taken.iter().find(|subnet| subnet.overlaps(&candidate)) {
                // Skips the whole of a larger subnet in the way at once, to the next aligned
                // candidate after it.
                Some(in_the_way) => {
                    let past = u64::from(in_the_way.last()) + 1;
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
            Some(range) if range.first() != subnet.first() => range.first(),
            Some(range) => range.first().saturating_add(1),
            None => subnet.first().saturating_add(1),
        }
    }

    fn bounds(&self) -> (u32, u32) {
        let range = self.range.unwrap_or(self.subnet);
        (range.first(), range.last())
    }

    /// Whether `address` may be handed to a task or a VIP: inside the range (or the subnet),
    /// and neither the subnet's network or broadcast address nor the gateway.
    pub fn is_assignable(&self, address: u32) -> bool {
        let (low, high) = self.bounds();
        (low..=high).contains(&address)
            && address != self.subnet.first()
            && address != self.subnet.last()
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
        self.subnet.contains(address)
    }
}
