//! The vocabulary of swarm networks, once: the driver, the driver options shoal understands, the
//! MTU bounds, and IPv4 subnets in CIDR form (parsed, checked for host bits, compared for
//! overlap, their host addresses listed), and a service's attachments: the `--network` flag,
//! short and long form, and the rules of a stored attachment. `validate::network_spec` applies
//! the network rules; the manager compares subnets across networks with [`Subnet::overlaps`] and
//! its allocator carves and fills them with these; overlay-net's interface addresses take their
//! subnet from here.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_proto::api::NetworkAttachmentConfig;

use crate::SpecError;

/// The one driver of swarm-scoped networks.
pub const OVERLAY_DRIVER: &str = "overlay";
/// The IPAM driver Docker names "default": the leader's own allocator.
pub const DEFAULT_IPAM_DRIVER: &str = "default";
/// Docker's `--opt encrypted`: IPsec between the nodes' VTEPs. Docker only looks at its presence.
pub const ENCRYPTED_OPTION: &str = "encrypted";
/// The underlay MTU the overlay's inner MTU is derived from (inner = this − 50).
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// VNIs asked for by the user, one per subnet, comma separated (the allocator writes the same
/// key into `driver_state`).
pub const VXLAN_ID_LIST_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// The driver options a network spec may carry.
pub const DRIVER_OPTIONS: [&str; 3] = [ENCRYPTED_OPTION, MTU_OPTION, VXLAN_ID_LIST_OPTION];
/// The smallest MTU IPv4 allows (RFC 791) and the largest an interface takes.
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;
/// The largest VNI VXLAN's 24 bits hold.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The longest prefix of a network's subnet: a /30 still holds a gateway and one task.
pub const MAX_NETWORK_PREFIX: u8 = 30;
/// The subsystems of the network keys the managers hand out (Docker's names): node gossip, and
/// the IPsec of encrypted overlays. A node picks its keys out of its session by these.
pub const KEY_SUBSYSTEM_GOSSIP: &str = "networking:gossip";
pub const KEY_SUBSYSTEM_IPSEC: &str = "networking:ipsec";
/// Keys kept per subsystem, as Docker's keymanager keeps them: the newest and the two before it.
/// Nodes seal with the second newest and accept all three, so a node that missed a rotation goes
/// on talking with the others.
pub const KEYS_PER_SUBSYSTEM: usize = 3;
/// The length of a network key: AES-256.
pub const NETWORK_KEY_LEN: usize = 32;

/// An IPv4 subnet in CIDR form with no host bits set, such as 10.0.1.0/24.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet(Ipv4Net);

