//! The text form of every enum in the specs, as Docker's CLI, compose files and JSON output spell
//! them (`stop-first`, `on-failure`, `drain`, `dnsrr`, …), and back.

use shoal_proto::api::{
    NodeRole, endpoint_spec::ResolutionMode, mount, node_spec::Availability, port_config,
    restart_policy::RestartCondition, service_dependency, service_spec, update_config,
};

use crate::SpecError;

/// An enum with Docker's words for its values.
pub trait TextForm: Sized + Copy + PartialEq + 'static {
    /// What the value is, for messages: `restart condition`.
    const WHAT: &'static str;
    /// Every value with its word, in the order messages list them.
    const FORMS: &'static [(&'static str, Self)];

    /// Docker's word for the value.
    fn text(self) -> &'static str {
        Self::FORMS
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("unknown", |(text, _)| text)
    }

    /// The value Docker's word names; anything else is refused, listing the words.
    fn parse(text: &str) -> Result<Self, SpecError> {
        parse_form(text, Self::FORMS.iter())
    }

    /// The value Docker's word names, where only the `allowed` values are accepted (compose's
    /// volumes take three of the five mount types); anything else is refused, listing the words
    /// of the allowed values.
    fn parse_among(text: &str, allowed: &[Self]) -> Result<Self, SpecError> {
        parse_form(
            text,
            Self::FORMS
                .iter()
                .filter(|(_, value)| allowed.contains(value)),
        )
    }
}

fn parse_form<'a, T: TextForm>(
    text: &str,
    forms: impl Iterator<Item = &'a (&'static str, T)> + Clone,
) -> Result<T, SpecError> {
    forms
        .clone()
        .find(|(form, _)| *form == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| SpecError::UnknownName {
            what: T::WHAT,
            text: text.to_owned(),
            accepted: accepted(forms.map(|(form, _)| *form)),
        })
}

/// `a, b or c`.
fn accepted<'a>(forms: impl Iterator<Item = &'a str>) -> String {
    let forms: Vec<&str> = forms.collect();
    match forms.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

macro_rules! text_forms {
    ($type:ty, $what:literal, [$($text:literal => $value:expr),+ $(,)?]) => {
        impl TextForm for $type {
            const WHAT: &'static str = $what;
            const FORMS: &'static [(&'static str, Self)] = &[$(($text, $value)),+];
        }
    };
}

text_forms!(RestartCondition, "restart condition", [
    "none" => RestartCondition::None,
    "on-failure" => RestartCondition::OnFailure,
    "any" => RestartCondition::Any,
]);
text_forms!(update_config::UpdateOrder, "update order", [
    "stop-first" => update_config::UpdateOrder::StopFirst,
    "start-first" => update_config::UpdateOrder::StartFirst,
]);
text_forms!(update_config::FailureAction, "failure action", [
    "pause" => update_config::FailureAction::Pause,
    "continue" => update_config::FailureAction::Continue,
    "rollback" => update_config::FailureAction::Rollback,
]);
text_forms!(ResolutionMode, "endpoint mode", [
    "vip" => ResolutionMode::Vip,
    "dnsrr" => ResolutionMode::Dnsrr,
]);
text_forms!(port_config::PublishMode, "publish mode", [
    "ingress" => port_config::PublishMode::Ingress,
    "host" => port_config::PublishMode::Host,
]);
text_forms!(port_config::Protocol, "protocol", [
    "tcp" => port_config::Protocol::Tcp,
    "udp" => port_config::Protocol::Udp,
    "sctp" => port_config::Protocol::Sctp,
]);
text_forms!(port_config::TrafficPolicy, "traffic policy", [
    "prefer-local" => port_config::TrafficPolicy::PreferLocal,
    "cluster" => port_config::TrafficPolicy::Cluster,
    "local" => port_config::TrafficPolicy::Local,
]);
text_forms!(mount::Type, "mount type", [
    "bind" => mount::Type::Bind,
    "volume" => mount::Type::Volume,
    "tmpfs" => mount::Type::Tmpfs,
    "npipe" => mount::Type::Npipe,
    "cluster" => mount::Type::Cluster,
]);
text_forms!(mount::bind_options::Propagation, "bind propagation", [
    "rprivate" => mount::bind_options::Propagation::Rprivate,
    "private" => mount::bind_options::Propagation::Private,
    "rshared" => mount::bind_options::Propagation::Rshared,
    "shared" => mount::bind_options::Propagation::Shared,
    "rslave" => mount::bind_options::Propagation::Rslave,
    "slave" => mount::bind_options::Propagation::Slave,
]);
text_forms!(Availability, "availability", [
    "active" => Availability::Active,
    "pause" => Availability::Pause,
    "drain" => Availability::Drain,
]);
text_forms!(NodeRole, "role", [
    "worker" => NodeRole::Worker,
    "manager" => NodeRole::Manager,
]);

