//! Objects a store wrote while `shoal.api.Duration` and `Timestamp` were shoal's own messages
//! still decode now that they are `google.protobuf.Duration` and `Timestamp`: both shapes are
//! fields 1 (int64 seconds) and 2 (int32 nanos), so Raft logs and snapshots already on disk stay
//! readable.

use prost::Message;
use shoal_proto::api;

/// `shoal.api.Duration` and `Timestamp` as they were (the two had the same shape).
#[derive(Clone, PartialEq, prost::Message)]
struct OldSpan {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `shoal.api.Meta` with the old timestamps.
#[derive(Clone, PartialEq, prost::Message)]
struct OldMeta {
    #[prost(message, optional, tag = "1")]
    version: Option<api::Version>,
    #[prost(message, optional, tag = "2")]
    created_at: Option<OldSpan>,
    #[prost(message, optional, tag = "3")]
    updated_at: Option<OldSpan>,
}

/// `shoal.api.RestartPolicy` with the old durations.
#[derive(Clone, PartialEq, prost::Message)]
struct OldRestartPolicy {
    #[prost(int32, tag = "1")]
    condition: i32,
    #[prost(message, optional, tag = "2")]
    delay: Option<OldSpan>,
    #[prost(uint64, tag = "3")]
    max_attempts: u64,
    #[prost(message, optional, tag = "4")]
    window: Option<OldSpan>,
}

#[test]
fn timestamps_written_with_the_old_message_decode_as_google_timestamps() {
    let old = OldMeta {
        version: Some(api::Version { index: 42 }),
        created_at: Some(OldSpan {
            seconds: 1_714_979_289,
            nanos: 123_456_789,
        }),
        updated_at: Some(OldSpan {
            seconds: -3,
            nanos: 5,
        }),
    };
    let bytes = old.encode_to_vec();
    // The bytes as the old generated code wrote them, so the test does not hinge on the
    // hand-written shape above alone.
    assert_eq!(
        bytes,
        [
            0x0a, 0x02, 0x08, 0x2a, 0x12, 0x0b, 0x08, 0xd9, 0x83, 0xe2, 0xb1, 0x06, 0x10, 0x95,
            0x9a, 0xef, 0x3a, 0x1a, 0x0d, 0x08, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x01, 0x10, 0x05,
        ]
    );
    let meta = api::Meta::decode(bytes.as_slice()).expect("old bytes decode");
    assert_eq!(meta.version, Some(api::Version { index: 42 }));
    assert_eq!(
        meta.created_at,
        Some(api::Timestamp {
            seconds: 1_714_979_289,
            nanos: 123_456_789,
        })
    );
    assert_eq!(
        meta.updated_at,
        Some(api::Timestamp {
            seconds: -3,
            nanos: 5,
        })
    );
    assert_eq!(meta.encode_to_vec(), bytes);
}

#[test]
fn durations_written_with_the_old_message_decode_as_google_durations() {
    let old = OldRestartPolicy {
        condition: 1,
        delay: Some(OldSpan {
            seconds: 5,
            nanos: 0,
        }),
        max_attempts: 3,
        window: Some(OldSpan {
            seconds: 0,
            nanos: 250_000_000,
        }),
    };
    let bytes = old.encode_to_vec();
    let policy = api::RestartPolicy::decode(bytes.as_slice()).expect("old bytes decode");
    assert_eq!(
        policy.delay,
        Some(api::Duration {
            seconds: 5,
            nanos: 0
        })
    );
    assert_eq!(
        std::time::Duration::try_from(policy.window.expect("window")),
        Ok(std::time::Duration::from_millis(250))
    );
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.encode_to_vec(), bytes);
}
