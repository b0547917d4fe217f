//! Times as text and as messages. RFC 3339 as Docker writes it (its json-file log driver's
//! nine fraction digits, and Go's RFC3339Nano that the CLI prints), calendar maths by the `time`
//! crate. And the one home of the readings shoal adds to protobuf's `Duration` and `Timestamp`
//! (prost-types). The conversions themselves are prost-types' `TryFrom`/`From`; what this adds
//! is what a reader of a stored object wants where those refuse: a negative duration or a time
//! before the epoch, which no rule lets into a spec, reads as zero, and a span too large for a
//! message saturates instead of failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;
use ::time::format_description::BorrowedFormatItem;
use ::time::format_description::well_known::Rfc3339;
use ::time::macros::format_description;
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

/// RFC 3339 in UTC with all nine digits of nanoseconds, as docker's json-file log driver writes.
const RFC3339_NANOS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats a time as RFC 3339 in UTC with nanoseconds, as docker's json-file log driver does.
/// Times before the epoch are written as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let at = OffsetDateTime::UNIX_EPOCH
        .checked_add(::time::Duration::try_from(since).unwrap_or(::time::Duration::ZERO))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // Formatting fails only for a year past 9999, which no clock of ours reaches.
    at.format(RFC3339_NANOS).unwrap_or_default()
}

/// Parses RFC 3339 in UTC (`Z` suffix), as [`rfc3339`] writes it, with any number of fraction
/// digits; returns `None` for anything else, and for times before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    if !text.ends_with('Z') {
        return None;
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let since = u64::try_from(at.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::new(since, at.nanosecond()))
}

/// Go's RFC3339Nano: RFC 3339 in UTC with the fraction's trailing zeros dropped (none at all
/// for a whole second), as Docker's CLI prints `CreatedAt`.
pub fn rfc3339_nano(time: SystemTime) -> String {
    let fixed = rfc3339(time);
    match fixed.rsplit_once('.') {
        Some((whole, fraction)) => {
            let digits = fraction.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{digits}Z")
            }
        }
        None => fixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let time = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let text = rfc3339(time);
        assert_eq!(text, "2026-11-18T11:06:40.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(time));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn rfc3339_writes_the_calendar_across_leap_years_and_ends_of_years() {
        let at = |secs: u64, nanos: u32| rfc3339(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(
            at(1_735_689_599, 999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(at(4_107_542_400, 7), "2100-03-01T00:00:00.000000007Z");
        assert_eq!(at(68_169_600, 1_000), "1972-02-29T00:00:00.000001000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000000000Z",
            "times before the epoch are written as the epoch"
        );
    }
    #[test]
    fn parse_rfc3339_takes_utc_with_any_fraction_and_refuses_the_rest() {
        let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), at(951_782_400, 0));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            at(951_782_400, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-12-31T23:59:59.123Z"),
            at(1_735_689_599, 123_000_000)
        );
        for refused in [
            "",
            "2024-12-31",
            "2024-12-31T23:59:59",
            "2024-12-31T23:59:59+01:00",
            "2024-13-01T00:00:00Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn rfc3339_nano_drops_the_fractions_trailing_zeros() {
        let at = |secs: u64, nanos: u32| rfc3339_nano(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_782_400, 120_000_000), "2000-02-29T00:00:00.12Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000000007Z");
    }

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