// Compose's words for `depends_on` conditions; Docker's own CLI has no flag for them.
text_forms!(service_dependency::Condition, "dependency condition", [
    "service_started" => service_dependency::Condition::Started,
    "service_healthy" => service_dependency::Condition::Healthy,
    "service_completed_successfully" => service_dependency::Condition::CompletedSuccessfully,
]);

/// A service's mode, which the spec holds as a oneof rather than an enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeName {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

text_forms!(ModeName, "mode", [
    "replicated" => ModeName::Replicated,
    "global" => ModeName::Global,
    "replicated-job" => ModeName::ReplicatedJob,
    "global-job" => ModeName::GlobalJob,
]);

impl ModeName {
    /// The mode of a spec's oneof.
    pub fn of(mode: &service_spec::Mode) -> ModeName {
        match mode {
            service_spec::Mode::Replicated(_) => ModeName::Replicated,
            service_spec::Mode::Global(_) => ModeName::Global,
            service_spec::Mode::ReplicatedJob(_) => ModeName::ReplicatedJob,
            service_spec::Mode::GlobalJob(_) => ModeName::GlobalJob,
        }
    }
}

/// Docker's word for a numeric enum value as the spec stores it; `unknown` for a number the
/// enum does not have.
pub fn text_of<T: TextForm + TryFrom<i32>>(value: i32) -> &'static str {
    T::try_from(value).map_or("unknown", TextForm::text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: TextForm + std::fmt::Debug>() {
        for (text, value) in T::FORMS {
            assert_eq!(value.text(), *text);
            assert_eq!(T::parse(text), Ok(*value));
        }
    }

    #[test]
    fn every_form_round_trips() {
        round_trips::<RestartCondition>();
        round_trips::<update_config::UpdateOrder>();
        round_trips::<update_config::FailureAction>();
        round_trips::<ResolutionMode>();
        round_trips::<port_config::PublishMode>();
        round_trips::<port_config::Protocol>();
        round_trips::<port_config::TrafficPolicy>();
        round_trips::<mount::Type>();
        round_trips::<mount::bind_options::Propagation>();
        round_trips::<Availability>();
        round_trips::<NodeRole>();
        round_trips::<ModeName>();
        round_trips::<service_dependency::Condition>();
    }

    #[test]
    fn unknown_words_list_the_accepted_ones() {
        assert_eq!(
            RestartCondition::parse("always").unwrap_err().to_string(),
            "invalid restart condition \"always\": use none, on-failure or any"
        );
        assert_eq!(
            update_config::UpdateOrder::parse("first")
                .unwrap_err()
                .to_string(),
            "invalid update order \"first\": use stop-first or start-first"
        );
        assert_eq!(
            mount::Type::parse_among("npipe", &[mount::Type::Bind, mount::Type::Tmpfs])
                .unwrap_err()
                .to_string(),
            "invalid mount type \"npipe\": use bind or tmpfs"
        );
        assert_eq!(
            mount::Type::parse_among("tmpfs", &[mount::Type::Bind, mount::Type::Tmpfs]),
            Ok(mount::Type::Tmpfs)
        );
        assert_eq!(text_of::<RestartCondition>(1), "on-failure");
        assert_eq!(text_of::<RestartCondition>(99), "unknown");
    }
}
