//! The small grammars of flag values: counts, durations, sizes, CPUs, `KEY=VALUE` lists, the
//! environment, and placement constraints and preferences.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use shoal_proto::api;

/// Parses a replica count, refusing negative numbers with a clear message.
pub(crate) fn parse_replicas(text: &str) -> anyhow::Result<u64> {
    parse_count(text, "replicas")
}

pub(super) fn parse_count(text: &str, what: &str) -> anyhow::Result<u64> {
    let trimmed = text.trim();
    if let Ok(value) = trimmed.parse::<u64>() {
        return Ok(value);
    }
    if trimmed.parse::<i128>().is_ok() {
        bail!("invalid {what} value {text}: the number of {what} must be 0 or more");
    }
    bail!("invalid {what} value {text:?}: use a whole number such as 3")
}

/// Parses one `SERVICE=N` argument of `service scale`.
pub(crate) fn parse_scale_arg(text: &str) -> anyhow::Result<(String, u64)> {
    let Some((service, replicas)) = text.split_once('=') else {
        bail!("invalid scale specifier {text:?}: use SERVICE=REPLICAS, e.g. web=3");
    };
    if service.is_empty() {
        bail!("invalid scale specifier {text:?}: use SERVICE=REPLICAS, e.g. web=3");
    }
    Ok((service.to_owned(), parse_replicas(replicas)?))
}

/// A Go duration for the flag `flag` (`1m30s`, `500ms`).
pub(crate) fn parse_flag_duration(flag: &str, text: &str) -> anyhow::Result<api::Duration> {
    spec::units::parse_duration(text)
        .map(spec::time::proto_duration)
        .map_err(|error| anyhow!(error.in_field(format!("--{flag}"))))
}

pub(super) fn parse_memory(flag: &str, text: &str) -> anyhow::Result<i64> {
    let bytes = spec::units::parse_ram_bytes(text)
        .map_err(|error| anyhow!(error.in_field(format!("--{flag}"))))?;
    i64::try_from(bytes).map_err(|_| anyhow!("--{flag}: {text:?} is too large"))
}

/// A decimal number of CPUs as nano-CPUs, exactly (docker's `NanoCPUs` flag).
pub(crate) fn parse_cpus(flag: &str, text: &str) -> anyhow::Result<i64> {
    let hint = "use a decimal number of CPUs such as 0.5 or 2";
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        bail!("--{flag}: invalid value {text:?}: CPUs can't be negative; {hint}");
    }
    let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        bail!("--{flag}: invalid value {text:?}: {hint}");
    }
    if fraction.len() > 9 {
        bail!("--{flag}: value {text:?} is too precise: use at most 9 decimals");
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| anyhow!("--{flag}: {text:?} is too large; {hint}"))?
    };
    let fraction: i64 = format!("{fraction:0<9}")
        .parse()
        .map_err(|_| anyhow!("--{flag}: invalid value {text:?}: {hint}"))?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(fraction))
        .ok_or_else(|| anyhow!("--{flag}: {text:?} is too large; {hint}"))
}

pub(super) fn key_values(items: &[String]) -> HashMap<String, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (item.clone(), String::new()),
        })
        .collect()
}

pub(super) fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// docker's `ValidateEnv`: `KEY` alone takes its value from the environment when it is set there.
/// `service create|update` and `container exec` read `-e` with it.
pub(crate) fn resolve_env(
    flag: &str,
    items: &[String],
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let key = env_key(item);
        if key.is_empty() {
            bail!("--{flag}: invalid environment variable {item:?}: use KEY=value");
        }
        let entry = if item.contains('=') {
            item.clone()
        } else {
            match lookup_env(key) {
                Some(value) => format!("{key}={value}"),
                None => item.clone(),
            }
        };
        out.retain(|existing| env_key(existing) != key);
        out.push(entry);
    }
    Ok(out)
}

pub(super) fn check_constraint(flag: &str, constraint: &str) -> anyhow::Result<()> {
    let ok = ["==", "!="].iter().any(|op| {
        constraint
            .split_once(op)
            .is_some_and(|(key, value)| !key.trim().is_empty() && !value.trim().is_empty())
    });
    if !ok {
        bail!(
            "--{flag}: invalid constraint {constraint:?}: use KEY==VALUE or KEY!=VALUE, e.g. node.role==manager or node.labels.zone==east"
        );
    }
    Ok(())
}

pub(super) fn parse_placement_pref(
    flag: &str,
    text: &str,
) -> anyhow::Result<api::placement::Preference> {
    let Some((strategy, argument)) = text.split_once('=').filter(|(s, _)| !s.is_empty()) else {
        bail!(
            "--{flag}: placement preference {text:?} must be of the format \"<strategy>=<arg>\", e.g. spread=node.labels.zone"
        );
    };
    if strategy != "spread" {
        bail!(
            "--{flag}: unsupported placement preference {strategy} (only spread is supported), e.g. spread=node.labels.zone"
        );
    }
    Ok(api::placement::Preference {
        preference: Some(api::placement::preference::Preference::Spread(
            api::placement::preference::Spread {
                spread_descriptor: argument.to_owned(),
            },
        )),
    })
}

pub(super) fn spread_descriptor(preference: &api::placement::Preference) -> Option<&str> {
    match &preference.preference {
        Some(api::placement::preference::Preference::Spread(spread)) => {
            Some(&spread.spread_descriptor)
        }
        None => None,
    }
}

pub(super) fn parse_go_bool(flag: &str, key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("--{flag}: invalid value {value:?} for {key}: use true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_exact() -> anyhow::Result<()> {
        assert_eq!(parse_cpus("limit-cpu", "1")?, 1_000_000_000);
        assert_eq!(parse_cpus("limit-cpu", ".5")?, 500_000_000);
        assert_eq!(parse_cpus("limit-cpu", "0.000000001")?, 1);
        assert!(parse_cpus("limit-cpu", "-1").is_err());
        assert!(parse_cpus("limit-cpu", ".").is_err());
        Ok(())
    }
}
