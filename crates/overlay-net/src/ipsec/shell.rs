//! The IO shell of encrypted overlays: runs `ip xfrm` (iproute2) in the underlay namespace to
//! observe this instance's states and policies (those carrying its reqid), apply the pure diff's
//! steps in order, and remove everything it made. Building the commands and reading `ip`'s
//! output are pure and tested without root.

use std::net::Ipv4Addr;

use super::{Dir, IpsecChange, IpsecDesired, IpsecState, Policy, Sa, diff, guard_script, plan};
use crate::{Error, netns};

/// The AEAD every state uses: AES-GCM as ESP takes it (RFC 4106), with a 128-bit ICV.
pub const AEAD: &str = "rfc4106(gcm(aes))";
/// The ICV length in bits.
pub const ICV_BITS: u32 = 128;
/// Inbound anti-replay window, in packets.
pub const REPLAY_WINDOW: u32 = 64;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn dir_word(d: Dir) -> &'static str {
    match d {
        Dir::In => "in",
        Dir::Out => "out",
    }
}

fn policy_args(verb: &str, p: &Policy, reqid: u32) -> Vec<String> {
    let mut a = words(&format!(
        "xfrm policy {verb} dir {} src {}/32 dst {}/32 proto udp dport {}",
        dir_word(p.dir),
        p.src,
        p.dst,
        p.port
    ));
    if verb == "delete" {
        return a;
    }
    a.extend(words(&format!(
        "tmpl src {} dst {} proto esp",
        p.src, p.dst
    )));
    if p.spi != 0 {
        a.extend(words(&format!("spi {:#010x}", p.spi)));
    }
    a.extend(words(&format!("reqid {reqid} mode transport")));
    a
}

/// The `ip` arguments that make one change, for the instance with `reqid`.
pub fn command(change: &IpsecChange, reqid: u32) -> Vec<String> {
    match change {
        IpsecChange::AddSa(s) => {
            let mut a = words(&format!(
                "xfrm state add src {} dst {} proto esp spi {:#010x} reqid {reqid} replay-window {REPLAY_WINDOW} mode transport aead",
                s.src, s.dst, s.spi
            ));
            a.push(AEAD.to_string());
            a.push(format!("0x{}", hex(&s.key)));
            a.push(ICV_BITS.to_string());
            a
        }
        IpsecChange::DeleteSa(s) => words(&format!(
            "xfrm state delete src {} dst {} proto esp spi {:#010x}",
            s.src, s.dst, s.spi
        )),
        IpsecChange::AddPolicy(p) => policy_args("add", p, reqid),
        IpsecChange::UpdatePolicy(p) => policy_args("update", p, reqid),
        IpsecChange::DeletePolicy(p) => policy_args("delete", p, reqid),
    }
}

/// Splits `ip xfrm` output into its entries (an entry starts at a line that is not indented),
/// each as its words.
fn entries(out: &str) -> Vec<Vec<&str>> {
    let mut all: Vec<Vec<&str>> = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) || all.is_empty() {
            all.push(Vec::new());
        }
        if let Some(e) = all.last_mut() {
            e.extend(line.split_whitespace());
        }
    }
    all
}

/// The word after the first `key` in `w`.
fn after<'a>(w: &[&'a str], key: &str) -> Option<&'a str> {
    w.iter()
        .position(|x| *x == key)
        .and_then(|i| w.get(i + 1))
        .copied()
}

fn addr(s: Option<&str>) -> Option<Ipv4Addr> {
    s?.split('/').next()?.parse().ok()
}

