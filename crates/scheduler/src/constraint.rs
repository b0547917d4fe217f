//! Placement constraints in Docker's syntax (`node.labels.zone==east`), parsed once and matched against nodes.

use std::fmt;

use crate::error::SchedulerError;
use crate::model::{NodeRole, NodeView};

/// The accepted keys, quoted in every unknown-key error so the user can fix the expression.
const ACCEPTED_KEYS: &str = "use node.id, node.hostname, node.role, node.platform.os, \
                             node.platform.arch, node.labels.KEY or engine.labels.KEY";

/// Prefix of keys that name an operator-set node label.
const NODE_LABEL_PREFIX: &str = "node.labels.";
/// Prefix of keys that name a label the node's engine reported.
const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// The node property a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeAttribute {
    /// `node.id`.
    Id,
    /// `node.hostname`.
    Hostname,
    /// `node.role`: `manager` or `worker`.
    Role,
    /// `node.platform.os`.
    PlatformOs,
    /// `node.platform.arch`.
    PlatformArch,
    /// `node.labels.KEY`; the label key is case-sensitive, as in Docker.
    NodeLabel(String),
    /// `engine.labels.KEY`; the label key is case-sensitive, as in Docker.
    EngineLabel(String),
}

impl NodeAttribute {
    /// Reads this attribute on a node. A missing label reads as the empty string,
    /// which no constraint value can equal: `==` fails and `!=` holds, as in Docker.
    fn read<'node>(&self, node: &'node NodeView) -> &'node str {
        match self {
            NodeAttribute::Id => &node.id,
            NodeAttribute::Hostname => &node.hostname,
            NodeAttribute::Role => node.role.as_str(),
            NodeAttribute::PlatformOs => &node.platform.os,
            NodeAttribute::PlatformArch => &node.platform.architecture,
            NodeAttribute::NodeLabel(key) => node.labels.get(key).map_or("", String::as_str),
            NodeAttribute::EngineLabel(key) => {
                node.engine_labels.get(key).map_or("", String::as_str)
            }
        }
    }
}

impl fmt::Display for NodeAttribute {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAttribute::Id => formatter.write_str("node.id"),
            NodeAttribute::Hostname => formatter.write_str("node.hostname"),
            NodeAttribute::Role => formatter.write_str("node.role"),
            NodeAttribute::PlatformOs => formatter.write_str("node.platform.os"),
            NodeAttribute::PlatformArch => formatter.write_str("node.platform.arch"),
            NodeAttribute::NodeLabel(key) => write!(formatter, "{NODE_LABEL_PREFIX}{key}"),
            NodeAttribute::EngineLabel(key) => write!(formatter, "{ENGINE_LABEL_PREFIX}{key}"),
        }
    }
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConstraintOperator {
    /// The attribute must equal the value.
    Equals,
    /// The attribute must differ from the value.
    NotEquals,
}

impl ConstraintOperator {
    /// The operator as written in an expression.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConstraintOperator::Equals => "==",
            ConstraintOperator::NotEquals => "!=",
        }
    }
}

/// One parsed constraint, such as `node.labels.zone==east`.
///
/// Values compare ignoring ASCII case, as Docker's `strings.EqualFold` does, so
/// `node.role==MANAGER` and `node.labels.disk==SSD` behave exactly as they do in Swarm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Constraint {
    attribute: NodeAttribute,
    operator: ConstraintOperator,
    expected_value: String,
}

impl Constraint {
    /// Parses one expression, accepting what Docker accepts except keys Docker
    /// would silently never match (those are errors here) and `node.ip`, which is not supported.
    pub fn parse(expression: &str) -> Result<Constraint, SchedulerError> {
        let invalid = |problem: String| SchedulerError::InvalidConstraint {
            expression: expression.to_owned(),
            problem,
        };
        // `==` is looked for first, as Docker does, so `a!=b==c` splits at `==`.
        let (operator, key_text, value_text) =
            if let Some((key, value)) = expression.split_once("==") {
                (ConstraintOperator::Equals, key, value)
            } else if let Some((key, value)) = expression.split_once("!=") {
                (ConstraintOperator::NotEquals, key, value)
            } else {
                return Err(invalid(
                "no operator; write KEY==VALUE or KEY!=VALUE, for example node.labels.zone==east"
                    .to_owned(),
            ));
            };
        let key_text = key_text.trim();
        let value_text = value_text.trim();

        let attribute = parse_attribute(key_text).map_err(invalid)?;
        validate_value(value_text).map_err(invalid)?;
        if attribute == NodeAttribute::Role
            && !value_text.eq_ignore_ascii_case(NodeRole::Manager.as_str())
            && !value_text.eq_ignore_ascii_case(NodeRole::Worker.as_str())
        {
            return Err(invalid(format!(
                "unknown role {value_text:?}; use manager or worker"
            )));
        }
        Ok(Constraint {
            attribute,
            operator,
            expected_value: value_text.to_owned(),
        })
    }

