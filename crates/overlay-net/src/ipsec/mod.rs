//! Encrypted overlays: transport-mode ESP (rfc4106(gcm(aes)), 128-bit ICV) between this node's
//! VTEP and each peer's, through the kernel's XFRM. This file is the pure core: what XFRM states
//! and policies a node should have for a keyring, and the ordered steps from what it has to that,
//! ordered so a key rotation drops no packet. `shell` runs the steps with `ip xfrm`.
//!
//! Selector choice: a peer that shares at least one encrypted network gets ALL its VXLAN
//! datagrams (UDP to the VXLAN port) encrypted, both ways, whatever their VNI. Docker instead
//! marks only the encrypted VNIs' packets (an iptables match on the VNI) and selects on the mark;
//! encrypting the unencrypted networks' traffic to such a peer as well costs some CPU but needs
//! no packet-matching rule per VNI, and a peer that shares only unencrypted networks still gets
//! plain VXLAN. The inbound policy per peer makes the kernel drop any VXLAN datagram from that
//! peer's address that did not arrive inside ESP, so the underlay cannot inject frames under a
//! peer's address; `guard_script` is the nftables table that also drops cleartext VXLAN for the
//! encrypted VNIs from any other source (a node on only unencrypted networks, or a spoofed one).

pub mod shell;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::Error;

/// How many keys a keyring holds at most, as the managers hand them out: the previous, the
/// current and the next.
pub const MAX_KEYS: usize = 3;

/// One key of the ring: its tag (the managers' key id, the same on every node) and the AES-128
/// key with the 4-byte salt rfc4106 takes after it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub tag: u32,
    pub key: [u8; 16],
    pub salt: [u8; 4],
}

impl std::fmt::Debug for Key {
    // Key material stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("tag", &self.tag).finish()
    }
}

/// The keys a node may receive with, and the one (`primary`, a tag) it sends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    pub keys: Vec<Key>,
    pub primary: u32,
}

/// What one node's encryption should be: its VTEP, the VTEPs of the peers that share an
/// encrypted network with it, the keyring, the VXLAN UDP port and the reqid every state and
/// policy of this instance carries (so observing and cleaning up touch only ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsecDesired {
    pub local: Ipv4Addr,
    pub remotes: Vec<Ipv4Addr>,
    pub keyring: Keyring,
    pub vxlan_port: u16,
    pub reqid: u32,
}

/// One XFRM state (security association): ESP from `src` to `dst` under `spi`, with the 20 bytes
/// of key and salt.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: [u8; 20],
}

impl std::fmt::Debug for Sa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sa({} -> {} spi {:#010x})", self.src, self.dst, self.spi)
    }
}

impl Sa {
    /// What the kernel identifies a state by (with the protocol, always ESP here).
    fn id(&self) -> (Ipv4Addr, Ipv4Addr, u32) {
        (self.src, self.dst, self.spi)
    }
}

/// Which way a policy applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    In,
    Out,
}

/// One XFRM policy: UDP from `src` to `dst` port `port` must be ESP. Outbound, `spi` picks the
/// state to send with (the primary key's); inbound it is 0, so any key of the ring is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Policy {
    pub dir: Dir,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub port: u16,
    pub spi: u32,
}

impl Policy {
    /// The selector the kernel identifies a policy by; `spi` is its content.
    fn id(&self) -> (Dir, Ipv4Addr, Ipv4Addr, u16) {
        (self.dir, self.src, self.dst, self.port)
    }
}

/// The XFRM states and policies a node has or should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpsecState {
    pub sas: BTreeSet<Sa>,
    pub policies: BTreeSet<Policy>,
}

/// One step towards the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpsecChange {
    AddSa(Sa),
    DeleteSa(Sa),
    AddPolicy(Policy),
    /// Replaces the policy with the same selector (a new outbound key) in one step.
    UpdatePolicy(Policy),
    DeletePolicy(Policy),
}

/// The SPI of the state carrying `src` → `dst` under key `tag`: the same on both nodes, so the
/// sender's outbound state and the receiver's inbound one meet. FNV-1a over the addresses and
/// the tag; SPIs 0–255 are reserved, so those move up by 256.
pub fn spi(src: Ipv4Addr, dst: Ipv4Addr, tag: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in src
        .octets()
        .into_iter()
        .chain(dst.octets())
        .chain(tag.to_be_bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h < 256 { h + 256 } else { h }
}

fn material(k: &Key) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[..16].copy_from_slice(&k.key);
    m[16..].copy_from_slice(&k.salt);
    m
}

