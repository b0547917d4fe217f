//! How single values print: times, durations, sizes, CPUs, image names and the words of enums.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shoal_proto::api;
use spec::enums::{TextForm, text_of};

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

/// Go's RFC3339Nano (trailing zeros of the fraction dropped), as docker prints `CreatedAt`.
pub(crate) fn rfc3339_nano(timestamp: Option<&api::Timestamp>) -> String {
    spec::time::rfc3339_nano(system_time(timestamp).unwrap_or(UNIX_EPOCH))
}

/// Go's `time.Time.String()` lowercased, as `node inspect --pretty` prints "Joined at".
pub(crate) fn go_time_string(timestamp: Option<&api::Timestamp>) -> String {
    let nano = rfc3339_nano(timestamp);
    format!(
        "{} +0000 utc",
        nano.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// A protobuf duration in nanoseconds, as Go's `time.Duration` marshals to JSON.
pub(crate) fn duration_nanos(duration: &api::Duration) -> i64 {
    duration
        .seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(duration.nanos))
}

pub(crate) use spec::time::std_duration;

/// docker's lower-case task state name.
pub(crate) fn task_state_name(state: i32) -> &'static str {
    use api::TaskState as S;
    match S::try_from(state) {
        Ok(S::New) => "new",
        Ok(S::Pending) => "pending",
        Ok(S::Assigned) => "assigned",
        Ok(S::Accepted) => "accepted",
        Ok(S::Preparing) => "preparing",
        Ok(S::Ready) => "ready",
        Ok(S::Starting) => "starting",
        Ok(S::Running) => "running",
        Ok(S::Complete) => "complete",
        Ok(S::Shutdown) => "shutdown",
        Ok(S::Failed) => "failed",
        Ok(S::Rejected) => "rejected",
        Ok(S::Remove) => "remove",
        Ok(S::Orphaned) => "orphaned",
        Err(_) => "unknown",
    }
}

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

pub(crate) fn container(spec: Option<&api::TaskSpec>) -> Option<&api::ContainerSpec> {
    match spec?.runtime.as_ref()? {
        api::task_spec::Runtime::Container(container) => Some(container),
        _ => None,
    }
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

pub(super) fn protocol_name(protocol: i32) -> &'static str {
    text_of::<api::port_config::Protocol>(protocol)
}

pub(super) fn publish_mode_name(mode: i32) -> &'static str {
    text_of::<api::port_config::PublishMode>(mode)
}

pub(super) fn mount_type_name(kind: i32) -> &'static str {
    text_of::<api::mount::Type>(kind)
}

/// A bind mount's propagation; empty for a number the enum does not have.
pub(super) fn propagation_name(propagation: i32) -> &'static str {
    api::mount::bind_options::Propagation::try_from(propagation).map_or("", TextForm::text)
}

pub(crate) fn restart_condition_name(condition: i32) -> &'static str {
    text_of::<api::restart_policy::RestartCondition>(condition)
}

pub(super) fn update_state_name(state: i32) -> &'static str {
    use api::update_status::UpdateState as U;
    match U::try_from(state) {
        Ok(U::Updating) => "updating",
        Ok(U::Paused) => "paused",
        Ok(U::Completed) => "completed",
        Ok(U::RollbackStarted) => "rollback_started",
        Ok(U::RollbackPaused) => "rollback_paused",
        Ok(U::RollbackCompleted) => "rollback_completed",
        _ => "",
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