    /// Parses a list of expressions, stopping at the first bad one.
    pub fn parse_all<Expression: AsRef<str>>(
        expressions: &[Expression],
    ) -> Result<Vec<Constraint>, SchedulerError> {
        expressions
            .iter()
            .map(|expression| Constraint::parse(expression.as_ref()))
            .collect()
    }

    /// The node property this constraint looks at.
    pub fn attribute(&self) -> &NodeAttribute {
        &self.attribute
    }

    /// `==` or `!=`.
    pub fn operator(&self) -> ConstraintOperator {
        self.operator
    }

    /// The value as written, trimmed of surrounding whitespace.
    pub fn expected_value(&self) -> &str {
        &self.expected_value
    }

    /// Whether the node satisfies this constraint.
    pub fn is_satisfied_by(&self, node: &NodeView) -> bool {
        let actual_value = self.attribute.read(node);
        let values_equal = actual_value.eq_ignore_ascii_case(&self.expected_value);
        match self.operator {
            ConstraintOperator::Equals => values_equal,
            ConstraintOperator::NotEquals => !values_equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}{}{}",
            self.attribute,
            self.operator.as_str(),
            self.expected_value
        )
    }
}

/// Whether every constraint holds on the node.
pub(crate) fn all_constraints_satisfied(constraints: &[Constraint], node: &NodeView) -> bool {
    constraints
        .iter()
        .all(|constraint| constraint.is_satisfied_by(node))
}

/// Maps a key to the attribute it names. Fixed keys and label prefixes match
/// ignoring ASCII case, while the label key itself keeps its case (Docker's rules).
fn parse_attribute(key_text: &str) -> Result<NodeAttribute, String> {
    if key_text.is_empty() {
        return Err(format!("missing key before the operator; {ACCEPTED_KEYS}"));
    }
    let fixed_keys = [
        ("node.id", NodeAttribute::Id),
        ("node.hostname", NodeAttribute::Hostname),
        ("node.role", NodeAttribute::Role),
        ("node.platform.os", NodeAttribute::PlatformOs),
        ("node.platform.arch", NodeAttribute::PlatformArch),
    ];
    for (name, attribute) in fixed_keys {
        if key_text.eq_ignore_ascii_case(name) {
            return Ok(attribute);
        }
    }
    for (prefix, make_attribute) in [
        (
            NODE_LABEL_PREFIX,
            NodeAttribute::NodeLabel as fn(String) -> NodeAttribute,
        ),
        (
            ENGINE_LABEL_PREFIX,
            NodeAttribute::EngineLabel as fn(String) -> NodeAttribute,
        ),
    ] {
        if let Some(label_key) = strip_prefix_ignoring_ascii_case(key_text, prefix) {
            if label_key.is_empty() {
                return Err(format!(
                    "missing label name after {prefix:?}; use {prefix}KEY"
                ));
            }
            if let Some(bad) = label_key
                .chars()
                .find(|character| !is_label_key_character(*character))
            {
                return Err(format!(
                    "label name {label_key:?} contains {bad:?}; label names in constraints \
                     may contain only letters, digits, '-', '_' and '.'"
                ));
            }
            return Ok(make_attribute(label_key.to_owned()));
        }
    }
    Err(format!("unknown key {key_text:?}; {ACCEPTED_KEYS}"))
}

/// Checks a value against the characters Docker allows, which leave room for future operators.
fn validate_value(value_text: &str) -> Result<(), String> {
    if value_text.is_empty() {
        return Err("missing value after the operator".to_owned());
    }
    match value_text
        .chars()
        .find(|character| !is_value_character(*character))
    {
        None => Ok(()),
        Some(bad) => Err(format!(
            "value {value_text:?} contains {bad:?}; values may contain letters, digits, \
             spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /"
        )),
    }
}

/// Label keys in constraints use Docker's key alphabet.
fn is_label_key_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.')
}

/// Values use Docker's value alphabet.
fn is_value_character(character: char) -> bool {
    character.is_ascii_alphanumeric()
        || character.is_ascii_whitespace()
        || matches!(
            character,
            ':' | '-'
                | '_'
                | '.'
                | '*'
                | '('
                | ')'
                | '?'
                | '+'
                | '['
                | ']'
                | '\\'
                | '^'
                | '$'
                | '|'
                | '/'
        )
}

