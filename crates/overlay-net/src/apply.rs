//! The netlink shell: observes what this instance has in each namespace and makes the changes
//! `diff` asks for, one rtnetlink socket per namespace, opened from a thread inside it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use crate::Error;
use crate::desired::{Desired, Ipv4Cidr, Mac, NodeConfig};
use crate::diff::{Change, diff};
use crate::netns;
use crate::nft::NftRunner;
use crate::plan::{Link, LinkKey, LinkKind, Masquerade, Naming, Netns, State, Vxlan, plan};
use crate::scope::unchanged_tasks;

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// The main routing table's id.
const RT_TABLE_MAIN: u8 = 254;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

/// Whether a netlink failure means the thing is already gone.
fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if [ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL].contains(&m.raw_code().abs()))
}

/// One netlink connection per namespace, opened when first needed.
struct Handles<'a> {
    config: &'a NodeConfig,
    open: HashMap<Netns, Handle>,
}

impl<'a> Handles<'a> {
    fn new(config: &'a NodeConfig) -> Handles<'a> {
        Handles {
            config,
            open: HashMap::new(),
        }
    }

    fn path(&self, ns: &Netns) -> Option<PathBuf> {
        match ns {
            Netns::Underlay => self.config.underlay_netns.clone(),
            Netns::Named(name) => Some(netns::path(name)),
            Netns::Task(p) => Some(p.clone()),
        }
    }

    fn get(&mut self, ns: &Netns) -> Result<Handle, Error> {
        if let Some(h) = self.open.get(ns) {
            return Ok(h.clone());
        }
        let runtime = tokio::runtime::Handle::current();
        let path = self.path(ns);
        // The socket belongs to the namespace of the thread that opens it; it registers with
        // this runtime's reactor, so the thread enters the runtime first.
        let (conn, handle) = netns::run_in(path.as_deref(), move || {
            let _guard = runtime.enter();
            rtnetlink::new_connection().map(|(c, h, _)| (c, h))
        })?
        .map_err(|source| Error::Io {
            what: format!("open a netlink socket in {ns:?}"),
            source,
        })?;
        tokio::spawn(conn);
        self.open.insert(ns.clone(), handle.clone());
        Ok(handle)
    }
}

/// A link as netlink reports it, with its index for later requests.
struct SeenLink {
    index: u32,
    name: String,
    link: Link,
    controller: Option<u32>,
}

async fn dump_links(h: &Handle) -> Result<Vec<SeenLink>, Error> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))?;
    let mut out = Vec::new();
    for msg in msgs {
        let mut name = None;
        let mut mtu = 0;
        let mut mac = None;
        let mut controller = None;
        let mut kind = None;
        let mut vx = Vxlan {
            vni: 0,
            port: 0,
            local: Ipv4Addr::UNSPECIFIED,
            learning: true,
            proxy: false,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(m) => mtu = *m,
                LinkAttribute::Address(a) => {
                    if let Ok(a) = <[u8; 6]>::try_from(a.as_slice()) {
                        mac = Some(Mac(a));
                    }
                }
                LinkAttribute::Controller(c) => controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                for d in data {
                                    match d {
                                        InfoVxlan::Id(v) => vx.vni = *v,
                                        InfoVxlan::Port(p) => vx.port = *p,
                                        InfoVxlan::Local(l) => vx.local = *l,
                                        InfoVxlan::Learning(l) => vx.learning = *l,
                                        InfoVxlan::Proxy(p) => vx.proxy = *p,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        let kind = match kind {
            Some(InfoKind::Bridge) => LinkKind::Bridge,
            Some(InfoKind::Veth) => LinkKind::Veth,
            Some(InfoKind::Vxlan) => LinkKind::Vxlan(vx),
            Some(other) => LinkKind::Other(format!("{other:?}")),
            None => LinkKind::Other("none".into()),
        };
        out.push(SeenLink {
            index: msg.header.index,
            name,
            link: Link {
                kind,
                mtu,
                mac,
                master: None,
                up: msg.header.flags.contains(LinkFlags::Up),
            },
            controller,
        });
    }
    // Masters by name, within the namespace.
    let names: HashMap<u32, String> = out.iter().map(|l| (l.index, l.name.clone())).collect();
    for l in &mut out {
        l.link.master = l.controller.and_then(|c| names.get(&c).cloned());
    }
    Ok(out)
}

async fn dump_addresses(h: &Handle) -> Result<Vec<(u32, Ipv4Cidr)>, Error> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    let mut out = Vec::new();
    for msg in msgs {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(a)) = attr {
                out.push((
                    msg.header.index,
                    Ipv4Cidr {
                        addr: *a,
                        prefix: msg.header.prefix_len,
                    },
                ));
            }
        }
    }
    Ok(out)
}