impl Subnet {
    /// Parses `text` as an IPv4 network in CIDR form; `what` names it in messages ("subnet",
    /// "ip range"). IPv6 is refused as such, and an address with host bits set is refused with
    /// the network it probably meant.
    pub fn parse(text: &str, what: &str) -> Result<Subnet, SpecError> {
        let Some((address, _)) = text.split_once('/') else {
            return Err(SpecError::rule(format!(
                "invalid {what} {text:?}: give an IPv4 network in CIDR form such as 10.0.9.0/24"
            )));
        };
        if address.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(SpecError::rule(format!(
                "invalid {what} {text:?}: IPv6 is not supported on overlay networks, give an IPv4 network such as 10.0.9.0/24"
            )));
        }
        let net: Ipv4Net = text.parse().map_err(|_| {
            SpecError::rule(format!(
                "invalid {what} {text:?}: give an IPv4 network in CIDR form such as 10.0.9.0/24 (prefix length 0 to 32)"
            ))
        })?;
        if net.addr() != net.network() {
            return Err(SpecError::rule(format!(
                "invalid {what} {text:?}: the address has host bits set; give the network itself, {}",
                net.trunc()
            )));
        }
        Ok(Subnet(net))
    }

    /// The subnet of `prefix_len` bits that holds `address`, host bits cleared: the subnet of an
    /// interface address such as 10.0.1.5/24. `None` when the prefix is longer than 32 bits.
    pub fn containing(address: Ipv4Addr, prefix_len: u8) -> Option<Subnet> {
        Ipv4Net::new(address, prefix_len)
            .ok()
            .map(|net| Subnet(net.trunc()))
    }

    pub fn prefix_len(self) -> u8 {
        self.0.prefix_len()
    }

    pub fn network(self) -> Ipv4Addr {
        self.0.network()
    }

    pub fn broadcast(self) -> Ipv4Addr {
        self.0.broadcast()
    }

    /// Whether `address` lies in this subnet.
    pub fn contains(self, address: Ipv4Addr) -> bool {
        self.0.contains(&address)
    }

    /// Whether `other` lies wholly in this subnet.
    pub fn covers(self, other: Subnet) -> bool {
        self.0.contains(&other.0)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Subnet) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// Whether `address` may be given to a host: inside the subnet, and neither its network nor
    /// its broadcast address (so a /31 or /32 has none).
    pub fn is_host(self, address: Ipv4Addr) -> bool {
        self.contains(address) && address != self.network() && address != self.broadcast()
    }

    /// The host addresses in order, from the one after the network address to the one before
    /// the broadcast address.
    pub fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        // Plain numbers rather than `Ipv4Net::hosts`, which gives a /31 two hosts (RFC 3021):
        // an overlay never hands out its network or broadcast address.
        (u32::from(self.network()).saturating_add(1)..u32::from(self.broadcast()))
            .map(Ipv4Addr::from)
    }

    /// The first host address, Docker's default gateway; `None` for a /31 or /32.
    pub fn first_host(self) -> Option<Ipv4Addr> {
        self.hosts().next()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The fields of Docker's long-form `--network` that set an address of a container's own, which
/// a service's tasks can't have: the allocator gives each task its addresses. Docker's CLI drops
/// them from a service without a word; here they are refused.
const CONTAINER_ONLY_ATTACHMENT_FIELDS: [&str; 5] =
    ["ip", "ip6", "mac-address", "link-local-ip", "gw-priority"];

/// Docker's `--network` value: a network's name, id or id prefix, or the long form
/// `name=NET[,alias=ALIAS]...[,driver-opt=KEY=VALUE]...` (one line of CSV; field keys in any
/// case, as Docker's). The target stays as typed: the manager resolves it to the network's id.
pub fn attachment_flag(text: &str) -> Result<NetworkAttachmentConfig, SpecError> {
    let usage = "give a network name, or name=NETWORK[,alias=ALIAS][,driver-opt=KEY=VALUE]";
    if text.trim().is_empty() {
        return Err(SpecError::rule(format!("no network given: {usage}")));
    }
    if !text.contains('=') {
        return Ok(NetworkAttachmentConfig {
            target: text.to_owned(),
            ..Default::default()
        });
    }
    let mut attachment = NetworkAttachmentConfig::default();
    for field in crate::csv::split_line(text)? {
        let Some((key, value)) = field
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
        else {
            return Err(SpecError::rule(format!(
                "invalid field {field:?} in network {text:?}: {usage}"
            )));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        match key.as_str() {
            "name" => attachment.target = value.to_owned(),
            "alias" => attachment.aliases.push(value.to_owned()),
            "driver-opt" => {
                let Some((option, setting)) = value
                    .split_once('=')
                    .filter(|(option, _)| !option.trim().is_empty())
                else {
                    return Err(SpecError::rule(format!(
                        "invalid driver-opt {value:?} in network {text:?}: give driver-opt=KEY=VALUE"
                    )));
                };
                attachment
                    .driver_attachment_opts
                    .insert(option.trim().to_owned(), setting.trim().to_owned());
            }
            container_only if CONTAINER_ONLY_ATTACHMENT_FIELDS.contains(&container_only) => {
                return Err(SpecError::rule(format!(
                    "{container_only} in network {text:?} is not supported for services: each task gets its address from the network's subnet, so leave it out"
                )));
            }
            unknown => {
                return Err(SpecError::rule(format!(
                    "unknown field {unknown:?} in network {text:?}: {usage}"
                )));
            }
        }
    }
    if attachment.target.is_empty() {
        return Err(SpecError::rule(format!(
            "network {text:?} names no network: add name=NETWORK"
        )));
    }
    Ok(attachment)
}

/// A stored attachment: a network named, and aliases that are names (not blank, no spaces),
/// since each is a DNS name of the service on that network.
pub fn check_attachment(attachment: &NetworkAttachmentConfig) -> Result<(), SpecError> {
    if attachment.target.trim().is_empty() {
        return Err(SpecError::rule(
            "a network attachment names no network: give the network's name or id".to_owned(),
        ));
    }
    if let Some(alias) = attachment
        .aliases
        .iter()
        .find(|alias| alias.is_empty() || alias.chars().any(char::is_whitespace))
    {
        return Err(SpecError::rule(format!(
            "invalid alias {alias:?} on network {}: an alias is a DNS name, so give one without spaces",
            attachment.target
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_flags_take_docker_short_and_long_forms() {
        let short = attachment_flag("backend").unwrap();
        assert_eq!(short.target, "backend");
        assert!(short.aliases.is_empty());
        let long = attachment_flag("name=backend,alias=api,Alias=v1,driver-opt=com.x=1").unwrap();
        assert_eq!(long.target, "backend");
        assert_eq!(long.aliases, ["api", "v1"]);
        assert_eq!(long.driver_attachment_opts["com.x"], "1");
        assert_eq!(
            attachment_flag(r#""name=a,b",alias=x"#).unwrap().target,
            "a,b"
        );
        let message = |text| attachment_flag(text).unwrap_err().to_string();
        assert!(message("").contains("no network given"));
        assert!(message("alias=api").contains("names no network: add name=NETWORK"));
        assert!(message("name=backend,colour=blue").contains("unknown field \"colour\""));
        assert!(message("name=backend,ip=10.0.0.9").contains("not supported for services"));
        assert!(message("name=backend,driver-opt=x").contains("driver-opt=KEY=VALUE"));
        assert!(message("name=backend,alias").contains("invalid field \"alias\""));
    }

    #[test]
    fn stored_attachments_name_a_network_and_real_aliases() {
        let attachment = |target: &str, alias: &str| NetworkAttachmentConfig {
            target: target.to_owned(),
            aliases: vec![alias.to_owned()],
            ..Default::default()
        };
        assert!(check_attachment(&attachment("n1", "api")).is_ok());
        assert!(check_attachment(&attachment("", "api")).is_err());
        assert!(check_attachment(&attachment("n1", "")).is_err());
        assert!(check_attachment(&attachment("n1", "a b")).is_err());
    }

    #[test]
    fn subnets_parse_and_compare() {
        let subnet = |text| Subnet::parse(text, "subnet").unwrap();
        assert!(subnet("10.0.0.0/16").overlaps(subnet("10.0.9.0/24")));
        assert!(subnet("10.0.9.0/24").overlaps(subnet("10.0.0.0/16")));
        assert!(!subnet("10.0.9.0/24").overlaps(subnet("10.0.10.0/24")));
        assert!(subnet("10.0.0.0/16").covers(subnet("10.0.9.0/24")));
        assert!(!subnet("10.0.9.0/24").covers(subnet("10.0.0.0/16")));
        assert!(subnet("10.0.9.0/24").contains("10.0.9.255".parse().unwrap()));
        let message = |text| Subnet::parse(text, "subnet").unwrap_err().to_string();
        assert!(
            message("10.0.9.1/24").contains("host bits set; give the network itself, 10.0.9.0/24")
        );
        assert!(message("fd00::/64").contains("IPv6 is not supported"));
        assert!(message("10.0.9.0").contains("CIDR form"));
        assert!(message("10.0.9.0/33").contains("prefix length 0 to 32"));
        assert!(message("10.0.300.0/24").contains("CIDR form"));
    }

    #[test]
    fn hosts_leave_out_the_network_and_broadcast_addresses() {
        let subnet = |text| Subnet::parse(text, "subnet").unwrap();
        let address = |text: &str| text.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            subnet("10.0.9.0/30").hosts().collect::<Vec<_>>(),
            [address("10.0.9.1"), address("10.0.9.2")]
        );
        assert_eq!(subnet("10.0.9.0/24").hosts().count(), 254);
        assert_eq!(subnet("10.0.9.0/31").hosts().count(), 0);
        assert_eq!(subnet("10.0.9.0/32").first_host(), None);
        assert_eq!(
            subnet("10.0.9.0/24").first_host(),
            Some(address("10.0.9.1"))
        );
        assert!(subnet("10.0.9.0/24").is_host(address("10.0.9.254")));
        assert!(!subnet("10.0.9.0/24").is_host(address("10.0.9.255")));
        assert!(!subnet("10.0.9.0/24").is_host(address("10.0.9.0")));
        assert!(!subnet("10.0.9.0/24").is_host(address("10.0.10.1")));
        assert_eq!(
            Subnet::containing(address("10.0.9.77"), 24),
            Some(subnet("10.0.9.0/24"))
        );
        assert_eq!(Subnet::containing(address("10.0.9.77"), 33), None);
    }
}
