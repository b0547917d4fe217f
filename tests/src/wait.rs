//! Polling instead of sleeping: wait for a condition with a deadline, and report the last thing
//! seen when it never came true.

use std::time::{Duration, Instant};

use crate::HarnessError;

/// How long [`poll_until`] waits between two observations.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `observe` until it returns `Ok`, every 50 ms, for at most `timeout`. The error names
/// `description` and carries the last observation (the `Err` text).
pub fn poll_until<T>(
    description: &str,
    timeout: Duration,
    mut observe: impl FnMut() -> Result<T, String>,
) -> Result<T, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        match observe() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                return Err(HarnessError::Timeout {
                    description: description.to_owned(),
                    timeout,
                    last,
                });
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// [`poll_until`] for tests: panics with the description and the last observation on timeout.
pub fn wait_until<T>(
    description: &str,
    timeout: Duration,
    observe: impl FnMut() -> Result<T, String>,
) -> T {
    poll_until(description, timeout, observe).unwrap_or_else(|error| panic!("{error}"))
}
