//! The network plumbing of a test cluster, all of it inside namespaces the cluster creates: an
//! underlay namespace holding a bridge, and per host a namespace whose veth peer is moved into
//! the underlay and enslaved to the bridge. Nothing is added to the machine's own namespace, so
//! test traffic cannot leave the machine or meet its real interfaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;
use crate::process::{COMMAND_TIMEOUT, run_ok};

/// Where `ip netns` keeps named network namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// The bridge in the underlay namespace that every host's veth peer is enslaved to.
pub(crate) const UNDERLAY_BRIDGE: &str = "br0";
/// The host's end of its veth pair: its only link to the other hosts.
pub(crate) const HOST_INTERFACE: &str = "eth0";
/// Prefix length of the test subnet on the underlay.
pub(crate) const SUBNET_PREFIX_LENGTH: u8 = 24;
/// The nftables table `partition` adds in a host's namespace and `heal` deletes.
pub(crate) const PARTITION_TABLE: &str = "shoal_partition";

/// The file `ip netns add` bind-mounts a namespace on; `nsenter --net=` takes it.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The named network namespaces on this machine.
pub(crate) fn list() -> Vec<String> {
    crate::cleanup::entry_names(Path::new(NETNS_DIR))
}

fn ip(args: &[&str]) -> Result<String, HarnessError> {
    run_ok(Command::new("ip").args(args), COMMAND_TIMEOUT)
}

/// Creates the namespace `name` with `lo` up.
pub(crate) fn add(name: &str) -> Result<(), HarnessError> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Deletes the namespace `name` if it exists. Its links (the veth pairs and the bridge) go with
/// it once no process is left inside.
pub(crate) fn delete(name: &str) {
    if netns_path(name).exists() {
        let _ = ip(&["netns", "delete", name]);
    }
}

/// Whether the namespace `name` is one a daemon with the overlay prefix `daemon_prefix` made:
/// `PREFIX-…` for an overlay network, `PREFIXt-…` for a task.
pub(crate) fn made_by_daemon(name: &str, daemon_prefix: &str) -> bool {
    name.strip_prefix(daemon_prefix)
        .is_some_and(|rest| rest.starts_with('-') || rest.starts_with("t-"))
}

/// A loopback-only network namespace for one test daemon on its own, so what its overlay
/// networking makes (gateway bridge, nftables tables, gossip port) stays out of the machine's
/// namespace and apart from other tests' daemons. Dropping it deletes it and every namespace the
/// daemon made.
pub struct DaemonNamespace {
    name: String,
    daemon_prefix: String,
}

impl DaemonNamespace {
    /// Creates the namespace `name` (unique to the test run) for the daemon with `data_root`.
    pub fn create(name: &str, data_root: &Path) -> Result<DaemonNamespace, HarnessError> {
        delete(name);
        add(name)?;
        Ok(DaemonNamespace {
            name: name.to_owned(),
            daemon_prefix: overlay_net::prefix_for_data_root(data_root),
        })
    }

    /// The path `nsenter --net=` takes.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }
}

impl Drop for DaemonNamespace {
    fn drop(&mut self) {
        for name in list() {
            if made_by_daemon(&name, &self.daemon_prefix) {
                delete(&name);
            }
        }
        delete(&self.name);
    }
}

/// Creates the underlay namespace `name` holding the bridge, up.
pub(crate) fn add_underlay(name: &str) -> Result<(), HarnessError> {
    add(name)?;
    ip(&["-n", name, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
    ip(&["-n", name, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    // The underlay stands for the network between machines, which runs no host's netfilter.
    // Where br_netfilter is loaded (built into this machine's kernel, on in every namespace),
    // the bridge would pass each frame through the IPv4 hooks, which costs VXLAN's datagrams
    // more than plain TCP's and so skews every overlay-against-underlay figure.
    overlay_net::apply::unfilter_bridged_frames(&netns_path(name)).map_err(|source| {
        HarnessError::DataPlane {
            context: format!("turning netfilter off on underlay {name}'s bridge"),
            source,
        }
    })?;
    Ok(())
}

/// Creates the host namespace `host` and wires it to the underlay: a veth pair made inside
/// `host` (so the machine's namespace never holds either end), its peer `peer` moved into
/// `underlay` and enslaved to the bridge, and `address` on the host's end.
pub(crate) fn add_host(
    host: &str,
    underlay: &str,
    peer: &str,
    address: Ipv4Addr,
) -> Result<(), HarnessError> {
    add(host)?;
    ip(&[
        "-n",
        host,
        "link",
        "add",
        HOST_INTERFACE,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        underlay,
    ])?;
    ip(&[
        "-n",
        underlay,
        "link",
        "set",
        peer,
        "master",
        UNDERLAY_BRIDGE,
        "up",
    ])?;
    let cidr = format!("{address}/{SUBNET_PREFIX_LENGTH}");
    ip(&["-n", host, "addr", "add", &cidr, "dev", HOST_INTERFACE])?;
    ip(&["-n", host, "link", "set", HOST_INTERFACE, "up"])?;
    Ok(())
}

/// The nftables script that cuts a host off the underlay: everything in or out of its veth is
/// dropped, loopback is untouched. Adding the empty table and deleting it first makes the
/// script replace an earlier partition instead of failing or doubling the rules.
pub(crate) fn partition_script() -> String {
    format!(
        "table inet {PARTITION_TABLE} {{}}\n\
         delete table inet {PARTITION_TABLE}\n\
         table inet {PARTITION_TABLE} {{\n\
         \tchain input {{ type filter hook input priority -400; policy accept; iifname \"{HOST_INTERFACE}\" drop; }}\n\
         \tchain output {{ type filter hook output priority -400; policy accept; oifname \"{HOST_INTERFACE}\" drop; }}\n\
         }}\n"
    )
}

/// The nftables script that removes a partition, whether or not there is one.
pub(crate) fn heal_script() -> String {
    format!("table inet {PARTITION_TABLE} {{}}\ndelete table inet {PARTITION_TABLE}\n")
}
