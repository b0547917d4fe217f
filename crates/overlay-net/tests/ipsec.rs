//! Root tests of encrypted overlays on real namespaces: two underlay namespaces on a veth pair,
//! each with its own XFRM states and policies, and VXLAN-port UDP between them. Every namespace
//! is this run's own (named with its prefix) and goes at the end, with the XFRM entries in it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use overlay_net::ipsec::shell;
use overlay_net::ipsec::{IpsecChange, IpsecDesired, Key, Keyring, plan};
use overlay_net::{DEFAULT_VXLAN_PORT, netns};

const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PORT: u16 = DEFAULT_VXLAN_PORT;

/// Removes every namespace named with the run's prefix (XFRM states and policies live in them
/// and go with them), also when the test panics.
struct Lab {
    p: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in netns::list(&self.p).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
    }
}

impl Lab {
    fn new() -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests make network namespaces and XFRM states: run them as root"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let lab = Lab {
            p: format!(
                "x{:04x}",
                (nanos ^ std::process::id().rotate_left(7)) & 0xffff
            ),
        };
        netns::create(&lab.ns('a')).unwrap();
        netns::create(&lab.ns('b')).unwrap();
        sh(
            &lab.ns('a'),
            &format!(
                "ip link add u0 type veth peer name u0 netns {}",
                lab.ns('b')
            ),
        );
        for (h, addr) in [('a', A), ('b', B)] {
            sh(&lab.ns(h), &format!("ip addr add {addr}/24 dev u0"));
            sh(&lab.ns(h), "ip link set u0 up");
            sh(&lab.ns(h), "ip link set lo up");
        }
        lab
    }

    fn ns(&self, h: char) -> String {
        format!("{}-{h}", self.p)
    }
}

/// Runs a command inside the named namespace; panics with its output when it fails.
fn sh(ns: &str, args: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args.split_whitespace())
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter --net=/run/netns/{ns} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One counter of the namespace's /proc/net/xfrm_stat.
fn xfrm_stat(ns: &str, name: &str) -> u64 {
    sh(ns, "cat /proc/net/xfrm_stat")
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in {ns}'s /proc/net/xfrm_stat"))
}

fn udp_in(ns: &str, port: u16) -> UdpSocket {
    let bind = SocketAddr::from(([0, 0, 0, 0], port));
    let socket = netns::run_in(Some(&netns::path(ns)), move || UdpSocket::bind(bind))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    socket
}

/// Sends a datagram a few times over `for_ms`; whether any arrived on `rx`.
fn arrives(tx: &UdpSocket, rx: &UdpSocket, to: Ipv4Addr, port: u16, for_ms: u64) -> bool {
    arrives_payload(tx, rx, (to, port), b"frame", for_ms)
}

/// Sends `payload` a few times over `for_ms`; whether it arrived on `rx`.
fn arrives_payload(
    tx: &UdpSocket,
    rx: &UdpSocket,
    to: (Ipv4Addr, u16),
    payload: &[u8],
    for_ms: u64,
) -> bool {
    let deadline = Instant::now() + Duration::from_millis(for_ms);
    let mut buf = [0u8; 64];
    let mut got = false;
    while Instant::now() < deadline {
        // A send the XFRM policy refuses shows as an error here: keep going.
        let _ = tx.send_to(payload, to);
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            got |= &buf[..n] == payload;
        }
    }
    got
}

/// A VXLAN header for `vni` (flags with the VNI bit set) and a few bytes of frame.
fn vxlan(vni: u32) -> Vec<u8> {
    let v = vni.to_be_bytes();
    vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0, 0xde, 0xad, 0xbe, 0xef]
}

/// The nftables guard: cleartext VXLAN for an encrypted VNI is dropped whatever its source,
/// other VNIs pass, setting it twice is the same as once, and an empty set removes the table.
#[test]
fn ipsec_guard_drops_cleartext_vxlan_of_encrypted_vnis() {
    let lab = Lab::new();
    let (na, nb) = (lab.ns('a'), lab.ns('b'));
    let table = format!("{}_esp", lab.p);
    let tx = udp_in(&nb, 0);
    let rx = udp_in(&na, PORT);
    assert!(arrives_payload(&tx, &rx, (A, PORT), &vxlan(4097), 300));

    let encrypted: BTreeSet<u32> = [4097, 4099].into();
    shell::set_guard(Some(&na), &table, PORT, &encrypted).unwrap();
    shell::set_guard(Some(&na), &table, PORT, &encrypted).unwrap();
    assert!(!arrives_payload(&tx, &rx, (A, PORT), &vxlan(4097), 300));
    assert!(!arrives_payload(&tx, &rx, (A, PORT), &vxlan(4099), 300));
    assert!(arrives_payload(&tx, &rx, (A, PORT), &vxlan(4098), 300));

    shell::set_guard(Some(&na), &table, PORT, &BTreeSet::new()).unwrap();
    assert!(!sh(&na, "nft list tables").contains(&table));
    assert!(arrives_payload(&tx, &rx, (A, PORT), &vxlan(4097), 300));
}

