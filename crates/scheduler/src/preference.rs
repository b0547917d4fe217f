//! Spread placement preferences (`spread=node.labels.zone`): which label splits the cluster into groups to even tasks across.

use std::fmt;

use crate::constraint::strip_prefix_ignoring_ascii_case;
use crate::error::SchedulerError;
use crate::model::NodeView;

/// Where the label a preference spreads over lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpreadLabel {
    /// An operator-set node label, `node.labels.KEY`.
    Node(String),
    /// A label the node's engine reported, `engine.labels.KEY`.
    Engine(String),
}

/// Spread tasks evenly over the values of one label. Nodes that lack the label
/// (or carry it with an empty value) form one more group of their own, as in Docker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpreadPreference {
    label: SpreadLabel,
}

impl SpreadPreference {
    /// Parses a spread descriptor such as `node.labels.zone` (the part after
    /// `spread=` in `--placement-pref`). The prefix ignores ASCII case, the label key keeps it.
    pub fn parse(descriptor: &str) -> Result<SpreadPreference, SchedulerError> {
        let invalid = |problem: String| SchedulerError::InvalidSpreadDescriptor {
            descriptor: descriptor.to_owned(),
            problem,
        };
        let trimmed = descriptor.trim();
        let label = if let Some(key) = strip_prefix_ignoring_ascii_case(trimmed, "node.labels.") {
            SpreadLabel::Node(key.to_owned())
        } else if let Some(key) = strip_prefix_ignoring_ascii_case(trimmed, "engine.labels.") {
            SpreadLabel::Engine(key.to_owned())
        } else {
            return Err(invalid(
                "spread works over labels; use node.labels.KEY or engine.labels.KEY".to_owned(),
            ));
        };
        let key = match &label {
            SpreadLabel::Node(key) | SpreadLabel::Engine(key) => key,
        };
        if key.is_empty() {
            return Err(invalid(
                "missing label name; use node.labels.KEY or engine.labels.KEY".to_owned(),
            ));
        }
        Ok(SpreadPreference { label })
    }

    /// The label this preference spreads over.
    pub fn label(&self) -> &SpreadLabel {
        &self.label
    }

    /// The node's value for the label, or `None` when the node lacks it or it is empty.
    pub(crate) fn group_value<'node>(&self, node: &'node NodeView) -> Option<&'node str> {
        let value = match &self.label {
            SpreadLabel::Node(key) => node.labels.get(key),
            SpreadLabel::Engine(key) => node.engine_labels.get(key),
        };
        value.map(String::as_str).filter(|value| !value.is_empty())
    }
}

impl fmt::Display for SpreadPreference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            SpreadLabel::Node(key) => write!(formatter, "node.labels.{key}"),
            SpreadLabel::Engine(key) => write!(formatter, "engine.labels.{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_descriptors_and_rejects_others() {
        let table = [
            ("node.labels.zone", "ok node.labels.zone"),
            ("NODE.LABELS.Zone", "ok node.labels.Zone"),
            ("engine.labels.rack", "ok engine.labels.rack"),
            (
                "node.hostname",
                "error invalid placement preference \"node.hostname\": spread works over labels; use node.labels.KEY or engine.labels.KEY",
            ),
            (
                "node.labels.",
                "error invalid placement preference \"node.labels.\": missing label name; use node.labels.KEY or engine.labels.KEY",
            ),
        ];
        for (descriptor, expected) in table {
            let outcome = match SpreadPreference::parse(descriptor) {
                Ok(preference) => format!("ok {preference}"),
                Err(error) => format!("error {error}"),
            };
            assert_eq!(outcome, expected, "descriptor {descriptor:?}");
        }
    }
}
