//! What every Docker object shares: labels, `Version`, `CreatedAt` and `UpdatedAt`, drivers,
//! times as Go's RFC3339Nano and durations as Go's `time.Duration` (integer nanoseconds), and
//! Go's `omitempty`.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use shoal_proto::api;

use super::ShapeError;
use super::read::Object;

/// Labels or options as a JSON object, keys sorted.
pub(crate) fn labels_json(labels: &HashMap<String, String>) -> Value {
    let sorted: BTreeMap<&String, &String> = labels.iter().collect();
    json!(sorted)
}

/// Inserts the value unless it is Go's zero value, as `omitempty` leaves those out.
pub(crate) fn insert_nonempty(object: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::Bool(b) => !b,
    };
    if !empty {
        object.insert(key.to_owned(), value);
    }
}

/// Docker's `TLSInfo`: the trusted roots as PEM text, the issuer's subject and public key as
/// DER (base64, as Go writes bytes); empty parts left out.
pub(crate) fn tls_info_json(info: Option<&api::NodeTlsInfo>) -> Value {
    use base64::Engine as _;
    use base64::prelude::BASE64_STANDARD;
    let mut object = Map::new();
    if let Some(info) = info {
        insert_nonempty(
            &mut object,
            "TrustRoot",
            json!(String::from_utf8_lossy(&info.trust_root)),
        );
        for (key, bytes) in [
            ("CertIssuerSubject", &info.cert_issuer_subject),
            ("CertIssuerPublicKey", &info.cert_issuer_public_key),
        ] {
            insert_nonempty(&mut object, key, json!(BASE64_STANDARD.encode(bytes)));
        }
    }
    Value::Object(object)
}

/// Go's RFC3339Nano (trailing zeros of the fraction dropped), as Docker writes `CreatedAt`; a
/// missing time reads as the epoch.
pub fn rfc3339_nano(timestamp: Option<&api::Timestamp>) -> String {
    let time = timestamp
        .and_then(|timestamp| SystemTime::try_from(*timestamp).ok())
        .unwrap_or(UNIX_EPOCH);
    spec::time::rfc3339_nano(time)
}

/// A protobuf duration in nanoseconds, as Go's `time.Duration` marshals to JSON.
pub fn duration_nanos(duration: &api::Duration) -> i64 {
    duration
        .seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(duration.nanos))
}

/// The protobuf duration of Go's `time.Duration`; [`duration_nanos`] reads it back. A negative
/// one stays negative for the manager's rules to refuse.
pub(crate) fn duration_from_nanos(nanos: i64) -> api::Duration {
    api::Duration {
        seconds: nanos / 1_000_000_000,
        // The remainder's magnitude is below 10⁹, so it fits.
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

/// Docker's `Version`: the Raft index that last changed the object.
pub(crate) fn version_json(meta: Option<&api::Meta>) -> Value {
    json!({"Index": meta.and_then(|m| m.version.as_ref()).map_or(0, |v| v.index)})
}

/// `ID` and Docker's `Meta` (`Version`, `CreatedAt`, `UpdatedAt`), which every stored object
/// starts with.
pub(crate) fn insert_meta(object: &mut Map<String, Value>, id: &str, meta: Option<&api::Meta>) {
    object.insert("ID".into(), json!(id));
    object.insert("Version".into(), version_json(meta));
    object.insert(
        "CreatedAt".into(),
        json!(rfc3339_nano(meta.and_then(|m| m.created_at.as_ref()))),
    );
    object.insert(
        "UpdatedAt".into(),
        json!(rfc3339_nano(meta.and_then(|m| m.updated_at.as_ref()))),
    );
}

/// Docker's `Driver`: a name and options, each left out when empty.
pub(crate) fn driver_json(driver: &api::Driver) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Name", json!(driver.name));
    insert_nonempty(&mut object, "Options", labels_json(&driver.options));
    Value::Object(object)
}

/// Docker's `*Driver` under `key`; `None` when absent.
pub(crate) fn driver_from_json(
    object: &Object<'_>,
    key: &str,
) -> Result<Option<api::Driver>, ShapeError> {
    object
        .object(key, "swarm.Driver")?
        .map(|driver| {
            Ok(api::Driver {
                name: driver.string("Name")?,
                options: driver.string_map("Options")?,
            })
        })
        .transpose()
}

/// A spec's name and labels, from Docker's embedded `Annotations`.
pub(crate) fn annotations_from_json(object: &Object<'_>) -> Result<api::Annotations, ShapeError> {
    Ok(api::Annotations {
        name: object.string("Name")?,
        labels: object.string_map("Labels")?,
        indices: Vec::new(),
    })
}
