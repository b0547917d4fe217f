//! The routing mesh's per-node health endpoint: whether this node has a ready task of its own
//! for a published port, so an external load balancer can send a `local` or `prefer-local`
//! port's clients only to nodes that keep their address (kube-proxy's health check node port
//! serves the same purpose).
//!
//! `GET /ports/PORT[/PROTOCOL]` (TCP unless named) answers 200 with how many ready tasks this
//! node has for the port, 503 when it has none, 404 when the swarm publishes no such port.
//! [`answer`] is the pure core; [`HealthServer`] its tokio shell, fed each pass's ports.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{PortKey, PublishedPort};
use crate::vip::Protocol;

/// The port the endpoint listens on, on the node's advertise address, beside the gossip's 7946.
pub const HEALTH_PORT: u16 = 7947;

/// The longest request line read; anything longer is refused.
const MAX_REQUEST: usize = 1024;

/// How many ready tasks this node has for each published port it serves.
pub type LocalReadiness = BTreeMap<PortKey, usize>;

/// The readiness the mesh's ports give: each port's local tasks.
pub fn readiness(ports: &[PublishedPort]) -> LocalReadiness {
    ports
        .iter()
        .map(|port| ((port.protocol, port.port), port.local.len()))
        .collect()
}

/// An HTTP answer: status code, reason and a one-line body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub body: String,
}

impl Answer {
    fn new(status: u16, reason: &'static str, body: String) -> Answer {
        Answer {
            status,
            reason,
            body,
        }
    }

    /// The whole response, HTTP/1.0, closing the connection.
    pub fn to_http(&self) -> String {
        format!(
            "HTTP/1.0 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.reason,
            self.body.len(),
            self.body
        )
    }
}

const USAGE: &str = "ask GET /ports/PORT or /ports/PORT/PROTOCOL (tcp, udp or sctp)";

/// Answers one request line (`GET /ports/8080/tcp HTTP/1.1`) from `ready`.
pub fn answer(request_line: &str, ready: &LocalReadiness) -> Answer {
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return Answer::new(400, "Bad Request", format!("{USAGE}\n"));
    };
    if method != "GET" && method != "HEAD" {
        return Answer::new(405, "Method Not Allowed", format!("{USAGE}\n"));
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (port, protocol) = match parts.as_slice() {
        ["ports", port] => (*port, "tcp"),
        ["ports", port, protocol] => (*port, *protocol),
        _ => return Answer::new(404, "Not Found", format!("{USAGE}\n")),
    };
    let Some(protocol) = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .find(|known| known.nft_name() == protocol.to_ascii_lowercase())
    else {
        return Answer::new(
            400,
            "Bad Request",
            format!("unknown protocol {protocol:?}: {USAGE}\n"),
        );
    };
    let Ok(port) = port.parse::<u16>() else {
        return Answer::new(
            400,
            "Bad Request",
            format!("{port:?} is not a port number: {USAGE}\n"),
        );
    };
    let name = format!("{port}/{}", protocol.nft_name());
    match ready.get(&(protocol, port)) {
        None => Answer::new(
            404,
            "Not Found",
            format!("{name} is not published on this node\n"),
        ),
        Some(0) => Answer::new(
            503,
            "Service Unavailable",
            format!("{name}: no ready task on this node\n"),
        ),
        Some(count) => Answer::new(
            200,
            "OK",
            format!("{name}: {count} ready task(s) on this node\n"),
        ),
    }
}

/// The endpoint's listener; it stops when dropped.
pub struct HealthServer {
    address: SocketAddr,
    ready: watch::Sender<LocalReadiness>,
    accepting: JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl HealthServer {
    /// Listens on `address` and answers from what [`HealthServer::set`] last gave.
    pub async fn start(address: SocketAddr) -> io::Result<HealthServer> {
        let listener = TcpListener::bind(address).await?;
        let (ready, watching) = watch::channel(LocalReadiness::new());
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(serve(stream, watching.clone()));
            }
        });
        Ok(HealthServer {
            address,
            ready,
            accepting,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What it answers from now on.
    pub fn set(&self, ready: LocalReadiness) {
        self.ready.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
    }
}

async fn serve(mut stream: tokio::net::TcpStream, ready: watch::Receiver<LocalReadiness>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 256];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !request.windows(2).any(|pair| pair == b"\r\n") && request.len() < MAX_REQUEST {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => request.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let text = String::from_utf8_lossy(&request);
    let line = text.lines().next().unwrap_or_default();
    let answer = answer(line, &ready.borrow());
    let _ = stream.write_all(answer.to_http().as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::mesh::{Crossing, TrafficPolicy};

    fn ready() -> LocalReadiness {
        readiness(&[
            PublishedPort {
                protocol: Protocol::Tcp,
                port: 8080,
                policy: TrafficPolicy::PreferLocal,
                local: BTreeSet::from([
                    "10.0.0.5:80".parse().unwrap(),
                    "10.0.0.6:80".parse().unwrap(),
                ]),
                cluster: BTreeSet::new(),
                crossing: Crossing::Overlay,
            },
            PublishedPort {
                protocol: Protocol::Udp,
                port: 8080,
                policy: TrafficPolicy::Local,
                local: BTreeSet::new(),
                cluster: BTreeSet::new(),
                crossing: Crossing::Overlay,
            },
        ])
    }

    #[test]
    fn a_port_with_local_tasks_is_healthy_one_without_is_not() {
        let ready = ready();
        let ok = answer("GET /ports/8080 HTTP/1.1", &ready);
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (200, "8080/tcp: 2 ready task(s) on this node\n")
        );
        let unavailable = answer("GET /ports/8080/UDP HTTP/1.1", &ready);
        assert_eq!(
            (unavailable.status, unavailable.body.as_str()),
            (503, "8080/udp: no ready task on this node\n")
        );
        assert_eq!(answer("HEAD /ports/9/sctp HTTP/1.0", &ready).status, 404);
        assert!(ok.to_http().starts_with("HTTP/1.0 200 OK\r\n"));
    }

    #[test]
    fn bad_requests_say_what_to_ask() {
        let ready = ready();
        for (line, status) in [
            ("", 400),
            ("POST /ports/8080 HTTP/1.1", 405),
            ("GET /metrics HTTP/1.1", 404),
            ("GET /ports/http HTTP/1.1", 400),
            ("GET /ports/8080/quic HTTP/1.1", 400),
        ] {
            let got = answer(line, &ready);
            assert_eq!(got.status, status, "{line}: {got:?}");
            assert!(got.body.contains("GET /ports/PORT"), "{line}: {got:?}");
        }
    }
}
