//! Healthcheck bookkeeping with docker's semantics, as a pure state machine: probes are fed in,
//! the status comes out. The engine runs the probes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Health as docker reports it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No verdict yet.
    #[default]
    Starting,
    /// The last probe passed.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Starting => "health: starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One probe's result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// Exit code; -1 for a timeout or a failure to run.
    pub exit_code: i32,
    /// The first few KiB of output.
    pub output: String,
}

/// Health state of one container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthState {
    /// Current verdict.
    pub status: HealthStatus,
    /// Consecutive failures counted so far.
    pub failing_streak: u32,
    /// The last five probes.
    pub log: VecDeque<Probe>,
}

impl HealthState {
    /// Records a probe. Failures inside the start period do not count, but a pass there
    /// already makes the container healthy, as in docker.
    pub fn record(&mut self, probe: Probe, in_start_period: bool, retries: u32) {
        let passed = probe.exit_code == 0;
        self.log.push_back(probe);
        while self.log.len() > 5 {
            self.log.pop_front();
        }
        if passed {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(exit_code: i32) -> Probe {
        Probe {
            start: String::new(),
            end: String::new(),
            exit_code,
            output: String::new(),
        }
    }

    #[test]
    fn flips_after_retries_and_recovers() {
        let mut state = HealthState::default();
        state.record(probe(1), true, 2);
        assert_eq!(
            (state.status, state.failing_streak),
            (HealthStatus::Starting, 0)
        );
        state.record(probe(0), false, 2);
        assert_eq!(state.status, HealthStatus::Healthy);
        state.record(probe(1), false, 2);
        assert_eq!(state.status, HealthStatus::Healthy);
        state.record(probe(1), false, 2);
        assert_eq!(state.status, HealthStatus::Unhealthy);
        state.record(probe(0), false, 2);
        assert_eq!(
            (state.status, state.failing_streak),
            (HealthStatus::Healthy, 0)
        );
        for _ in 0..10 {
            state.record(probe(0), false, 2);
        }
        assert_eq!(state.log.len(), 5);
    }
}
