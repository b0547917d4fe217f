//! The routing-mesh figures' HTTP client: short HTTP/1.0 requests, each on a new connection,
//! from a fixed number of threads for a fixed time, each request's latency kept; and large
//! downloads, timed. Runs in the calling thread's network namespace (the threads it starts
//! inherit it).
//!
//! Each request is the harness's [`get`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::http::get;

/// A request not answered within this long fails (a dropped SYN is retried after 1 s, so this
/// leaves room for a few).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
                        match get(target, path, &mut buffer, REQUEST_TIMEOUT) {
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
        let received = get(target, path, &mut buffer, REQUEST_TIMEOUT)?;
        if received != size {
            return Err(format!("{target}{path}: {received} bytes, not {size}"));
        }
    }
    Ok((times as u64 * size) as f64 / 1e6 / started.elapsed().as_secs_f64())
}
