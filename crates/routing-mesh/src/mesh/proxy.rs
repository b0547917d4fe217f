//! The routing mesh without nftables: a userspace TCP and UDP proxy on the node's own namespace,
//! one listener per published port on every address, which the daemon chooses only where nft
//! can't run; and, beside the nftables table, the same on 127.0.0.1 alone, where the kernel
//! will not route a connection DNATed away from the loopback address. It sends each new
//! connection (or each new UDP client) where the nftables paths would, by the port's traffic
//! policy ([`choose_backend`], pure), but the task always sees the node's address, not the
//! client's: a proxy can't keep it.
//!
//! UDP clients each get their own upstream socket to the task they were given, kept while they
//! talk and closed after [`UDP_IDLE`] of silence.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{PortKey, PublishedPort, TrafficPolicy};
use crate::vip::{Protocol, SLOTS};

/// How long a proxied connection may take to reach its task.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a UDP client's flow is kept without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// Where a new connection to `port` goes: `pick`, drawn from `0..SLOTS`, chooses among the
/// tasks the policy allows, as the nftables maps' slots do. `None`: no ready task, refused.
pub fn choose_backend(port: &PublishedPort, pick: u32) -> Option<SocketAddrV4> {
    let among = match port.policy {
        TrafficPolicy::Cluster => &port.cluster,
        TrafficPolicy::Local => &port.local,
        TrafficPolicy::PreferLocal if port.local.is_empty() => &port.cluster,
        TrafficPolicy::PreferLocal => &port.local,
    };
    if among.is_empty() {
        return None;
    }
    let index = usize::try_from(pick).unwrap_or_default() % among.len();
    among.iter().nth(index).copied()
}

fn pick() -> u32 {
    rand::rng().random_range(0..SLOTS)
}

/// One published port's listener and what it proxies to.
struct Listener {
    port: watch::Sender<PublishedPort>,
    serving: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The userspace mesh: a listener per published port, opened, updated and closed as the ports
/// change. Listeners stop when it is dropped.
pub struct UserspaceProxy {
    address: Ipv4Addr,
    listeners: BTreeMap<PortKey, Listener>,
}

impl Default for UserspaceProxy {
    /// Listening on every address.
    fn default() -> UserspaceProxy {
        UserspaceProxy::on(Ipv4Addr::UNSPECIFIED)
    }
}

impl UserspaceProxy {
    /// Listening on `address` only.
    pub fn on(address: Ipv4Addr) -> UserspaceProxy {
        UserspaceProxy {
            address,
            listeners: BTreeMap::new(),
        }
    }

    /// Serves exactly `ports`: new ports get a listener on its address, gone ones lose theirs,
    /// and the others proxy to their new tasks from the next connection on. Returns why a port
    /// could not be served (its number taken by another program, an SCTP port); the others are
    /// served all the same.
    pub async fn set(&mut self, ports: &[PublishedPort]) -> Vec<String> {
        let wanted: BTreeMap<PortKey, &PublishedPort> = ports
            .iter()
            .map(|port| ((port.protocol, port.port), port))
            .collect();
        self.listeners.retain(|key, _| wanted.contains_key(key));
        let mut failures = Vec::new();
        for (key, port) in wanted {
            if let Some(listener) = self.listeners.get(&key) {
                listener.port.send_if_modified(|current| {
                    let changed = current != port;
                    *current = port.clone();
                    changed
                });
                continue;
            }
            match listen(self.address, port.clone()).await {
                Ok(listener) => {
                    self.listeners.insert(key, listener);
                }
                Err(error) => failures.push(format!(
                    "port {}/{}: {error}",
                    port.port,
                    port.protocol.nft_name()
                )),
            }
        }
        failures
    }
}

async fn listen(address: Ipv4Addr, port: PublishedPort) -> std::io::Result<Listener> {
    let address = SocketAddr::from((address, port.port));
    let protocol = port.protocol;
    let (sender, receiver) = watch::channel(port);
    let serving = match protocol {
        Protocol::Tcp => tokio::spawn(serve_tcp(TcpListener::bind(address).await?, receiver)),
        Protocol::Udp => tokio::spawn(serve_udp(
            Arc::new(UdpSocket::bind(address).await?),
            receiver,
        )),
        Protocol::Sctp => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the userspace proxy has no SCTP: this node needs nftables for it",
            ));
        }
    };
    Ok(Listener {
        port: sender,
        serving,
    })
}

