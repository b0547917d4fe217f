//! The one home of the readings shoal adds to protobuf's `Duration` and `Timestamp`
//! (prost-types). The conversions themselves are prost-types' `TryFrom`/`From`; what this adds
//! is what a reader of a stored object wants where those refuse: a negative duration or a time
//! before the epoch, which no rule lets into a spec, reads as zero, and a span too large for a
//! message saturates instead of failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::api;

/// The longest span a message can carry.
const LONGEST: api::Duration = api::Duration {
    seconds: i64::MAX,
    nanos: 999_999_999,
};

/// A duration as a message carries it, saturating at `i64::MAX` seconds.
pub fn proto_duration(duration: Duration) -> api::Duration {
    api::Duration::try_from(duration).unwrap_or(LONGEST)
}

/// A duration read from a message; a negative one reads as zero.
pub fn std_duration(duration: &api::Duration) -> Duration {
    Duration::try_from(*duration).unwrap_or(Duration::ZERO)
}

/// How long after the Unix epoch a timestamp lies; zero for one before it.
pub fn since_unix_epoch(timestamp: &api::Timestamp) -> Duration {
    SystemTime::try_from(*timestamp)
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO)
}

/// The timestamp `since_unix_epoch` after the Unix epoch, saturating as [`proto_duration`] does.
pub fn timestamp_after_unix_epoch(since_unix_epoch: Duration) -> api::Timestamp {
    let span = proto_duration(since_unix_epoch);
    api::Timestamp {
        seconds: span.seconds,
        nanos: span.nanos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_negative_reads_as_zero_and_huge_saturates() {
        let span = Duration::new(90, 500_000_000);
        assert_eq!(std_duration(&proto_duration(span)), span);
        assert_eq!(
            std_duration(&api::Duration {
                seconds: -1,
                nanos: -5
            }),
            Duration::ZERO
        );
        assert_eq!(proto_duration(Duration::MAX), LONGEST);
    }

    #[test]
    fn timestamps_round_trip_and_before_the_epoch_reads_as_zero() {
        let since = Duration::new(1_714_979_289, 123_456_789);
        let timestamp = timestamp_after_unix_epoch(since);
        assert_eq!(
            timestamp,
            api::Timestamp {
                seconds: 1_714_979_289,
                nanos: 123_456_789
            }
        );
        assert_eq!(since_unix_epoch(&timestamp), since);
        assert_eq!(timestamp, api::Timestamp::from(UNIX_EPOCH + since));
        let before = api::Timestamp {
            seconds: -3,
            nanos: 0,
        };
        assert_eq!(since_unix_epoch(&before), Duration::ZERO);
    }
}
