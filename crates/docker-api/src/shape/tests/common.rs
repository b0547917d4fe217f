//! Times and durations as Docker writes them.

use super::*;
use crate::shape::common::{duration_from_nanos, duration_nanos, rfc3339_nano};

#[test]
fn times_are_gos_rfc3339_nano() {
    assert_eq!(
        rfc3339_nano(Some(&api::Timestamp {
            seconds: 1_700_000_000,
            nanos: 120_000_000
        })),
        "2023-11-14T22:13:20.12Z"
    );
    assert_eq!(
        rfc3339_nano(Some(&ts(1_700_000_000))),
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(rfc3339_nano(None), "1970-01-01T00:00:00Z");
}

#[test]
fn durations_are_nanoseconds_both_ways() {
    for nanos in [
        0,
        1,
        999_999_999,
        1_000_000_000,
        90_500_000_000,
        -1_500_000_000,
    ] {
        let duration = duration_from_nanos(nanos);
        assert_eq!(duration_nanos(&duration), nanos, "{duration:?}");
        // protobuf's rule: seconds and nanos never have opposite signs.
        assert!(duration.seconds.signum() * i64::from(duration.nanos.signum()) >= 0);
    }
    assert_eq!(duration_from_nanos(5_000_000_000), seconds(5).unwrap());
    assert_eq!(
        duration_nanos(&api::Duration {
            seconds: i64::MAX,
            nanos: 0
        }),
        i64::MAX
    );
}