async fn serve_tcp(listener: TcpListener, port: watch::Receiver<PublishedPort>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // No ready task: the connection is closed at once, as the nft path refuses it.
        let Some(backend) = choose_backend(&port.borrow(), pick()) else {
            continue;
        };
        tokio::spawn(proxy_tcp(client, backend));
    }
}

async fn proxy_tcp(mut client: TcpStream, backend: SocketAddrV4) {
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await
    else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

type UdpFlows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

async fn serve_udp(socket: Arc<UdpSocket>, port: watch::Receiver<PublishedPort>) {
    let flows: UdpFlows = Arc::default();
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((length, client)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        let known = flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&client)
            .cloned();
        let upstream = match known {
            Some(upstream) => upstream,
            None => {
                let Some(backend) = choose_backend(&port.borrow(), pick()) else {
                    continue;
                };
                match open_flow(backend).await {
                    Ok(upstream) => {
                        flows
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(client, Arc::clone(&upstream));
                        tokio::spawn(relay_back(
                            Arc::clone(&upstream),
                            Arc::clone(&socket),
                            client,
                            Arc::clone(&flows),
                        ));
                        upstream
                    }
                    Err(_) => continue,
                }
            }
        };
        let _ = upstream.send(&buffer[..length]).await;
    }
}

async fn open_flow(backend: SocketAddrV4) -> std::io::Result<Arc<UdpSocket>> {
    let upstream = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    upstream.connect(backend).await?;
    Ok(Arc::new(upstream))
}

/// Sends the task's answers back to its client until the flow goes quiet.
async fn relay_back(
    upstream: Arc<UdpSocket>,
    listening: Arc<UdpSocket>,
    client: SocketAddr,
    flows: UdpFlows,
) {
    let mut buffer = vec![0u8; 65536];
    while let Ok(Ok(length)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buffer)).await {
        let _ = listening.send_to(&buffer[..length], client).await;
    }
    flows
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&client);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::mesh::Crossing;

    fn port(policy: TrafficPolicy, local: &[&str], cluster: &[&str]) -> PublishedPort {
        let set = |addresses: &[&str]| -> BTreeSet<SocketAddrV4> {
            addresses.iter().map(|a| a.parse().unwrap()).collect()
        };
        PublishedPort {
            protocol: Protocol::Tcp,
            port: 8080,
            policy,
            local: set(local),
            cluster: set(cluster),
            crossing: Crossing::Overlay,
        }
    }

    fn chosen(port: &PublishedPort) -> BTreeSet<Option<SocketAddrV4>> {
        (0..6).map(|pick| choose_backend(port, pick)).collect()
    }

    fn addresses(addresses: &[&str]) -> BTreeSet<Option<SocketAddrV4>> {
        addresses.iter().map(|a| Some(a.parse().unwrap())).collect()
    }

    #[test]
    fn each_policy_chooses_where_the_nft_paths_send() {
        let local = ["10.0.0.5:80"];
        let cluster = ["10.0.0.5:80", "10.0.0.6:80", "10.0.0.7:80"];
        assert_eq!(
            chosen(&port(TrafficPolicy::PreferLocal, &local, &cluster)),
            addresses(&local)
        );
        assert_eq!(
            chosen(&port(TrafficPolicy::PreferLocal, &[], &cluster)),
            addresses(&cluster)
        );
        assert_eq!(
            chosen(&port(TrafficPolicy::Cluster, &local, &cluster)),
            addresses(&cluster)
        );
        assert_eq!(
            chosen(&port(TrafficPolicy::Local, &[], &cluster)),
            BTreeSet::from([None])
        );
    }
}
