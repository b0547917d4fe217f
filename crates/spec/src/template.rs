//! Swarm's Go-template placeholders in a task's hostname, environment and mounts: the one parser
//! that both checks them (manager, CLI, compose) and expands them (worker). What Swarm's
//! template context offers: `{{.Service.ID}}`, `{{.Service.Name}}`, `{{.Service.Labels}}`,
//! `{{index .Service.Labels "KEY"}}`, `{{.Node.ID}}`, `{{.Node.Hostname}}`,
//! `{{.Node.Platform.OS}}`, `{{.Node.Platform.Architecture}}`, `{{.Task.ID}}`, `{{.Task.Name}}`
//! and `{{.Task.Slot}}`, with Go's `{{- ` and ` -}}` trim markers.

use std::collections::{BTreeMap, HashMap};

use crate::SpecError;

/// What the placeholders of one task stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    pub service_id: String,
    pub service_name: String,
    pub service_labels: HashMap<String, String>,
    pub node_id: String,
    pub node_hostname: String,
    /// The node's OS as its description reports it (`linux`).
    pub node_platform_os: String,
    /// The node's architecture as its description reports it (`x86_64`).
    pub node_platform_architecture: String,
    pub task_id: String,
    /// Swarm's task name: `SERVICE.SLOT.TASKID`, or `SERVICE.NODEID.TASKID` for global services.
    pub task_name: String,
    /// The replica slot; empty for global services, as in Docker.
    pub task_slot: String,
}

/// A field of the context a placeholder names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    ServiceId,
    ServiceName,
    ServiceLabels,
    NodeId,
    NodeHostname,
    NodePlatformOs,
    NodePlatformArchitecture,
    TaskId,
    TaskName,
    TaskSlot,
}

const FIELDS: &[(&str, Field)] = &[
    (".Service.ID", Field::ServiceId),
    (".Service.Name", Field::ServiceName),
    (".Service.Labels", Field::ServiceLabels),
    (".Node.ID", Field::NodeId),
    (".Node.Hostname", Field::NodeHostname),
    (".Node.Platform.OS", Field::NodePlatformOs),
    (
        ".Node.Platform.Architecture",
        Field::NodePlatformArchitecture,
    ),
    (".Task.ID", Field::TaskId),
    (".Task.Name", Field::TaskName),
    (".Task.Slot", Field::TaskSlot),
];

const SUPPORTED: &str = "{{.Service.ID}}, {{.Service.Name}}, {{.Service.Labels}}, {{index .Service.Labels \"KEY\"}}, {{.Node.ID}}, {{.Node.Hostname}}, {{.Node.Platform.OS}}, {{.Node.Platform.Architecture}}, {{.Task.ID}}, {{.Task.Name}} or {{.Task.Slot}}";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
    Label(String),
}

/// A parsed template: text and placeholders, trim markers already applied to the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Go's trim markers remove this white space next to an action.
fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses `text`, refusing what Swarm would not expand.
pub fn parse(text: &str) -> Result<Template, SpecError> {
    let error = |problem: String| SpecError::Template {
        text: text.to_owned(),
        problem,
    };
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut trim_next_text = false;
    loop {
        let (literal, action_and_rest) = match rest.find("{{") {
            Some(open) => (&rest[..open], Some(&rest[open + 2..])),
            None => (rest, None),
        };
        let mut literal = if trim_next_text {
            literal.trim_start_matches(is_go_space)
        } else {
            literal
        };
        let Some(after_open) = action_and_rest else {
            if literal.contains("}}") {
                return Err(error(
                    "it has `}}` without an opening `{{`: remove it or open the placeholder"
                        .to_owned(),
                ));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(literal.to_owned()));
            }
            break;
        };
        if literal.contains("}}") {
            return Err(error(
                "it has `}}` without an opening `{{`: remove it or open the placeholder".to_owned(),
            ));
        }
        let close = after_open.find("}}").ok_or_else(|| {
            error("it has `{{` without a closing `}}`: close the placeholder".to_owned())
        })?;
        let mut action = &after_open[..close];
        rest = &after_open[close + 2..];
        // `{{- ` and ` -}}` need the space: `{{-3}}` would be a number in Go.
        if let Some(trimmed) = action.strip_prefix('-')
            && trimmed.starts_with(is_go_space)
        {
            literal = literal.trim_end_matches(is_go_space);
            action = trimmed;
        }
        trim_next_text = false;
        if let Some(trimmed) = action.strip_suffix('-')
            && trimmed.ends_with(is_go_space)
        {
            trim_next_text = true;
            action = trimmed;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal.to_owned()));
        }
        pieces.push(parse_action(action.trim_matches(is_go_space)).map_err(error)?);
    }
    Ok(Template { pieces })
}

