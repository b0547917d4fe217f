//! Cluster time as a plain value: the orchestration cores are handed "now" and never read a clock.

use std::fmt;
use std::time::Duration;

use shoal_proto::api;

/// A point in time, measured from the Unix epoch, as the async shell read it from its clock
/// (or as a test's fake clock set it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterTime {
    since_unix_epoch: Duration,
}

impl ClusterTime {
    /// The Unix epoch itself; handy as the start of a fake clock.
    pub const UNIX_EPOCH: ClusterTime = ClusterTime {
        since_unix_epoch: Duration::ZERO,
    };

    /// The time that lies `since_unix_epoch` after the Unix epoch.
    pub const fn from_duration_since_unix_epoch(since_unix_epoch: Duration) -> ClusterTime {
        ClusterTime { since_unix_epoch }
    }

    /// How long after the Unix epoch this time lies.
    pub const fn duration_since_unix_epoch(self) -> Duration {
        self.since_unix_epoch
    }

    /// Reads a protobuf timestamp; times before the epoch are clamped to the epoch because
    /// no object in the store can legitimately carry one.
    pub fn from_proto_timestamp(timestamp: &api::Timestamp) -> ClusterTime {
        ClusterTime::from_duration_since_unix_epoch(spec::time::since_unix_epoch(timestamp))
    }

    /// Writes this time as a protobuf timestamp, saturating at `i64::MAX` seconds.
    pub fn to_proto_timestamp(self) -> api::Timestamp {
        spec::time::timestamp_after_unix_epoch(self.since_unix_epoch)
    }

    /// This time moved `later_by` into the future, saturating instead of overflowing.
    pub fn saturating_add(self, later_by: Duration) -> ClusterTime {
        ClusterTime::from_duration_since_unix_epoch(self.since_unix_epoch.saturating_add(later_by))
    }

    /// How long after `earlier` this time lies; zero if `earlier` is in fact later.
    pub fn saturating_duration_since(self, earlier: ClusterTime) -> Duration {
        self.since_unix_epoch
            .saturating_sub(earlier.since_unix_epoch)
    }
}

impl fmt::Display for ClusterTime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.since_unix_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_timestamps_round_trip_and_negative_values_clamp_to_the_epoch() {
        let time = ClusterTime::from_duration_since_unix_epoch(Duration::new(12, 5));
        assert_eq!(
            ClusterTime::from_proto_timestamp(&time.to_proto_timestamp()),
            time
        );
        let before_epoch = api::Timestamp {
            seconds: -3,
            nanos: 0,
        };
        assert_eq!(
            ClusterTime::from_proto_timestamp(&before_epoch),
            ClusterTime::UNIX_EPOCH
        );
    }
}