/// A number as `ip` prints it: decimal or 0x-hex, followed under `-s` by the other base in
/// parentheses ("0x00001234(4660)", "77(0x0000004d)"), which is left out.
fn num(s: Option<&str>) -> Option<u32> {
    let s = s?;
    let s = s.split('(').next()?;
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The ESP states in `ip xfrm state` output that carry `reqid` (others are left out, as are
/// entries this module would not have made).
pub fn parse_states(out: &str, reqid: u32) -> Vec<Sa> {
    let mut sas = Vec::new();
    for w in entries(out) {
        if after(&w, "proto") != Some("esp") || num(after(&w, "reqid")) != Some(reqid) {
            continue;
        }
        let key = after(&w, AEAD)
            .and_then(|k| k.strip_prefix("0x"))
            .and_then(unhex20);
        if let (Some(src), Some(dst), Some(spi), Some(key)) = (
            addr(after(&w, "src")),
            addr(after(&w, "dst")),
            num(after(&w, "spi")),
            key,
        ) {
            sas.push(Sa { src, dst, spi, key });
        }
    }
    sas
}

fn unhex20(h: &str) -> Option<[u8; 20]> {
    if h.len() != 40 {
        return None;
    }
    let mut k = [0u8; 20];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

/// The UDP policies in `ip xfrm policy` output whose template carries `reqid`.
pub fn parse_policies(out: &str, reqid: u32) -> Vec<Policy> {
    let mut pols = Vec::new();
    for w in entries(out) {
        let Some(t) = w.iter().position(|x| *x == "tmpl") else {
            continue;
        };
        let (sel, tmpl) = w.split_at(t);
        if num(after(tmpl, "reqid")) != Some(reqid) || after(sel, "proto") != Some("udp") {
            continue;
        }
        let dir = match after(sel, "dir") {
            Some("in") => Dir::In,
            Some("out") => Dir::Out,
            _ => continue,
        };
        let port = after(sel, "dport").and_then(|p| p.parse().ok());
        if let (Some(src), Some(dst), Some(port)) =
            (addr(after(sel, "src")), addr(after(sel, "dst")), port)
        {
            let spi = num(after(tmpl, "spi")).unwrap_or(0);
            pols.push(Policy {
                dir,
                src,
                dst,
                port,
                spi,
            });
        }
    }
    pols
}

/// Byte and packet counts of one state, from `ip -s xfrm state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub spi: u32,
    pub bytes: u64,
    pub packets: u64,
}

/// The counters of the states in `ip -s xfrm state` output that carry `reqid`.
pub fn parse_counters(out: &str, reqid: u32) -> Vec<Counters> {
    let mut all = Vec::new();
    for w in entries(out) {
        if num(after(&w, "reqid")) != Some(reqid) {
            continue;
        }
        // "lifetime current:" is followed by "N(bytes), M(packets)".
        let Some(i) = w
            .windows(2)
            .position(|p| p[0] == "lifetime" && p[1] == "current:")
        else {
            continue;
        };
        let count = |s: Option<&&str>, unit: &str| {
            s.and_then(|s| s.trim_end_matches(',').strip_suffix(unit))
                .and_then(|n| n.parse().ok())
        };
        if let (Some(bytes), Some(packets), Some(spi)) = (
            count(w.get(i + 2), "(bytes)"),
            count(w.get(i + 3), "(packets)"),
            num(after(&w, "spi")),
        ) {
            all.push(Counters {
                src: addr(after(&w, "src")),
                dst: addr(after(&w, "dst")),
                spi,
                bytes,
                packets,
            });
        }
    }
    all
}

/// Runs `ip` with `args` in the named namespace (`None`: the caller's) and returns its output.
fn ip(ns: Option<&str>, args: &[String]) -> Result<String, Error> {
    let path = ns.map(netns::path);
    let out = netns::command(netns::NSENTER, path.as_deref(), "ip")
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            what: "run ip (install iproute2; util-linux for nsenter)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Xfrm {
            command: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the instance with `reqid` has in the namespace.
pub fn observe(ns: Option<&str>, reqid: u32) -> Result<IpsecState, Error> {
    let states = ip(ns, &words("xfrm state list"))?;
    let policies = ip(ns, &words("xfrm policy list"))?;
    Ok(IpsecState {
        sas: parse_states(&states, reqid).into_iter().collect(),
        policies: parse_policies(&policies, reqid).into_iter().collect(),
    })
}

/// Makes the changes in order, stopping at the first that fails: a later step may rely on an
/// earlier one (an outbound switch on the new key's states), so reconciling again resumes.
pub fn apply(ns: Option<&str>, reqid: u32, changes: &[IpsecChange]) -> Result<(), Error> {
    for c in changes {
        ip(ns, &command(c, reqid))?;
    }
    Ok(())
}

/// Plans, observes, diffs and applies; returns the changes made.
pub fn reconcile(ns: Option<&str>, d: &IpsecDesired) -> Result<Vec<IpsecChange>, Error> {
    let want = plan(d)?;
    let have = observe(ns, d.reqid)?;
    let changes = diff(&have, &want);
    apply(ns, d.reqid, &changes)?;
    Ok(changes)
}

/// Removes every state and policy of the instance with `reqid` (policies first, so nothing is
/// left pointing at a missing state).
pub fn cleanup(ns: Option<&str>, reqid: u32) -> Result<(), Error> {
    let have = observe(ns, reqid)?;
    apply(ns, reqid, &diff(&have, &IpsecState::default()))
}

/// Whether the kernel can do what encrypted overlays need (ESP with AES-GCM): adds a throwaway
/// state between two loopback addresses under `reqid` and deletes it again. The error says
/// what the kernel lacks.
pub fn probe_esp(ns: Option<&str>, reqid: u32) -> Result<(), Error> {
    let probe = Sa {
        src: Ipv4Addr::new(127, 0, 0, 1),
        dst: Ipv4Addr::new(127, 0, 0, 2),
        spi: 0x5e5e_5e5e,
        key: [0x5e; 20],
    };
    // One left by an interrupted probe would make the add fail.
    let _ = apply(ns, reqid, &[IpsecChange::DeleteSa(probe.clone())]);
    apply(ns, reqid, &[IpsecChange::AddSa(probe.clone())])?;
    apply(ns, reqid, &[IpsecChange::DeleteSa(probe)])
}

/// The counters of the instance's states.
pub fn counters(ns: Option<&str>, reqid: u32) -> Result<Vec<Counters>, Error> {
    Ok(parse_counters(
        &ip(ns, &words("-s xfrm state list"))?,
        reqid,
    ))
}

/// Sets the nftables table `table` in the namespace to drop cleartext VXLAN for `vnis` (see
/// `guard_script`); with no VNIs it removes the table.
pub fn set_guard(
    ns: Option<&str>,
    table: &str,
    port: u16,
    vnis: &std::collections::BTreeSet<u32>,
) -> Result<(), Error> {
    let path = ns.map(netns::path);
    crate::apply::nft_run(path.as_deref(), table, &guard_script(table, port, vnis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const R: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    #[test]
    fn commands_name_the_aead_key_reqid_and_template_spi() {
        let mut key = [0u8; 20];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let sa = Sa {
            src: L,
            dst: R,
            spi: 0x1234,
            key,
        };
        assert_eq!(
            command(&IpsecChange::AddSa(sa.clone()), 77).join(" "),
            "xfrm state add src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x00001234 reqid 77 \
             replay-window 64 mode transport aead rfc4106(gcm(aes)) \
             0x0102030405060708090a0b0c0d0e0f1011121314 128"
        );
        assert_eq!(
            command(&IpsecChange::DeleteSa(sa), 77).join(" "),
            "xfrm state delete src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x00001234"
        );
        let out = Policy {
            dir: Dir::Out,
            src: L,
            dst: R,
            port: 4789,
            spi: 0x99,
        };
        assert_eq!(
            command(&IpsecChange::UpdatePolicy(out), 77).join(" "),
            "xfrm policy update dir out src 10.9.0.1/32 dst 10.9.0.2/32 proto udp dport 4789 \
             tmpl src 10.9.0.1 dst 10.9.0.2 proto esp spi 0x00000099 reqid 77 mode transport"
        );
        let inb = Policy {
            dir: Dir::In,
            src: R,
            dst: L,
            port: 4789,
            spi: 0,
        };
        assert_eq!(
            command(&IpsecChange::AddPolicy(inb), 77).join(" "),
            "xfrm policy add dir in src 10.9.0.2/32 dst 10.9.0.1/32 proto udp dport 4789 \
             tmpl src 10.9.0.2 dst 10.9.0.1 proto esp reqid 77 mode transport"
        );
        assert_eq!(
            command(&IpsecChange::DeletePolicy(inb), 77).join(" "),
            "xfrm policy delete dir in src 10.9.0.2/32 dst 10.9.0.1/32 proto udp dport 4789"
        );
    }

    // As iproute2 prints them (the policy text is this kernel's own output).
    const POLICIES: &str = "src 10.9.0.2/32 dst 10.9.0.1/32 proto udp dport 4789 \n\
        \tdir in priority 0 ptype main \n\
        \ttmpl src 10.9.0.2 dst 10.9.0.1\n\
        \t\tproto esp reqid 77 mode transport\n\
        src 10.9.0.1/32 dst 10.9.0.2/32 proto udp dport 4789 \n\
        \tdir out priority 0 ptype main \n\
        \ttmpl src 10.9.0.1 dst 10.9.0.2\n\
        \t\tproto esp spi 0x00001234 reqid 77 mode transport\n\
        src 10.9.0.1/32 dst 10.9.0.3/32 proto udp dport 4789 \n\
        \tdir out priority 0 ptype main \n\
        \ttmpl src 10.9.0.1 dst 10.9.0.3\n\
        \t\tproto esp spi 0x00005678 reqid 78 mode transport\n\
        src ::/0 dst ::/0 \n\
        \tsocket in priority 0 ptype main \n";

    const STATES: &str = "src 10.9.0.1 dst 10.9.0.2\n\
        \tproto esp spi 0x00001234 reqid 77 mode transport\n\
        \treplay-window 64 \n\
        \taead rfc4106(gcm(aes)) 0x0102030405060708090a0b0c0d0e0f1011121314 128\n\
        \tlifetime config:\n\
        \t  limit: soft (INF)(bytes), hard (INF)(bytes)\n\
        \tlifetime current:\n\
        \t  1520(bytes), 10(packets)\n\
        \t  add 2026-12-02 09:30:00 use 2026-12-02 09:30:01\n\
        \tsel src 0.0.0.0/0 dst 0.0.0.0/0 \n\
        src 10.9.0.2 dst 10.9.0.1\n\
        \tproto esp spi 0x00004321 reqid 78 mode transport\n\
        \treplay-window 64 \n\
        \taead rfc4106(gcm(aes)) 0x0102030405060708090a0b0c0d0e0f1011121314 128\n";

    #[test]
    fn observed_policies_are_only_ours() {
        assert_eq!(
            parse_policies(POLICIES, 77),
            vec![
                Policy {
                    dir: Dir::In,
                    src: R,
                    dst: L,
                    port: 4789,
                    spi: 0
                },
                Policy {
                    dir: Dir::Out,
                    src: L,
                    dst: R,
                    port: 4789,
                    spi: 0x1234
                },
            ]
        );
    }

    // `ip -s` adds each number's other base in parentheses.
    const STATS_IDS: &str = "0x00001234(4660) reqid 77(0x0000004d)";

    #[test]
    fn observed_states_and_counters_are_only_ours() {
        let sas = parse_states(STATES, 77);
        assert_eq!(sas.len(), 1);
        assert_eq!((sas[0].src, sas[0].dst, sas[0].spi), (L, R, 0x1234));
        assert_eq!(sas[0].key[19], 0x14);
        assert_eq!(
            parse_counters(&STATES.replace("0x00001234 reqid 77", STATS_IDS), 77),
            vec![Counters {
                src: Some(L),
                dst: Some(R),
                spi: 0x1234,
                bytes: 1520,
                packets: 10
            }]
        );
    }

    #[test]
    fn a_kernel_without_esp_is_named_in_the_error() {
        let e = Error::Xfrm {
            command: "xfrm state add".into(),
            message: "Error: Requested AEAD algorithm not found.".into(),
        };
        assert!(
            e.to_string()
                .contains("CONFIG_INET_ESP and CONFIG_CRYPTO_GCM"),
            "{e}"
        );
    }
}