fn neighbour_parts(msg: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<Mac>) {
    let mut dst = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
            // FDB entries (family bridge) carry the VTEP as bare bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                if let Ok(b) = <[u8; 4]>::try_from(b.as_slice()) {
                    dst = Some(Ipv4Addr::from(b));
                }
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                if let Ok(l) = <[u8; 6]>::try_from(l.as_slice()) {
                    mac = Some(Mac(l));
                }
            }
            _ => {}
        }
    }
    (dst, mac)
}

/// The VXLAN devices' own permanent FDB entries (MAC → VTEP) and permanent neighbour entries.
async fn dump_entries(
    h: &Handle,
    vxlans: &HashMap<u32, LinkKey>,
    state: &mut State,
) -> Result<(), Error> {
    let fdb: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list FDB entries"))?;
    for msg in fdb {
        let Some(key) = vxlans.get(&msg.header.ifindex) else {
            continue;
        };
        if !msg.header.flags.contains(NeighbourFlags::Own)
            || msg.header.state != NeighbourState::Permanent
        {
            continue;
        }
        if let (Some(vtep), Some(mac)) = neighbour_parts(&msg) {
            state.fdb.insert((key.clone(), mac), vtep);
        }
    }
    let neigh: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list neighbour entries"))?;
    for msg in neigh {
        let Some(key) = vxlans.get(&msg.header.ifindex) else {
            continue;
        };
        if msg.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(addr), Some(mac)) = neighbour_parts(&msg) {
            state.neigh.insert((key.clone(), addr), mac);
        }
    }
    Ok(())
}

async fn default_route(h: &Handle) -> Result<Option<(u32, Ipv4Addr)>, Error> {
    let routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("list routes"))?;
    for r in routes {
        if r.header.destination_prefix_length != 0 || r.header.table != RT_TABLE_MAIN {
            continue;
        }
        let mut oif = None;
        let mut gw = None;
        for attr in &r.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                _ => {}
            }
        }
        if let (Some(oif), Some(gw)) = (oif, gw) {
            return Ok(Some((oif, gw)));
        }
    }
    Ok(None)
}

/// Adds one namespace's links (those `keep` accepts), their addresses and, in network
/// namespaces, the VXLAN entries, to `state`.
async fn observe_ns(
    h: &Handle,
    ns: &Netns,
    keep: impl Fn(&str) -> bool,
    state: &mut State,
) -> Result<HashMap<u32, String>, Error> {
    let links = dump_links(h).await?;
    let mut kept = HashMap::new();
    let mut vxlans = HashMap::new();
    for l in links {
        if !keep(&l.name) {
            continue;
        }
        let key = LinkKey {
            ns: ns.clone(),
            name: l.name.clone(),
        };
        if matches!(l.link.kind, LinkKind::Vxlan(_)) {
            vxlans.insert(l.index, key.clone());
        }
        kept.insert(l.index, l.name.clone());
        state.links.insert(key, l.link);
    }
    for (index, addr) in dump_addresses(h).await? {
        if let Some(name) = kept.get(&index) {
            state.addresses.insert((
                LinkKey {
                    ns: ns.clone(),
                    name: name.clone(),
                },
                addr,
            ));
        }
    }
    if !vxlans.is_empty() {
        dump_entries(h, &vxlans, state).await?;
    }
    Ok(kept)
}

/// Runs `script` as one nft transaction in the namespace at `ns` (`None`: the caller's).
pub(crate) fn nft_run(ns: Option<&Path>, table: &str, script: &str) -> Result<(), Error> {
    NftRunner::default()
        .run(ns, script)
        .map_err(|source| Error::Nft {
            table: table.to_string(),
            source,
        })
}

/// The comment the masquerade rule carries: observation reads the rule's settings back from it.
fn masquerade_comment(m: &Masquerade) -> String {
    format!("shoal masquerade source={} bridge={}", m.source, m.bridge)
}

