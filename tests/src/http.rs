//! A minimal HTTP/1.0 client for tests and benchmarks: one `GET` on a new connection, a 200
//! answer (its size, or its body as text) or why not. Written on std sockets rather than with an HTTP crate: it sends one fixed
//! request and reads one status line, and the harness package depends on no HTTP client.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` from `target` on a new connection, reading the answer with `buffer`, each step
/// bounded by `timeout`: the size of the body, when the status is 200.
pub fn get(
    target: SocketAddr,
    path: &str,
    buffer: &mut [u8],
    timeout: Duration,
) -> Result<u64, String> {
    let mut stream = send_get(target, path, timeout)?;
    let mut head = Vec::new();
    let mut received: u64 = 0;
    loop {
        let read = match stream.read(buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("receive from {target}: {error}")),
        };
        received += read as u64;
        // Only the head is kept, so a large body costs no copy.
        if head.len() < HEAD_LIMIT {
            head.extend_from_slice(&buffer[..read.min(HEAD_LIMIT - head.len())]);
        }
    }
    body_size(&head, received).map_err(|error| format!("{target}{path}: {error}"))
}

/// `GET path` from `target` on a new connection, each step bounded by `timeout`: the body as
/// text, when the status is 200.
pub fn get_text(target: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let mut stream = send_get(target, path, timeout)?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| format!("receive from {target}: {error}"))?;
    let size = body_size(&answer, answer.len() as u64)
        .map_err(|error| format!("{target}{path}: {error}"))?;
    let body = &answer[answer.len() - size as usize..];
    String::from_utf8(body.to_vec()).map_err(|error| format!("{target}{path}: {error}"))
}

/// Connects to `target` and sends `GET path`, with `timeout` on the connection and on every
/// read and write after.
fn send_get(target: SocketAddr, path: &str, timeout: Duration) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|error| format!("connect to {target}: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()))
        .map_err(|error| format!("send to {target}: {error}"))?;
    Ok(stream)
}

/// How much of an answer [`get`] keeps to find its status line and the end of its head.
const HEAD_LIMIT: usize = 4096;

/// The body's size in an answer of `received` bytes whose first bytes are `head`, when its
/// status is 200.
fn body_size(head: &[u8], received: u64) -> Result<u64, String> {
    let status = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    if !(status.starts_with(b"HTTP/1.0 200") || status.starts_with(b"HTTP/1.1 200")) {
        return Err(format!(
            "answered {:?}",
            String::from_utf8_lossy(&status[..status.len().min(40)])
        ));
    }
    let head_length = head
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("no end of the head in the answer's first 4 KiB")?
        + 4;
    Ok(received - head_length as u64)
}

#[cfg(test)]
mod tests {
    use super::{body_size, get_text};

    #[test]
    fn the_body_is_what_follows_the_head_of_a_200_answer() {
        let head = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(body_size(head, head.len() as u64), Ok(5));
        // Only the head's first bytes are kept; the size comes from the count.
        assert_eq!(body_size(head, 1_000_038), Ok(1_000_000));
    }

    #[test]
    fn another_status_or_a_head_without_end_is_an_error() {
        assert_eq!(
            body_size(b"HTTP/1.0 404 Not Found\r\n\r\n", 26),
            Err("answered \"HTTP/1.0 404 Not Found\"".to_owned())
        );
        assert!(body_size(b"HTTP/1.0 200 OK\r\nServer: x", 26).is_err());
    }

    #[test]
    fn get_text_returns_the_body_of_a_200_answer() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let read = stream.read(&mut request).unwrap();
            stream
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nshoal_up 1\n\n")
                .unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        let body = get_text(target, "/metrics", std::time::Duration::from_secs(5));
        assert_eq!(body, Ok("shoal_up 1\n\n".to_owned()));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /metrics HTTP/1.0\r\n")
        );
    }
}