/// Strips `prefix` from `text` when it matches ignoring ASCII case.
pub(crate) fn strip_prefix_ignoring_ascii_case<'text>(
    text: &'text str,
    prefix: &str,
) -> Option<&'text str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    /// Parses `expression` and renders either the canonical constraint or the error message.
    fn parse_outcome(expression: &str) -> String {
        match Constraint::parse(expression) {
            Ok(constraint) => format!("ok {constraint}"),
            Err(error) => format!("error {error}"),
        }
    }

    #[test]
    fn parses_every_supported_key_and_reports_bad_expressions_with_the_accepted_forms() {
        let table = [
            ("node.id==abc123", "ok node.id==abc123"),
            ("node.hostname != web-1", "ok node.hostname!=web-1"),
            ("node.role==manager", "ok node.role==manager"),
            ("NODE.ROLE==Worker", "ok node.role==Worker"),
            ("node.platform.os==linux", "ok node.platform.os==linux"),
            (
                "node.platform.arch==x86_64",
                "ok node.platform.arch==x86_64",
            ),
            ("node.labels.zone==east", "ok node.labels.zone==east"),
            ("Node.Labels.Zone==east", "ok node.labels.Zone==east"),
            (
                "engine.labels.storage!=ssd",
                "ok engine.labels.storage!=ssd",
            ),
            ("node.labels.name==a b", "ok node.labels.name==a b"),
            (
                "node.labels.a!=b==c",
                "error invalid constraint \"node.labels.a!=b==c\": label name \"a!=b\" contains '!'; label names in constraints may contain only letters, digits, '-', '_' and '.'",
            ),
            (
                "node.foo==x",
                "error invalid constraint \"node.foo==x\": unknown key \"node.foo\"; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY",
            ),
            (
                "node.role=manager",
                "error invalid constraint \"node.role=manager\": no operator; write KEY==VALUE or KEY!=VALUE, for example node.labels.zone==east",
            ),
            (
                "node.role==leader",
                "error invalid constraint \"node.role==leader\": unknown role \"leader\"; use manager or worker",
            ),
            (
                "node.labels.==x",
                "error invalid constraint \"node.labels.==x\": missing label name after \"node.labels.\"; use node.labels.KEY",
            ),
            (
                "node.labels.zone==",
                "error invalid constraint \"node.labels.zone==\": missing value after the operator",
            ),
            (
                "==x",
                "error invalid constraint \"==x\": missing key before the operator; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY",
            ),
            (
                "node.labels.zone==a<b",
                "error invalid constraint \"node.labels.zone==a<b\": value \"a<b\" contains '<'; values may contain letters, digits, spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /",
            ),
            (
                "node.ip==10.0.0.1",
                "error invalid constraint \"node.ip==10.0.0.1\": unknown key \"node.ip\"; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY",
            ),
        ];
        for (expression, expected) in table {
            assert_eq!(
                parse_outcome(expression),
                expected,
                "expression {expression:?}"
            );
        }
    }

    #[test]
    fn parse_all_stops_at_the_first_bad_expression() {
        let error = Constraint::parse_all(&["node.role==worker", "bogus"]).unwrap_err();
        assert!(matches!(error, SchedulerError::InvalidConstraint { .. }));
        assert!(
            error
                .to_string()
                .starts_with("invalid constraint \"bogus\": no operator")
        );
        assert_eq!(
            Constraint::parse_all(&["node.role==worker"]).map(|list| list.len()),
            Ok(1)
        );
    }

    #[test]
    fn matches_like_docker() {
        let mut node = NodeView::new("node-1", Resources::ZERO);
        node.hostname = "web-1".to_owned();
        node.role = NodeRole::Manager;
        node.labels.insert("zone".to_owned(), "East".to_owned());
        node.engine_labels
            .insert("storage".to_owned(), "ssd".to_owned());
        let table = [
            ("node.id==node-1", true),
            ("node.id!=node-1", false),
            ("node.hostname==WEB-1", true),
            ("node.role==manager", true),
            ("node.role==MANAGER", true),
            ("node.role==worker", false),
            ("node.role!=worker", true),
            ("node.platform.os==linux", true),
            ("node.platform.arch==amd64", true),
            ("node.platform.arch!=arm64", true),
            // Values ignore case, as Docker's EqualFold does.
            ("node.labels.zone==east", true),
            ("node.labels.zone==East", true),
            ("node.labels.zone!=west", true),
            // Label keys keep their case: `Zone` is a different, missing label.
            ("node.labels.Zone==east", false),
            ("node.labels.Zone!=east", true),
            // A missing label never equals anything and always differs.
            ("node.labels.rack==r1", false),
            ("node.labels.rack!=r1", true),
            ("engine.labels.storage==ssd", true),
            ("engine.labels.zone==east", false),
        ];
        for (expression, expected) in table {
            let constraint = Constraint::parse(expression).expect("table holds valid expressions");
            assert_eq!(
                constraint.is_satisfied_by(&node),
                expected,
                "expression {expression:?}"
            );
        }
    }
}