/// The comment of the table's hairpin rule: a table without it is an older one, made again.
const HAIRPIN_COMMENT: &str = "shoal hairpin";

fn parse_masquerade(table: &str, listing: &str) -> Option<Masquerade> {
    if !listing.contains(HAIRPIN_COMMENT) {
        return None;
    }
    let rest = listing.split("shoal masquerade source=").nth(1)?;
    let (source, rest) = rest.split_once(" bridge=")?;
    let bridge: String = rest
        .chars()
        .take_while(|c| *c != '"' && !c.is_whitespace())
        .collect();
    let (addr, prefix) = source.split_once('/')?;
    Some(Masquerade {
        table: table.to_string(),
        source: Ipv4Cidr::new(addr.parse().ok()?, prefix.parse().ok()?).ok()?,
        bridge,
    })
}

/// The sysctl of a link's reverse-path filter, as the thread reading it sees its namespace.
fn rp_filter_path(link: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf")
        .join(link)
        .join("rp_filter")
}

/// The CPU mask that spreads a link's received packets (receive packet steering), as a thread
/// with that link's namespace's sysfs sees it.
fn rps_cpus_path(link: &str) -> PathBuf {
    Path::new("/sys/class/net")
        .join(link)
        .join("queues/rx-0/rps_cpus")
}

/// A set of CPUs as the kernel's mask files take it: hex words of 32 CPUs, comma-separated, the
/// highest first ("3" for CPUs 0 and 1; "1,00000000" for CPU 32 alone).
fn cpu_mask(cpus: impl IntoIterator<Item = usize>) -> String {
    let mut words: Vec<u32> = Vec::new();
    for cpu in cpus {
        if words.len() <= cpu / 32 {
            words.resize(cpu / 32 + 1, 0);
        }
        words[cpu / 32] |= 1 << (cpu % 32);
    }
    let mut text = format!("{:x}", words.pop().unwrap_or(0));
    for word in words.iter().rev() {
        text.push_str(&format!(",{word:08x}"));
    }
    text
}

/// The CPUs in a kernel CPU list ("0-3,8,10-11"; empty for none), or the part that is not one.
fn parse_cpu_list(list: &str) -> Result<BTreeSet<usize>, String> {
    let mut cpus = BTreeSet::new();
    for part in list.trim().split(',').filter(|part| !part.is_empty()) {
        let cpu = |text: &str| text.parse::<usize>().map_err(|_| part.to_string());
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(cpu(first)?..=cpu(last)?),
            None => {
                cpus.insert(cpu(part)?);
            }
        }
    }
    Ok(cpus)
}

/// Where the node's packets are steered: its online CPUs less those isolated from the kernel's
/// own work (`isolcpus`), all of them if that leaves none. Not the daemon's affinity: a daemon
/// kept to one CPU would otherwise funnel every task's packets onto that one.
fn node_cpus() -> Result<String, Error> {
    let list = |name: &str| -> Result<BTreeSet<usize>, Error> {
        let path = Path::new("/sys/devices/system/cpu").join(name);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "isolated" => {
                String::new()
            }
            other => other.map_err(|source| Error::Io {
                what: format!("read {}", path.display()),
                source,
            })?,
        };
        parse_cpu_list(&text).map_err(|part| Error::Io {
            what: format!(
                "read {}: {part:?} is not a CPU or a range of them",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })
    };
    let online = list("online")?;
    let isolated = list("isolated")?;
    let housekeeping: Vec<usize> = online.difference(&isolated).copied().collect();
    Ok(if housekeeping.is_empty() {
        cpu_mask(online)
    } else {
        cpu_mask(housekeeping)
    })
}

/// Whether the calling thread (with its namespace's sysfs) sees `link` steering its received
/// packets to some CPU, or has no such switch (a kernel without receive packet steering).
fn steered(link: &str) -> bool {
    optional_switch_reads(rps_cpus_path(link), names_a_cpu)
}

/// Whether the switch of an optional kernel feature at `path` holds a value `wanted` accepts
/// (trimmed). One that can't be read counts as in place: a kernel without the feature has
/// nothing to set.
fn optional_switch_reads(path: impl AsRef<Path>, wanted: impl Fn(&str) -> bool) -> bool {
    std::fs::read_to_string(path).map_or(true, |value| wanted(value.trim()))
}

