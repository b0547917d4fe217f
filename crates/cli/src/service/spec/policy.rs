//! `--update-*` and `--rollback-*`: the update and rollback configs they set.

use shoal_proto::api;
use spec::enums::TextForm as _;

use super::*;

/// The six settings of an update or rollback policy, as given on the command line.
pub(super) struct PolicyFlags<'args> {
    /// `update` or `rollback`: the flags' prefix.
    pub(super) which: &'static str,
    pub(super) parallelism: Option<u64>,
    pub(super) delay: Option<&'args str>,
    pub(super) failure_action: Option<&'args str>,
    pub(super) monitor: Option<&'args str>,
    pub(super) max_failure_ratio: Option<&'args str>,
    pub(super) order: Option<&'args str>,
}

impl UpdatePolicyArgs {
    pub(super) fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            which: "update",
            parallelism: self.update_parallelism,
            delay: self.update_delay.as_deref(),
            failure_action: self.update_failure_action.as_deref(),
            monitor: self.update_monitor.as_deref(),
            max_failure_ratio: self.update_max_failure_ratio.as_deref(),
            order: self.update_order.as_deref(),
        }
    }
}

impl RollbackPolicyArgs {
    pub(super) fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            which: "rollback",
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay.as_deref(),
            failure_action: self.rollback_failure_action.as_deref(),
            monitor: self.rollback_monitor.as_deref(),
            max_failure_ratio: self.rollback_max_failure_ratio.as_deref(),
            order: self.rollback_order.as_deref(),
        }
    }
}

impl PolicyFlags<'_> {
    pub(super) fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.failure_action.is_some()
            || self.monitor.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    /// Sets what the flags name in `config`, leaving the rest as it is.
    pub(super) fn apply(&self, config: &mut api::UpdateConfig) -> anyhow::Result<()> {
        use api::update_config::{FailureAction, UpdateOrder};
        let which = self.which;
        if let Some(parallelism) = self.parallelism {
            config.parallelism = parallelism;
        }
        if let Some(delay) = self.delay {
            config.delay = Some(parse_flag_duration(&format!("{which}-delay"), delay)?);
        }
        if let Some(monitor) = self.monitor {
            config.monitor = Some(parse_flag_duration(&format!("{which}-monitor"), monitor)?);
        }
        if let Some(action) = self.failure_action {
            let flag = format!("--{which}-failure-action");
            let parsed = FailureAction::parse(action).map_err(|error| error.in_field(&flag))?;
            // A rollback can't itself roll back: the rule compose files and the manager apply.
            if which == "rollback" {
                spec::validate::rollback_failure_action_rule(parsed)
                    .map_err(|error| error.in_field(&flag))?;
            }
            config.set_failure_action(parsed);
        }
        if let Some(ratio) = self.max_failure_ratio {
            config.max_failure_ratio = spec::validate::max_failure_ratio(ratio)
                .map_err(|error| error.in_field(format!("--{which}-max-failure-ratio")))?;
        }
        if let Some(order) = self.order {
            config.set_order(
                UpdateOrder::parse(order)
                    .map_err(|error| error.in_field(format!("--{which}-order")))?,
            );
        }
        Ok(())
    }
}

/// The config a new service gets: Swarm's defaults with what the flags change, or nothing when
/// no flag is given (the manager fills Swarm's defaults into every spec it stores).
pub(super) fn new_update_config(
    flags: &PolicyFlags<'_>,
) -> anyhow::Result<Option<api::UpdateConfig>> {
    if !flags.any() {
        return Ok(None);
    }
    let mut config = spec::defaults::update_config();
    flags.apply(&mut config)?;
    Ok(Some(config))
}
