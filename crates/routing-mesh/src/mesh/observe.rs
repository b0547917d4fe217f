//! Reads what the mesh's table holds from `nft -j list table` (pure: the apply shell runs nft),
//! so a restarted daemon changes only the elements that differ instead of starting over.
//!
//! The table counts as the layout only when its maps, sets and chains are exactly the layout's
//! (names, hooks, priorities, rule counts, the numgen modulus) and every element reads back;
//! anything else is [`Observed::OtherLayout`], replaced whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;

use super::plan::{Elements, Observed, policy_of_chain};
use crate::vip::{Protocol, SLOTS};

/// A base chain's type, hook and priority.
type BaseChain = (&'static str, &'static str, i64);

/// The layout's chains: name → (base chain type, hook, priority) or `None` for a regular chain,
/// and its number of rules.
const CHAINS: [(&str, Option<BaseChain>, usize); 8] = [
    ("prerouting", Some(("nat", "prerouting", -100)), 2),
    ("output", Some(("nat", "output", -100)), 1),
    ("prefer_local", None, 2),
    ("local_only", None, 1),
    ("cluster", None, 1),
    ("from_peer", None, 2),
    ("postrouting", Some(("nat", "postrouting", 100)), 2),
    ("input", Some(("filter", "input", 0)), 3),
];

/// The chains whose rule DNATs through a slot map, which must use the layout's modulus.
const SLOT_CHAINS: [&str; 4] = ["prefer_local", "local_only", "cluster", "from_peer"];

/// Reads nft's JSON listing of the mesh's table. `None` when it is not JSON of nft's shape at all.
pub fn observe(listing: &str) -> Option<Observed> {
    crate::table::observe(listing)
}

/// The mesh layout's elements, when `objects` are exactly its maps, sets and chains.
pub(super) fn read_layout(objects: &[Value]) -> Option<Elements> {
    let mut elements = Elements::default();
    // The peers' verdicts, which must name the same nodes as `peer_source` (`elements.peers`).
    let mut peer_verdicts = BTreeSet::new();
    let mut sets = Vec::new();
    let mut chains = Vec::new();
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    for object in objects {
        let (kind, body) = object.as_object().and_then(|o| o.iter().next())?;
        match kind.as_str() {
            "metainfo" | "table" => {}
            "map" | "set" => {
                let name = body.get("name").and_then(Value::as_str)?;
                read_elements(name, body, &mut elements, &mut peer_verdicts)?;
                sets.push(name.to_owned());
            }
            "chain" => {
                let name = body.get("name").and_then(Value::as_str)?;
                let (_, base, _) = CHAINS.iter().find(|(chain, ..)| *chain == name)?;
                let found = match body.get("hook") {
                    None => None,
                    Some(hook) => Some((
                        body.get("type")?.as_str()?,
                        hook.as_str()?,
                        body.get("prio")?.as_i64()?,
                    )),
                };
                if found != *base {
                    return None;
                }
                chains.push(name.to_owned());
            }
            "rule" => {
                let chain = body.get("chain").and_then(Value::as_str)?;
                // The modulus is the one thing of a rule a new layout would likely change.
                if SLOT_CHAINS.contains(&chain)
                    && body.to_string().contains("numgen")
                    && !body.to_string().contains(&format!("\"mod\":{SLOTS}"))
                {
                    return None;
                }
                *rules.entry(chain.to_owned()).or_default() += 1;
            }
            _ => return None,
        }
    }
    sets.sort();
    chains.sort();
    let mut all_chains: Vec<String> = CHAINS.iter().map(|(name, ..)| (*name).to_owned()).collect();
    all_chains.sort();
    let rule_counts_match = CHAINS
        .iter()
        .all(|(name, _, count)| rules.get(*name).copied().unwrap_or(0) == *count);
    let layout_sets = [
        "cluster",
        "cluster_ports",
        "local",
        "overlay",
        "overlay_ports",
        "peer_source",
        "peers",
        "ports",
        "published",
    ];
    let peers_agree = elements.peers.keys().copied().eq(peer_verdicts);
    (sets == layout_sets && chains == all_chains && rule_counts_match && peers_agree)
        .then_some(elements)
}

fn read_elements(
    name: &str,
    body: &Value,
    elements: &mut Elements,
    peer_verdicts: &mut BTreeSet<Ipv4Addr>,
) -> Option<()> {
    let Some(items) = body.get("elem") else {
        return Some(());
    };
    for item in items.as_array()? {
        match name {
            "published" => {
                let (key, verdict) = pair(item)?;
                let chain = verdict.get("goto")?.get("target")?.as_str()?;
                elements
                    .published
                    .insert(port_key(key)?, policy_of_chain(chain)?);
            }
            "local" | "cluster" | "overlay" => {
                let (key, data) = pair(item)?;
                let [protocol, port, slots] = concat::<3>(key)?;
                let (first, last) = slot_run(slots)?;
                let [address, target] = concat::<2>(data)?;
                let task =
                    SocketAddrV4::new(address_of(address)?, u16::try_from(target.as_u64()?).ok()?);
                let key = (protocol_of(protocol)?, port_of(port)?, first, last);
                let map = match name {
                    "local" => &mut elements.local,
                    "cluster" => &mut elements.cluster,
                    _ => &mut elements.overlay,
                };
                map.insert(key, task);
            }
            "cluster_ports" => {
                elements.cluster_ports.insert(port_key(item)?);
            }
            "overlay_ports" => {
                elements.overlay_ports.insert(port_key(item)?);
            }
            "peers" => {
                let (peer, verdict) = pair(item)?;
                let chain = verdict.get("goto")?.get("target")?.as_str()?;
                if chain != "from_peer" {
                    return None;
                }
                peer_verdicts.insert(address_of(peer)?);
            }
            "peer_source" => {
                let (peer, source) = pair(item)?;
                elements
                    .peers
                    .insert(address_of(peer)?, address_of(source)?);
            }
            "ports" => {
                elements.ports.insert(port_key(item)?);
            }
            _ => return None,
        }
    }
    Some(())
}

/// A map element: `[key, data]`.
fn pair(item: &Value) -> Option<(&Value, &Value)> {
    match item.as_array()?.as_slice() {
        [key, data] => Some((key, data)),
        _ => None,
    }
}

fn concat<const N: usize>(value: &Value) -> Option<[&Value; N]> {
    let parts: Vec<&Value> = value.get("concat")?.as_array()?.iter().collect();
    parts.try_into().ok()
}

fn port_key(value: &Value) -> Option<(Protocol, u16)> {
    let [protocol, port] = concat::<2>(value)?;
    Some((protocol_of(protocol)?, port_of(port)?))
}

fn protocol_of(value: &Value) -> Option<Protocol> {
    match value {
        Value::String(name) => Protocol::from_nft(name),
        Value::Number(number) => Protocol::from_nft(&number.to_string()),
        _ => None,
    }
}

fn address_of(value: &Value) -> Option<Ipv4Addr> {
    value.as_str()?.parse().ok()
}

fn port_of(value: &Value) -> Option<u16> {
    u16::try_from(value.as_u64()?).ok()
}

/// A slot run: `{"range": [first, last]}`, or a bare number for a run of one slot.
fn slot_run(value: &Value) -> Option<(u32, u32)> {
    let slot = |value: &Value| u32::try_from(value.as_u64()?).ok();
    match value.get("range") {
        Some(range) => match range.as_array()?.as_slice() {
            [first, last] => Some((slot(first)?, slot(last)?)),
            _ => None,
        },
        None => slot(value).map(|only| (only, only)),
    }
}