/// Writes `value` to the switch of an optional kernel feature at `path`; a missing one (the
/// kernel has no such feature) is left as it is.
fn set_optional_switch(path: impl AsRef<Path>, value: &str) -> std::io::Result<()> {
    match std::fs::write(path, value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether a CPU mask as the kernel writes it ("00000000,00000003\n") has any CPU in it.
fn names_a_cpu(mask: &str) -> bool {
    mask.trim()
        .split(',')
        .any(|word| u32::from_str_radix(word, 16).is_ok_and(|w| w != 0))
}

/// The sysctls that make a namespace's bridges hand frames to netfilter, one per family.
const BRIDGE_NF_CALLS: [&str; 3] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "/proc/sys/net/bridge/bridge-nf-call-arptables",
];

/// Whether the calling thread's namespace bridges frames without netfilter: every switch off,
/// or missing where the kernel has no `br_netfilter`.
fn bridged_frames_unfiltered() -> bool {
    BRIDGE_NF_CALLS
        .iter()
        .all(|path| optional_switch_reads(path, |value| value == "0"))
}

/// Turns netfilter off for the frames the bridges of namespace `ns` (a `/run/netns` path)
/// forward: each switch to 0, a missing one (no `br_netfilter`) left as it is. The data plane
/// does this in each network's namespace; test harnesses do it on the switch standing for the
/// network between machines.
pub fn unfilter_bridged_frames(ns: &Path) -> Result<(), Error> {
    netns::run_in(Some(ns), || {
        BRIDGE_NF_CALLS
            .iter()
            .try_for_each(|path| set_optional_switch(path, "0"))
    })?
    .map_err(|source| Error::Io {
        what: format!(
            "keep netfilter off the bridged frames in namespace {}",
            ns.display()
        ),
        source,
    })
}

/// Adds to `state` the links of namespace `ns` (at `path`) that spread what they receive over
/// the CPUs; only those `plan` wants steered and `state` already holds are read.
fn observe_steering(
    plan: &State,
    ns: &Netns,
    path: Option<&Path>,
    state: &mut State,
) -> Result<(), Error> {
    let asked: Vec<LinkKey> = plan
        .steered_links
        .iter()
        .filter(|key| key.ns == *ns && state.links.contains_key(*key))
        .cloned()
        .collect();
    if !asked.is_empty() {
        let seen = netns::run_in_with_sysfs(path, move || {
            asked
                .into_iter()
                .filter(|key| steered(&key.name))
                .collect::<Vec<_>>()
        })?;
        state.steered_links.extend(seen);
    }
    Ok(())
}

/// What this instance has on the node, looked at where `plan` says things should be and
/// wherever its prefix marks something as its own.
pub async fn observe(config: &NodeConfig, plan: &State) -> Result<State, Error> {
    let naming = Naming::new(&config.prefix)?;
    let mut handles = Handles::new(config);
    let mut state = State::default();

    let underlay = handles.get(&Netns::Underlay)?;
    let link_prefix = naming.link_prefix();
    observe_ns(
        &underlay,
        &Netns::Underlay,
        |n| n.starts_with(&link_prefix),
        &mut state,
    )
    .await?;
    let table = naming.nft_table();
    let underlay_path = config.underlay_netns.as_deref();
    observe_steering(plan, &Netns::Underlay, underlay_path, &mut state)?;
    state.forwarding = netns::run_in(underlay_path, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|s| s.trim() == "1")
    })?;
    // Only the links the plan wants loose are read; a missing link reads as not loose.
    let asked: Vec<String> = plan.loose_rp_filter.iter().cloned().collect();
    state.loose_rp_filter = netns::run_in(underlay_path, move || {
        asked
            .into_iter()
            .filter(|name| {
                std::fs::read_to_string(rp_filter_path(name)).is_ok_and(|s| s.trim() == "2")
            })
            .collect()
    })?;
    // A table that is missing or can't be listed reads as no masquerade; applying makes it.
    state.masquerade = NftRunner::default()
        .list(underlay_path, false, &["table", "ip", &table])
        .ok()
        .flatten()
        .and_then(|l| parse_masquerade(&table, &l));

    for name in netns::list(&naming.netns_prefix())? {
        if !netns::is_namespace(&netns::path(&name)) {
            continue;
        }
        state.namespaces.insert(name.clone());
        if plan.unfiltered_bridges.contains(&name)
            && netns::run_in(Some(&netns::path(&name)), bridged_frames_unfiltered)?
        {
            state.unfiltered_bridges.insert(name.clone());
        }
        let ns = Netns::Named(name.clone());
        let h = handles.get(&ns)?;
        observe_ns(&h, &ns, |n| n != "lo", &mut state).await?;
        observe_steering(plan, &ns, Some(&netns::path(&name)), &mut state)?;
    }

    let mut task_links: BTreeMap<&Netns, BTreeSet<&str>> = BTreeMap::new();
    for key in plan.links.keys() {
        if let Netns::Task(_) = key.ns {
            task_links.entry(&key.ns).or_default().insert(&key.name);
        }
    }
    for (ns, names) in task_links {
        let Netns::Task(path) = ns else { continue };
        // A task whose namespace is gone has nothing to observe; the worker drops it next.
        if !path.exists() {
            continue;
        }
        let h = handles.get(ns)?;
        let kept = observe_ns(&h, ns, |n| names.contains(n), &mut state).await?;
        if let Some((oif, gw)) = default_route(&h).await?
            && let Some(dev) = kept.get(&oif)
        {
            state.default_routes.insert(ns.clone(), (dev.clone(), gw));
        }
    }
    Ok(state)
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, Error> {
    let found = h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(Error::Netlink {
            what: format!("look up link {name}"),
            source: e,
        }),
    }
}

