//! The routing-mesh figures' HTTP client: short HTTP/1.0 requests, each on a new connection,
//! from a fixed number of threads for a fixed time, each request's latency kept; and large
//! downloads, timed. Runs in the calling thread's network namespace (the threads it starts
//! inherit it).
//!
//! Written on std sockets rather than with an HTTP crate: it sends one fixed request and reads
//! one status line, and the harness package depends on no HTTP client.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A request not answered within this long fails (a dropped SYN is retried after 1 s, so this
/// leaves room for a few).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What one run of [`http_load`] saw.
#[derive(Debug, Default)]
pub(crate) struct LoadRun {
    pub(crate) answered: u64,
    pub(crate) failed: u64,
    /// What went wrong the first time a request failed.
    pub(crate) first_failure: Option<String>,
    /// The latency of each answered request, from before connecting to the end of the answer.
    pub(crate) latencies: Vec<Duration>,
    pub(crate) elapsed: Duration,
}

impl LoadRun {
    pub(crate) fn requests_per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    fn absorb(&mut self, other: LoadRun) {
        self.answered += other.answered;
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        self.latencies.extend(other.latencies);
    }
}

/// `GET path` from `target` on a new connection, reading the answer with `buffer`: the size of
/// the body, when the status is 200.
pub(crate) fn get(target: SocketAddr, path: &str, buffer: &mut [u8]) -> Result<u64, String> {
    let mut stream = TcpStream::connect_timeout(&target, REQUEST_TIMEOUT)
        .map_err(|error| format!("connect to {target}: {error}"))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|()| stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()))
        .map_err(|error| format!("send to {target}: {error}"))?;
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

/// Sends `GET path` to `target` from `workers` threads, each one request after another on a new
/// connection, for `duration`.
pub(crate) fn http_load(
    target: SocketAddr,
    path: &str,
    workers: usize,
    duration: Duration,
) -> LoadRun {
    let started = Instant::now();
    let until = started + duration;
    let mut run = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut run = LoadRun::default();
                    let mut buffer = [0_u8; 4096];
                    while Instant::now() < until {
                        let sent = Instant::now();
                        match get(target, path, &mut buffer) {
                            Ok(_) => {
                                run.latencies.push(sent.elapsed());
                                run.answered += 1;
                            }
                            Err(error) => {
                                run.failed += 1;
                                run.first_failure.get_or_insert(error);
                            }
                        }
                    }
                    run
                })
            })
            .collect();
        let mut total = LoadRun::default();
        for thread in threads {
            total.absorb(thread.join().expect("a load thread"));
        }
        total
    });
    run.elapsed = started.elapsed();
    run
}

/// MB/s of `times` downloads of `GET path` from `target`, one after another, read in 1 MiB
/// reads; each body must be `size` bytes.
pub(crate) fn download(
    target: SocketAddr,
    path: &str,
    times: usize,
    size: u64,
) -> Result<f64, String> {
    let mut buffer = vec![0_u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..times {
        let received = get(target, path, &mut buffer)?;
        if received != size {
            return Err(format!("{target}{path}: {received} bytes, not {size}"));
        }
    }
    Ok((times as u64 * size) as f64 / 1e6 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::body_size;

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
}