fn parse_action(action: &str) -> Result<Piece, String> {
    if action.is_empty() {
        return Err(format!(
            "it has an empty placeholder `{{{{ }}}}`: use {SUPPORTED}"
        ));
    }
    if let Some((_, field)) = FIELDS.iter().find(|(name, _)| *name == action) {
        return Ok(Piece::Field(*field));
    }
    if let Some(arguments) = action.strip_prefix("index")
        && arguments.starts_with(is_go_space)
    {
        let arguments = arguments.trim_matches(is_go_space);
        if let Some(key) = arguments
            .strip_prefix(".Service.Labels")
            .map(|key| key.trim_matches(is_go_space))
            .and_then(|key| key.strip_prefix('"'))
            .and_then(|key| key.strip_suffix('"'))
            .filter(|key| !key.contains('"'))
        {
            return Ok(Piece::Label(key.to_owned()));
        }
        return Err(format!(
            "`{{{{{action}}}}}` is not supported: index only the service labels, as in {{{{index .Service.Labels \"KEY\"}}}}"
        ));
    }
    Err(format!(
        "unknown placeholder `{{{{{action}}}}}`: use {SUPPORTED}"
    ))
}

impl Template {
    /// The text with every placeholder replaced by its value in `context`. A label the service
    /// lacks expands to nothing, as Go's `index` gives the empty string.
    pub fn expand(&self, context: &TemplateContext) -> String {
        let mut expanded = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => expanded.push_str(text),
                Piece::Label(key) => {
                    if let Some(value) = context.service_labels.get(key) {
                        expanded.push_str(value);
                    }
                }
                Piece::Field(field) => expanded.push_str(&field_value(*field, context)),
            }
        }
        expanded
    }
}

fn field_value(field: Field, context: &TemplateContext) -> String {
    match field {
        Field::ServiceId => context.service_id.clone(),
        Field::ServiceName => context.service_name.clone(),
        // Go prints a map as `map[k1:v1 k2:v2]`, keys sorted.
        Field::ServiceLabels => {
            let sorted: BTreeMap<_, _> = context.service_labels.iter().collect();
            let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", pairs.join(" "))
        }
        Field::NodeId => context.node_id.clone(),
        Field::NodeHostname => context.node_hostname.clone(),
        Field::NodePlatformOs => context.node_platform_os.clone(),
        Field::NodePlatformArchitecture => context.node_platform_architecture.clone(),
        Field::TaskId => context.task_id.clone(),
        Field::TaskName => context.task_name.clone(),
        Field::TaskSlot => context.task_slot.clone(),
    }
}

/// Checks `text` without expanding it: what the manager, the CLI and compose call.
pub fn check(text: &str) -> Result<(), SpecError> {
    parse(text).map(|_| ())
}

/// Parses and expands `text` in one go: what the worker calls.
pub fn expand(text: &str, context: &TemplateContext) -> Result<String, SpecError> {
    Ok(parse(text)?.expand(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> TemplateContext {
        TemplateContext {
            service_id: "svc1".into(),
            service_name: "app_web".into(),
            service_labels: HashMap::from([
                ("tier".into(), "front".into()),
                ("a".into(), "1".into()),
            ]),
            node_id: "node1".into(),
            node_hostname: "h2".into(),
            node_platform_os: "linux".into(),
            node_platform_architecture: "x86_64".into(),
            task_id: "task1".into(),
            task_name: "app_web.3.task1".into(),
            task_slot: "3".into(),
        }
    }

    fn expanded(text: &str) -> String {
        expand(text, &context()).expect(text)
    }

    #[test]
    fn every_field_expands() {
        assert_eq!(
            expanded("{{.Service.Name}}-{{ .Task.Slot }}@{{.Node.Hostname}}"),
            "app_web-3@h2"
        );
        assert_eq!(
            expanded("/data/{{.Task.Name}}/{{.Node.ID}}/{{.Task.ID}}/{{.Service.ID}}"),
            "/data/app_web.3.task1/node1/task1/svc1"
        );
        assert_eq!(
            expanded("{{.Node.Platform.OS}}/{{.Node.Platform.Architecture}}"),
            "linux/x86_64"
        );
        assert_eq!(
            expanded(r#"TIER={{index .Service.Labels "tier"}}{{index .Service.Labels "none"}}"#),
            "TIER=front"
        );
        assert_eq!(expanded("{{.Service.Labels}}"), "map[a:1 tier:front]");
        assert_eq!(expanded("plain $HOME {x}"), "plain $HOME {x}");
    }

    #[test]
    fn trim_markers_trim_the_white_space_beside_them() {
        assert_eq!(expanded("web -  {{- .Task.Slot -}} \n .x"), "web -3.x");
        assert_eq!(expanded("a {{- .Task.Slot}} b"), "a3 b");
        assert_eq!(expanded("a {{.Task.Slot -}} b"), "a 3b");
        // Without the space a dash is part of the action, which Swarm does not know.
        assert!(check("{{-.Task.Slot}}").is_err());
    }

    #[test]
    fn refusals_name_the_placeholder_and_what_is_accepted() {
        let message = |text: &str| check(text).expect_err(text).to_string();
        let unknown = message("{{.Task.Colour}}");
        assert!(unknown.starts_with("invalid template \"{{.Task.Colour}}\": unknown placeholder `{{.Task.Colour}}`: use {{.Service.ID}}"), "{unknown}");
        assert!(unknown.contains("{{.Node.Platform.OS}}"), "{unknown}");
        assert!(message("x-{{.Task.Slot").contains("without a closing"));
        assert!(message("a}}").contains("without an opening"));
        assert!(message("{{ }}").contains("empty placeholder"));
        assert!(message("{{index .Task.ID 1}}").contains("index only the service labels"));
        assert!(message("{{printf \"%s\" .Task.ID}}").contains("unknown placeholder"));
    }
}