async fn require_index(h: &Handle, key: &LinkKey) -> Result<u32, Error> {
    index_of(h, &key.name).await?.ok_or_else(|| Error::Io {
        what: format!("find link {} in {:?}", key.name, key.ns),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// Brings a link's MTU, MAC, master and state to `link`'s.
async fn set_link(h: &Handle, key: &LinkKey, link: &Link) -> Result<(), Error> {
    let index = require_index(h, key).await?;
    let mut msg = LinkUnspec::new_with_index(index).mtu(link.mtu);
    if let Some(mac) = link.mac {
        msg = msg.address(mac.0.to_vec());
    }
    msg = match &link.master {
        Some(master) => {
            let m = require_index(
                h,
                &LinkKey {
                    ns: key.ns.clone(),
                    name: master.clone(),
                },
            )
            .await?;
            msg.controller(m)
        }
        None => msg.nocontroller(),
    };
    msg = if link.up { msg.up() } else { msg.down() };
    h.link()
        .set(msg.build())
        .execute()
        .await
        .map_err(nl(format!("set up link {} in {:?}", key.name, key.ns)))
}

/// Sets one attribute of the bridge port `key`, `what` saying which for the error.
async fn set_bridge_port(
    h: &Handle,
    key: &LinkKey,
    setting: InfoBridgePort,
    what: &str,
) -> Result<(), Error> {
    let index = require_index(h, key).await?;
    let port = LinkBridgePort::new(index).append_info_data(setting).build();
    h.link()
        .set_port(port)
        .execute()
        .await
        .map_err(nl(format!("{what} on {} in {:?}", key.name, key.ns)))
}

/// Moves the link `index` of `from` into `to`, renamed `name`.
async fn move_link(
    handles: &mut Handles<'_>,
    from: &Handle,
    index: u32,
    to: &Netns,
    name: &str,
) -> Result<(), Error> {
    let target = handles.path(to);
    let file = match &target {
        Some(p) => File::open(p).map_err(|source| Error::Io {
            what: format!("open network namespace {}", p.display()),
            source,
        })?,
        None => File::open("/proc/self/ns/net").map_err(|source| Error::Io {
            what: "open this process's network namespace".into(),
            source,
        })?,
    };
    from.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(file.as_raw_fd())
                .name(name.to_string())
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("move link {name} into {to:?}")))
}

async fn make(
    handles: &mut Handles<'_>,
    config: &NodeConfig,
    change: &Change,
) -> Result<(), Error> {
    match change {
        Change::CreateNamespace(name) => netns::create(name),
        Change::DeleteNamespace(name) => netns::delete(name),
        Change::DeleteLink(key) => {
            let h = handles.get(&key.ns)?;
            let Some(index) = index_of(&h, &key.name).await? else {
                return Ok(());
            };
            match h.link().del(index).execute().await {
                Err(e) if !is_gone(&e) => Err(Error::Netlink {
                    what: format!("delete link {} in {:?}", key.name, key.ns),
                    source: e,
                }),
                _ => Ok(()),
            }
        }
        Change::CreateLink { key, link } => {
            match &link.kind {
                LinkKind::Vxlan(vx) => {
                    // Made in the underlay, so its UDP socket lives there, then moved.
                    let underlay = handles.get(&Netns::Underlay)?;
                    underlay
                        .link()
                        .add(
                            LinkVxlan::new(&key.name, vx.vni)
                                .port(vx.port)
                                .local(vx.local)
                                .learning(vx.learning)
                                .proxy(vx.proxy)
                                .mtu(link.mtu)
                                .build(),
                        )
                        .execute()
                        .await
                        .map_err(nl(format!("create VXLAN device {}", key.name)))?;
                    if key.ns != Netns::Underlay {
                        let index = require_index(
                            &underlay,
                            &LinkKey {
                                ns: Netns::Underlay,
                                name: key.name.clone(),
                            },
                        )
                        .await?;
                        move_link(handles, &underlay, index, &key.ns, &key.name).await?;
                    }
                    let h = handles.get(&key.ns)?;
                    set_link(&h, key, link).await?;
                    // The bridge learns no MAC on the device: remote MACs are the plan's
                    // permanent FDB entries on the device itself, so a removed or moved task
                    // leaves no learned entry on the bridge pointing at the tunnel.
                    return set_bridge_port(
                        &h,
                        key,
                        InfoBridgePort::Learning(false),
                        "turn off bridge learning",
                    )
                    .await;
                }
                LinkKind::Bridge => {
                    let h = handles.get(&key.ns)?;
                    h.link()
                        .add(LinkBridge::new(&key.name).mtu(link.mtu).build())
                        .execute()
                        .await
                        .map_err(nl(format!("create bridge {}", key.name)))?;
                }
                other => {
                    return Err(Error::Io {
                        what: format!("create link {} of kind {other:?}", key.name),
                        source: std::io::Error::from(std::io::ErrorKind::Unsupported),
                    });
                }
            }
            let h = handles.get(&key.ns)?;
            set_link(&h, key, link).await
        }
        Change::CreateVeth {
            key,
            link,
            peer,
            peer_link,
        } => {
            let h = handles.get(&key.ns)?;
            h.link()
                .add(
                    LinkVeth::new(&key.name, &peer.temp_name)
                        .mtu(link.mtu)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl(format!("create veth {}", key.name)))?;
            let temp = LinkKey {
                ns: key.ns.clone(),
                name: peer.temp_name.clone(),
            };
            let index = require_index(&h, &temp).await?;
            move_link(handles, &h, index, &peer.key.ns, &peer.key.name).await?;
            set_link(&h, key, link).await?;
            // A task's leg on the gateway bridge may send a frame back out of the port it came
            // in by: where the kernel runs bridged frames through netfilter, a connection from
            // the task to a published port of its own node, DNATed to a task on the same bridge
            // (itself included), is bridged back that way.
            if link.master.as_deref() == Some(Naming::new(&config.prefix)?.gwbridge().as_str()) {
                set_bridge_port(
                    &h,
                    key,
                    InfoBridgePort::HairpinMode(true),
                    "turn on hairpin mode",
                )
                .await?;
            }
            let far = handles.get(&peer.key.ns)?;
            set_link(&far, &peer.key, peer_link).await
        }
        Change::SetLink { key, link } => {
            let h = handles.get(&key.ns)?;
            set_link(&h, key, link).await
        }
        Change::AddAddress { link, addr } => {
            let h = handles.get(&link.ns)?;
            let index = require_index(&h, link).await?;
            h.address()
                .add(index, IpAddr::V4(addr.addr), addr.prefix)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add {addr} to {}", link.name)))
        }
        Change::DelAddress { link, addr } => {
            let h = handles.get(&link.ns)?;
            let Some(index) = index_of(&h, &link.name).await? else {
                return Ok(());
            };
            let mut msg = AddressMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.prefix_len = addr.prefix;
            msg.header.index = index;
            msg.attributes
                .push(AddressAttribute::Local(IpAddr::V4(addr.addr)));
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V4(addr.addr)));
            ok_if_gone(
                h.address().del(msg).execute().await,
                format!("remove {addr} from {}", link.name),
            )
        }
        Change::ReplaceRoute { ns, dev, gateway } => {
            let h = handles.get(ns)?;
            let index = require_index(
                &h,
                &LinkKey {
                    ns: ns.clone(),
                    name: dev.clone(),
                },
            )
            .await?;
            h.route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(*gateway)
                        .output_interface(index)
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(nl(format!("set the default route via {gateway} on {dev}")))
        }
        Change::DelRoute { ns, dev, gateway } => {
            let h = handles.get(ns)?;
            let Some(index) = index_of(&h, dev).await? else {
                return Ok(());
            };
            ok_if_gone(
                h.route()
                    .del(
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .gateway(*gateway)
                            .output_interface(index)
                            .build(),
                    )
                    .execute()
                    .await,
                format!("remove the default route via {gateway}"),
            )
        }
        Change::UnfilterBridge(name) => unfilter_bridged_frames(&netns::path(name)),
        Change::EnableForwarding => netns::run_in(config.underlay_netns.as_deref(), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?
        .map_err(|source| Error::Io {
            what: "enable IPv4 forwarding in the underlay".into(),
            source,
        }),
        Change::LooseRpFilter(name) => {
            let path = rp_filter_path(name);
            netns::run_in(config.underlay_netns.as_deref(), move || {
                std::fs::write(path, "2")
            })?
            .map_err(|source| Error::Io {
                what: format!("make {name}'s reverse-path filter loose in the underlay"),
                source,
            })
        }
        Change::SteerLink(key) => {
            let mask = node_cpus()?;
            let path = rps_cpus_path(&key.name);
            // A kernel without receive packet steering: the packets stay where they land.
            netns::run_in_with_sysfs(handles.path(&key.ns).as_deref(), move || {
                set_optional_switch(path, &mask)
            })?
            .map_err(|source| Error::Io {
                what: format!(
                    "spread what {} receives over the node's CPUs in {:?}",
                    key.name, key.ns
                ),
                source,
            })
        }
        Change::SetMasquerade(m) => {
            // Declaring the table first makes the delete succeed when it is not there, so the
            // whole script replaces it atomically either way. The second rule is the hairpin: a
            // task's connection DNATed back onto the bridge (a published port of this node,
            // served by a task here, itself included) is masqueraded too, or the answer would
            // go from task to task on the bridge, past the conntrack entry that undoes the DNAT.
            let script = format!(
                "table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {src} oifname != \"{br}\" masquerade comment \"{c}\"\n    ip saddr {src} oifname \"{br}\" ct status dnat masquerade comment \"{h}\"\n  }}\n}}\n",
                t = m.table,
                src = m.source,
                br = m.bridge,
                c = masquerade_comment(m),
                h = HAIRPIN_COMMENT,
            );
            nft_run(config.underlay_netns.as_deref(), &m.table, &script)
        }
        Change::RemoveMasquerade(table) => nft_run(
            config.underlay_netns.as_deref(),
            table,
            &format!("table ip {table} {{}}\ndelete table ip {table}\n"),
        ),
        Change::ReplaceFdb { link, mac, vtep } => {
            let h = handles.get(&link.ns)?;
            let index = require_index(&h, link).await?;
            h.neighbours()
                .add_bridge(index, &mac.0)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(IpAddr::V4(*vtep))
                .replace()
                .execute()
                .await
                .map_err(nl(format!("set FDB entry {mac} -> {vtep}")))
        }
        Change::DelFdb { link, mac, vtep } => {
            let h = handles.get(&link.ns)?;
            let Some(index) = index_of(&h, &link.name).await? else {
                return Ok(());
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Bridge;
            msg.header.ifindex = index;
            msg.header.flags = NeighbourFlags::Own;
            msg.header.state = NeighbourState::Permanent;
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    *vtep,
                )));
            ok_if_gone(
                h.neighbours().del(msg).execute().await,
                format!("remove FDB entry {mac} -> {vtep}"),
            )
        }
        Change::ReplaceNeigh { link, addr, mac } => {
            let h = handles.get(&link.ns)?;
            let index = require_index(&h, link).await?;
            h.neighbours()
                .add(index, IpAddr::V4(*addr))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("set neighbour entry {addr} -> {mac}")))
        }
        Change::DelNeigh { link, addr, .. } => {
            let h = handles.get(&link.ns)?;
            let Some(index) = index_of(&h, &link.name).await? else {
                return Ok(());
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = AddressFamily::Inet;
            msg.header.ifindex = index;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    *addr,
                )));
            ok_if_gone(
                h.neighbours().del(msg).execute().await,
                format!("remove neighbour entry {addr}"),
            )
        }
    }
}