fn check_keyring(ring: &Keyring) -> Result<(), Error> {
    if ring.keys.is_empty() || ring.keys.len() > MAX_KEYS {
        return Err(Error::IpsecKeyring(format!(
            "it holds {} keys; give 1 to {MAX_KEYS}",
            ring.keys.len()
        )));
    }
    let mut tags = BTreeSet::new();
    for k in &ring.keys {
        if !tags.insert(k.tag) {
            return Err(Error::IpsecKeyring(format!(
                "key tag {} is listed twice; give each key its own tag",
                k.tag
            )));
        }
    }
    if !tags.contains(&ring.primary) {
        return Err(Error::IpsecKeyring(format!(
            "the primary key {} is not in it; add it or pick one of its tags",
            ring.primary
        )));
    }
    Ok(())
}

/// The states and policies `d` asks for: per peer and per key a state each way (outbound ones
/// for every key too, so switching the primary is one policy update that never points at a
/// missing state), per peer an outbound policy on the primary key's SPI and an inbound one that
/// requires ESP.
pub fn plan(d: &IpsecDesired) -> Result<IpsecState, Error> {
    check_keyring(&d.keyring)?;
    let mut st = IpsecState::default();
    let remotes: BTreeSet<Ipv4Addr> = d
        .remotes
        .iter()
        .copied()
        .filter(|r| *r != d.local)
        .collect();
    for &r in &remotes {
        for k in &d.keyring.keys {
            let m = material(k);
            st.sas.insert(Sa {
                src: d.local,
                dst: r,
                spi: spi(d.local, r, k.tag),
                key: m,
            });
            st.sas.insert(Sa {
                src: r,
                dst: d.local,
                spi: spi(r, d.local, k.tag),
                key: m,
            });
        }
        st.policies.insert(Policy {
            dir: Dir::Out,
            src: d.local,
            dst: r,
            port: d.vxlan_port,
            spi: spi(d.local, r, d.keyring.primary),
        });
        st.policies.insert(Policy {
            dir: Dir::In,
            src: r,
            dst: d.local,
            port: d.vxlan_port,
            spi: 0,
        });
    }
    Ok(st)
}

/// The steps from `have` to `want`, in an order that loses no packet: states for new keys and
/// peers first (a peer's new key can be received before anyone sends with it), then new
/// policies, then outbound policies switched to the new primary, then stale policies, and stale
/// states last (the old key's inbound states stay until nothing sends with it here). A state
/// whose key changed under the same SPI (a tag reused with another key) is replaced first.
pub fn diff(have: &IpsecState, want: &IpsecState) -> Vec<IpsecChange> {
    let have_sas: BTreeMap<_, &Sa> = have.sas.iter().map(|s| (s.id(), s)).collect();
    let want_sas: BTreeMap<_, &Sa> = want.sas.iter().map(|s| (s.id(), s)).collect();
    let have_pols: BTreeMap<_, &Policy> = have.policies.iter().map(|p| (p.id(), p)).collect();
    let want_pols: BTreeMap<_, &Policy> = want.policies.iter().map(|p| (p.id(), p)).collect();

    let mut out = Vec::new();
    for (id, w) in &want_sas {
        match have_sas.get(id) {
            Some(h) if h.key != w.key => {
                out.push(IpsecChange::DeleteSa((*h).clone()));
                out.push(IpsecChange::AddSa((*w).clone()));
            }
            Some(_) => {}
            None => out.push(IpsecChange::AddSa((*w).clone())),
        }
    }
    for (id, w) in &want_pols {
        if !have_pols.contains_key(id) {
            out.push(IpsecChange::AddPolicy(**w));
        }
    }
    for (id, w) in &want_pols {
        if have_pols.get(id).is_some_and(|h| h.spi != w.spi) {
            out.push(IpsecChange::UpdatePolicy(**w));
        }
    }
    for (id, h) in &have_pols {
        if !want_pols.contains_key(id) {
            out.push(IpsecChange::DeletePolicy(**h));
        }
    }
    for (id, h) in &have_sas {
        if !want_sas.contains_key(id) {
            out.push(IpsecChange::DeleteSa((*h).clone()));
        }
    }
    out
}