/// Every frame seen on the namespace's links, from an AF_PACKET socket opened in it.
struct Capture {
    fd: OwnedFd,
}

/// What a capture saw on the wire: ESP packets and UDP datagrams to the VXLAN port.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    esp: usize,
    vxlan_udp: usize,
}

impl Capture {
    fn open(ns: &str) -> Capture {
        let raw = netns::run_in(Some(&netns::path(ns)), || {
            // SAFETY: plain socket(2) call; the result is checked before use.
            unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                )
            }
        })
        .unwrap();
        assert!(raw >= 0, "open an AF_PACKET socket");
        // SAFETY: `raw` is a fresh descriptor this function alone owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Capture { fd }
    }

    /// Reads what is queued, without waiting.
    fn drain(&self) -> Seen {
        let mut seen = Seen::default();
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: the buffer outlives the call and its true length is passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return seen;
            };
            let f = &buf[..n];
            // Ethernet, IPv4 only.
            if n < 14 + 20 || f[12..14] != [0x08, 0x00] {
                continue;
            }
            let ip = &f[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            match ip[9] {
                50 => seen.esp += 1,
                17 if ip.len() >= ihl + 4
                    && u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]) == PORT =>
                {
                    seen.vxlan_udp += 1
                }
                _ => {}
            }
        }
    }
}

fn key(tag: u32) -> Key {
    Key {
        tag,
        key: [tag as u8 ^ 0x5a; 16],
        salt: [tag as u8; 4],
    }
}

fn desired(local: Ipv4Addr, remote: Ipv4Addr, tags: &[u32], primary: u32) -> IpsecDesired {
    IpsecDesired {
        local,
        remotes: vec![remote],
        keyring: Keyring {
            keys: tags.iter().map(|t| key(*t)).collect(),
            primary,
        },
        vxlan_port: PORT,
        reqid: 0x5e0a,
    }
}

/// The policies alone: they need nothing of the kernel's ESP, so this runs on any kernel with
/// XFRM. With them in place and no state, cleartext to the VXLAN port never reaches the wire,
/// and cleartext from the peer's address is dropped on arrival: the underlay cannot inject.
#[test]
fn ipsec_policies_keep_cleartext_vxlan_off_the_underlay() {
    let lab = Lab::new();
    let (na, nb) = (lab.ns('a'), lab.ns('b'));
    let tx_a = udp_in(&na, 0);
    let tx_b = udp_in(&nb, 0);
    let rx_a = udp_in(&na, PORT);
    let rx_b = udp_in(&nb, PORT);
    let cap_b = Capture::open(&nb);

    // Before: plain VXLAN-port UDP goes both ways and the capture sees it.
    assert!(arrives(&tx_a, &rx_b, B, PORT, 300));
    assert!(cap_b.drain().vxlan_udp > 0, "the capture sees plain UDP");

    let policies_only = |local, remote| -> Vec<IpsecChange> {
        let want = plan(&desired(local, remote, &[1], 1)).unwrap();
        overlay_net::ipsec::diff(&Default::default(), &want)
            .into_iter()
            .filter(|c| !matches!(c, IpsecChange::AddSa(_)))
            .collect()
    };
    let reqid = desired(A, B, &[1], 1).reqid;
    shell::apply(Some(&na), reqid, &policies_only(A, B)).unwrap();
    shell::apply(Some(&nb), reqid, &policies_only(B, A)).unwrap();
    assert_eq!(shell::observe(Some(&na), reqid).unwrap().policies.len(), 2);

    // Outbound: no state to encrypt with, so nothing leaves in clear.
    let no_state = xfrm_stat(&na, "XfrmOutNoStates");
    cap_b.drain();
    assert!(!arrives(&tx_a, &rx_b, B, PORT, 300));
    assert_eq!(cap_b.drain().vxlan_udp, 0, "no cleartext VXLAN on the wire");
    assert!(xfrm_stat(&na, "XfrmOutNoStates") > no_state);

    // Inbound: B stops encrypting (its policies go), its cleartext reaches A's link and A drops
    // it; other ports are untouched.
    shell::cleanup(Some(&nb), reqid).unwrap();
    assert_eq!(
        shell::observe(Some(&nb), reqid).unwrap(),
        Default::default()
    );
    let cap_a = Capture::open(&na);
    let mismatch = xfrm_stat(&na, "XfrmInTmplMismatch");
    assert!(
        !arrives(&tx_b, &rx_a, A, PORT, 300),
        "injected cleartext is dropped"
    );
    assert!(cap_a.drain().vxlan_udp > 0, "it did reach A's link");
    assert!(xfrm_stat(&na, "XfrmInTmplMismatch") > mismatch);
    let rx_other = udp_in(&na, PORT + 1);
    assert!(arrives(&tx_b, &rx_other, A, PORT + 1, 300));

    // Cleanup leaves A as it was.
    shell::cleanup(Some(&na), reqid).unwrap();
    assert_eq!(
        shell::observe(Some(&na), reqid).unwrap(),
        Default::default()
    );
    assert!(arrives(&tx_b, &rx_a, A, PORT, 300));
}
