//! How single values print: times, durations, sizes, CPUs, image names and the words of enums.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use shoal_proto::api;

/// JSON indented with four spaces, as `docker inspect` prints it.
pub(crate) fn pretty_json(value: &Value) -> anyhow::Result<String> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
}

/// go-units' `HumanDuration`, which docker prints in `ps`, `info` and every list.
pub(crate) use spec::human::human_duration;

pub(crate) fn system_time(timestamp: Option<&api::Timestamp>) -> Option<SystemTime> {
    SystemTime::try_from(*timestamp?).ok()
}

/// Go's `time.Time.String()` lowercased, as `node inspect --pretty` prints "Joined at".
pub(crate) fn go_time_string(timestamp: Option<&api::Timestamp>) -> String {
    let nano = rfc3339_nano(timestamp);
    format!(
        "{} +0000 utc",
        nano.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

pub(crate) use spec::time::std_duration;

// The words and values Docker's API documents use, from their one home.
pub(crate) use docker_api::shape::common::{duration_nanos, rfc3339_nano};
pub(crate) use docker_api::shape::container::{mount_type_name, of_task as container};
pub(crate) use docker_api::shape::service::{protocol_name, publish_mode_name, update_state_name};
pub(crate) use docker_api::shape::task::task_state_name;

/// The image without its `@sha256:…` pin when it also has a tag, as `service ls` and `ps` show.
pub(crate) fn display_image(image: &str) -> String {
    match image.split_once('@') {
        Some((named, _digest)) if has_tag(named) => named.to_owned(),
        _ => image.to_owned(),
    }
}

pub(super) fn has_tag(named: &str) -> bool {
    let last = named.rsplit('/').next().unwrap_or(named);
    last.contains(':')
}

/// `service ls`'s MODE column, in Docker's words for it: the job modes are spelled with a space
/// here, where flags and compose files take `replicated-job`.
pub(crate) fn mode_name(spec: &api::ServiceSpec) -> &'static str {
    match spec.mode {
        Some(api::service_spec::Mode::Replicated(_)) => "replicated",
        Some(api::service_spec::Mode::Global(_)) => "global",
        Some(api::service_spec::Mode::ReplicatedJob(_)) => "replicated job",
        Some(api::service_spec::Mode::GlobalJob(_)) => "global job",
        None => "",
    }
}

/// A decimal number of CPUs from nano-CPUs, as Go's `%v` prints a float64 (`0.5`, `2`).
pub(crate) fn cpus_text(nano_cpus: i64) -> String {
    let whole = nano_cpus / 1_000_000_000;
    let fraction = (nano_cpus % 1_000_000_000).unsigned_abs();
    if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:09}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

pub(super) fn go_duration(duration: Option<&api::Duration>) -> String {
    spec::units::format_duration(duration.map_or(Duration::ZERO, std_duration))
}