/// The nftables script that makes table `table` (ip family) drop, on input, every VXLAN datagram
/// to `port` whose VNI is one of `vnis` and which did not come out of IPsec; with no VNIs it
/// removes the table. The script replaces the table as a whole, so applying it is idempotent.
pub fn guard_script(table: &str, port: u16, vnis: &BTreeSet<u32>) -> String {
    // Declaring the table first makes the delete succeed when it is not there.
    let mut s = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    if !vnis.is_empty() {
        let list: Vec<String> = vnis.iter().map(u32::to_string).collect();
        // The VNI is the 24 bits after the UDP header (64 bits) and the VXLAN flags word (32).
        s += &format!(
            "table ip {table} {{\n  chain input {{\n    type filter hook input priority filter - 10; policy accept;\n    udp dport {port} @th,96,24 {{ {} }} meta secpath missing drop\n  }}\n}}\n",
            list.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
    const R1: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
    const R2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);

    fn key(tag: u32) -> Key {
        Key {
            tag,
            key: [tag as u8; 16],
            salt: [0xa0 | tag as u8; 4],
        }
    }

    fn desired(remotes: &[Ipv4Addr], tags: &[u32], primary: u32) -> IpsecDesired {
        IpsecDesired {
            local: L,
            remotes: remotes.to_vec(),
            keyring: Keyring {
                keys: tags.iter().map(|t| key(*t)).collect(),
                primary,
            },
            vxlan_port: 4789,
            reqid: 7,
        }
    }

    #[test]
    fn spi_is_stable_and_distinct_per_direction_and_key() {
        // Fixed values: both nodes of a pair must compute the same SPI in every release.
        assert_eq!(spi(L, R1, 1), spi(L, R1, 1));
        let all = [
            spi(L, R1, 1),
            spi(R1, L, 1),
            spi(L, R1, 2),
            spi(R1, L, 2),
            spi(L, R2, 1),
            spi(R2, L, 1),
        ];
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "{all:x?}");
        assert!(all.iter().all(|s| *s >= 256));
        assert_eq!(
            spi(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1),
            0x47d9_3af3
        );
    }

    #[test]
    fn plan_gives_states_both_ways_per_key_and_policies_per_peer() {
        let st = plan(&desired(&[R1, R2, L, R1], &[1, 2], 2)).unwrap();
        // 2 peers × 2 keys × 2 directions; the local address and duplicates are ignored.
        assert_eq!(st.sas.len(), 8);
        let s = st
            .sas
            .iter()
            .find(|s| s.src == R1 && s.spi == spi(R1, L, 1))
            .unwrap();
        assert_eq!(s.dst, L);
        assert_eq!(&s.key[..16], &[1u8; 16]);
        assert_eq!(&s.key[16..], &[0xa1u8; 4]);
        let pols: Vec<Policy> = st.policies.iter().copied().collect();
        assert_eq!(
            pols,
            vec![
                Policy {
                    dir: Dir::In,
                    src: R1,
                    dst: L,
                    port: 4789,
                    spi: 0
                },
                Policy {
                    dir: Dir::In,
                    src: R2,
                    dst: L,
                    port: 4789,
                    spi: 0
                },
                Policy {
                    dir: Dir::Out,
                    src: L,
                    dst: R1,
                    port: 4789,
                    spi: spi(L, R1, 2)
                },
                Policy {
                    dir: Dir::Out,
                    src: L,
                    dst: R2,
                    port: 4789,
                    spi: spi(L, R2, 2)
                },
            ]
        );
    }

    #[test]
    fn plan_refuses_bad_keyrings() {
        assert!(plan(&desired(&[R1], &[], 1)).is_err());
        assert!(plan(&desired(&[R1], &[1, 2, 3, 4], 1)).is_err());
        assert!(plan(&desired(&[R1], &[1, 1], 1)).is_err());
        let e = plan(&desired(&[R1], &[1, 2], 3)).unwrap_err();
        assert!(e.to_string().contains("primary key 3"), "{e}");
    }

    #[test]
    fn rotation_adds_inbound_before_switching_outbound_before_removing_old() {
        let old = plan(&desired(&[R1], &[1], 1)).unwrap();
        let new = plan(&desired(&[R1], &[2], 2)).unwrap();
        let steps = diff(&old, &new);
        let kinds: Vec<String> = steps
            .iter()
            .map(|c| match c {
                IpsecChange::AddSa(s) => format!("add {}>{} k{}", s.src, s.dst, s.key[0]),
                IpsecChange::DeleteSa(s) => format!("del {}>{} k{}", s.src, s.dst, s.key[0]),
                IpsecChange::UpdatePolicy(p) => format!("switch {:?} {:#x}", p.dir, p.spi),
                IpsecChange::AddPolicy(p) => format!("addpol {:?}", p.dir),
                IpsecChange::DeletePolicy(p) => format!("delpol {:?}", p.dir),
            })
            .collect();
        let add = |s: Ipv4Addr, d: Ipv4Addr, k: u8| format!("add {s}>{d} k{k}");
        let del = |s: Ipv4Addr, d: Ipv4Addr, k: u8| format!("del {s}>{d} k{k}");
        let mut adds = vec![add(L, R1, 2), add(R1, L, 2)];
        adds.sort();
        let mut dels = vec![del(L, R1, 1), del(R1, L, 1)];
        dels.sort();
        let mut got_adds = kinds[..2].to_vec();
        got_adds.sort();
        let mut got_dels = kinds[3..].to_vec();
        got_dels.sort();
        assert_eq!(got_adds, adds, "{kinds:?}");
        assert_eq!(
            kinds[2],
            format!("switch Out {:#x}", spi(L, R1, 2)),
            "{kinds:?}"
        );
        assert_eq!(got_dels, dels, "{kinds:?}");
        assert_eq!(kinds.len(), 5);
    }

    #[test]
    fn staged_rotation_is_three_safe_steps_and_reapplying_is_a_no_op() {
        let s0 = plan(&desired(&[R1], &[1], 1)).unwrap();
        let s1 = plan(&desired(&[R1], &[1, 2], 1)).unwrap();
        let s2 = plan(&desired(&[R1], &[1, 2], 2)).unwrap();
        let s3 = plan(&desired(&[R1], &[2], 2)).unwrap();
        let d1 = diff(&s0, &s1);
        assert_eq!(d1.len(), 2);
        assert!(d1.iter().all(|c| matches!(c, IpsecChange::AddSa(_))));
        assert_eq!(
            diff(&s1, &s2),
            vec![IpsecChange::UpdatePolicy(Policy {
                dir: Dir::Out,
                src: L,
                dst: R1,
                port: 4789,
                spi: spi(L, R1, 2)
            })]
        );
        let d3 = diff(&s2, &s3);
        assert_eq!(d3.len(), 2);
        assert!(d3.iter().all(|c| matches!(c, IpsecChange::DeleteSa(_))));
        assert!(diff(&s3, &s3).is_empty());
    }

    #[test]
    fn peers_come_and_go_states_before_policies_and_policies_before_states() {
        let one = plan(&desired(&[R1], &[1], 1)).unwrap();
        let two = plan(&desired(&[R1, R2], &[1], 1)).unwrap();
        let up = diff(&one, &two);
        assert!(matches!(up[0], IpsecChange::AddSa(_)) && matches!(up[1], IpsecChange::AddSa(_)));
        assert!(
            up[2..]
                .iter()
                .all(|c| matches!(c, IpsecChange::AddPolicy(p) if p.src == R2 || p.dst == R2))
        );
        assert_eq!(up.len(), 4);
        let down = diff(&two, &one);
        assert!(
            down[..2]
                .iter()
                .all(|c| matches!(c, IpsecChange::DeletePolicy(_)))
        );
        assert!(
            down[2..]
                .iter()
                .all(|c| matches!(c, IpsecChange::DeleteSa(_)))
        );
        assert_eq!(down.len(), 4);
        assert_eq!(diff(&two, &IpsecState::default()).len(), 8);
    }

    #[test]
    fn the_guard_drops_cleartext_for_encrypted_vnis_only() {
        let vnis: BTreeSet<u32> = [4097, 4099].into();
        assert_eq!(
            guard_script("shoal_esp", 4789, &vnis),
            "table ip shoal_esp {}\ndelete table ip shoal_esp\ntable ip shoal_esp {\n  chain input {\n    \
             type filter hook input priority filter - 10; policy accept;\n    \
             udp dport 4789 @th,96,24 { 4097, 4099 } meta secpath missing drop\n  }\n}\n"
        );
        assert_eq!(
            guard_script("shoal_esp", 4789, &BTreeSet::new()),
            "table ip shoal_esp {}\ndelete table ip shoal_esp\n"
        );
    }

    #[test]
    fn a_reused_tag_with_another_key_replaces_the_state() {
        let a = plan(&desired(&[R1], &[1], 1)).unwrap();
        let mut d = desired(&[R1], &[1], 1);
        d.keyring.keys[0].key = [9; 16];
        let b = plan(&d).unwrap();
        let steps = diff(&a, &b);
        assert_eq!(steps.len(), 4);
        assert!(matches!(&steps[0], IpsecChange::DeleteSa(s) if s.key[0] == 1));
        assert!(matches!(&steps[1], IpsecChange::AddSa(s) if s.key[0] == 9));
    }
}
