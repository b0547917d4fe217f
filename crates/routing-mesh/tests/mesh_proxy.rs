//! The userspace mesh on loopback: a published port proxies TCP and UDP to its task, refuses
//! when no task is ready, and closes when the port goes.

use std::collections::BTreeSet;
use std::net::{SocketAddrV4, TcpListener as StdTcpListener};
use std::time::Duration;

use routing_mesh::mesh::{Crossing, PublishedPort, TrafficPolicy, UserspaceProxy};
use routing_mesh::vip::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A port number free on this machine now.
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn published(protocol: Protocol, port: u16, backends: &[SocketAddrV4]) -> PublishedPort {
    PublishedPort {
        protocol,
        port,
        policy: TrafficPolicy::PreferLocal,
        local: BTreeSet::new(),
        cluster: backends.iter().copied().collect::<BTreeSet<_>>(),
        crossing: Crossing::Overlay,
    }
}

fn loopback(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

#[tokio::test]
async fn tcp_goes_to_the_task_and_is_refused_without_one() {
    let task = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task_port = task.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = task.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 64];
                while let Ok(count) = stream.read(&mut buffer).await {
                    if count == 0 || stream.write_all(&buffer[..count]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let port = free_port();
    let mut proxy = UserspaceProxy::default();
    let failures = proxy
        .set(&[published(Protocol::Tcp, port, &[loopback(task_port)])])
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let mut client = TcpStream::connect(loopback(port)).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut answer = [0u8; 5];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"hello");

    // No ready task: accepted and closed at once.
    proxy.set(&[published(Protocol::Tcp, port, &[])]).await;
    let mut refused = TcpStream::connect(loopback(port)).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), refused.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // The established connection keeps its task.
    client.write_all(b"again").await.unwrap();
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"again");

    // The port gone: nothing listens.
    proxy.set(&[]).await;
    assert!(TcpStream::connect(loopback(port)).await.is_err());
}

#[tokio::test]
async fn udp_clients_get_their_task_s_answers() {
    let task = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let task_port = task.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buffer = [0u8; 64];
        while let Ok((count, from)) = task.recv_from(&mut buffer).await {
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&buffer[..count]);
            let _ = task.send_to(&answer, from).await;
        }
    });
    let port = free_port();
    let mut proxy = UserspaceProxy::default();
    let failures = proxy
        .set(&[published(Protocol::Udp, port, &[loopback(task_port)])])
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    for name in ["a", "b"] {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(name.as_bytes(), loopback(port))
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        let (count, _) =
            tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buffer))
                .await
                .expect("an answer in time")
                .unwrap();
        assert_eq!(&buffer[..count], format!("pong:{name}").as_bytes());
    }
}

#[tokio::test]
async fn sctp_is_refused_with_why() {
    let mut proxy = UserspaceProxy::default();
    let failures = proxy
        .set(&[published(Protocol::Sctp, free_port(), &[loopback(9)])])
        .await;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].contains("needs nftables"), "{failures:?}");
}