fn ok_if_gone(r: Result<(), rtnetlink::Error>, what: String) -> Result<(), Error> {
    match r {
        Err(e) if !is_gone(&e) => Err(Error::Netlink { what, source: e }),
        _ => Ok(()),
    }
}

/// Brings up `lo` in the namespace at `ns`. A namespace made for a task rather than by a
/// container runtime starts with it down, and the task's embedded DNS listens on 127.0.0.11.
pub async fn loopback_up(ns: &Path) -> Result<(), Error> {
    let runtime = tokio::runtime::Handle::current();
    let (conn, h) = netns::run_in(Some(ns), move || {
        let _guard = runtime.enter();
        rtnetlink::new_connection().map(|(c, h, _)| (c, h))
    })?
    .map_err(|source| Error::Io {
        what: format!("open a netlink socket in {}", ns.display()),
        source,
    })?;
    let connection = tokio::spawn(conn);
    let done = async {
        let index = index_of(&h, "lo").await?.ok_or_else(|| Error::Io {
            what: format!("find lo in {}", ns.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring up lo in {}", ns.display())))
    }
    .await;
    connection.abort();
    done
}

/// Makes `changes` in order. One that fails (a task whose namespace went away meanwhile) does
/// not hold up the others; the failures are reported together, and the next reconcile retries
/// whatever is still missing.
pub async fn apply(config: &NodeConfig, changes: &[Change]) -> Result<(), Error> {
    let mut handles = Handles::new(config);
    let mut failures = Vec::new();
    for change in changes {
        if let Err(e) = make(&mut handles, config, change).await {
            failures.push(format!("{change:?}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Apply {
            total: changes.len(),
            failures,
        })
    }
}

/// Plans `desired`, observes the node, and makes the difference; returns the changes made
/// (none when the node already matches, as after a restart).
pub async fn reconcile(desired: &Desired) -> Result<Vec<Change>, Error> {
    let planned = plan(desired)?;
    let observed = observe(&desired.config, &planned).await?;
    let changes = diff(&planned, &observed);
    apply(&desired.config, &changes).await?;
    Ok(changes)
}

/// [`reconcile`] for a node that applied `last` without error: the task namespaces whose part
/// of the plan is unchanged are trusted to match it and are neither looked into nor touched
/// (`scope`), so a new task costs the same however many the node has. Everything outside task
/// namespaces is observed as always.
pub async fn reconcile_since(last: &Desired, desired: &Desired) -> Result<Vec<Change>, Error> {
    let planned = plan(desired)?;
    let unchanged = unchanged_tasks(&plan(last)?, &planned);
    let narrowed = planned.without_tasks(&planned, &unchanged);
    let observed = observe(&desired.config, &narrowed)
        .await?
        .without_tasks(&planned, &unchanged);
    let changes = diff(&narrowed, &observed);
    apply(&desired.config, &changes).await?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_mask_is_hex_words_of_32_cpus_the_highest_first() {
        assert_eq!(cpu_mask([0, 1]), "3");
        assert_eq!(cpu_mask([0, 1, 2, 3, 4, 5, 6, 7]), "ff");
        assert_eq!(cpu_mask([32]), "1,00000000");
        assert_eq!(cpu_mask([1, 33, 64]), "1,00000002,00000002");
        assert_eq!(cpu_mask([]), "0");
    }

    #[test]
    fn a_cpu_list_is_cpus_and_ranges_of_them() {
        let cpus = |list: &str| parse_cpu_list(list).map(|set| set.into_iter().collect::<Vec<_>>());
        assert_eq!(cpus("0-1\n"), Ok(vec![0, 1]));
        assert_eq!(cpus("0-2,8,10-11"), Ok(vec![0, 1, 2, 8, 10, 11]));
        assert_eq!(cpus("\n"), Ok(vec![]));
        assert_eq!(cpus("0-x"), Err("0-x".to_string()));
    }

    #[test]
    fn a_mask_names_a_cpu_when_any_word_is_not_zero() {
        assert!(names_a_cpu("3\n"));
        assert!(names_a_cpu("00000000,00000100\n"));
        assert!(!names_a_cpu("00000000,00000000\n"));
        assert!(!names_a_cpu("0\n"));
    }
}
