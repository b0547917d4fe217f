//! Swarm's Go-style placeholders in a task's hostname, environment and mounts, expanded when the
//! worker turns the task into a container, as Docker's worker does: `{{.Service.ID}}`,
//! `{{.Service.Name}}`, `{{index .Service.Labels "KEY"}}`, `{{.Node.ID}}`,
//! `{{.Node.Hostname}}`, `{{.Task.ID}}`, `{{.Task.Name}}` and `{{.Task.Slot}}`. Pure.

use std::collections::HashMap;

/// What the placeholders of one task stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    pub service_id: String,
    pub service_name: String,
    pub service_labels: HashMap<String, String>,
    pub node_id: String,
    pub node_hostname: String,
    pub task_id: String,
    /// Swarm's task name: `SERVICE.SLOT.TASKID`, or `SERVICE.NODEID.TASKID` for global services.
    pub task_name: String,
    /// The replica slot; empty for global services, as in Docker.
    pub task_slot: String,
}

const SUPPORTED: &str = "{{.Service.ID}}, {{.Service.Name}}, {{index .Service.Labels \"KEY\"}}, {{.Node.ID}}, {{.Node.Hostname}}, {{.Task.ID}}, {{.Task.Name}} and {{.Task.Slot}}";

/// Expands every `{{ … }}` in `text`; text without placeholders comes back as it is. An unknown
/// or unterminated placeholder is an error naming it.
pub fn expand(text: &str, context: &TemplateContext) -> Result<String, String> {
    let mut expanded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        expanded.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated placeholder in {text:?}: close it with }}}}"))?;
        let action = after[..end].trim();
        expanded.push_str(&value_of(action, context).ok_or_else(|| {
            format!("unknown placeholder {{{{{action}}}}} in {text:?}: use {SUPPORTED}")
        })?);
        rest = &after[end + 2..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

fn value_of(action: &str, context: &TemplateContext) -> Option<String> {
    let value = match action {
        ".Service.ID" => &context.service_id,
        ".Service.Name" => &context.service_name,
        ".Node.ID" => &context.node_id,
        ".Node.Hostname" => &context.node_hostname,
        ".Task.ID" => &context.task_id,
        ".Task.Name" => &context.task_name,
        ".Task.Slot" => &context.task_slot,
        _ => {
            let key = action
                .strip_prefix("index")?
                .trim_start()
                .strip_prefix(".Service.Labels")?
                .trim();
            let key = key.strip_prefix('"')?.strip_suffix('"')?;
            return Some(context.service_labels.get(key).cloned().unwrap_or_default());
        }
    };
    Some(value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> TemplateContext {
        TemplateContext {
            service_id: "svc1".into(),
            service_name: "app_web".into(),
            service_labels: HashMap::from([("tier".into(), "front".into())]),
            node_id: "node1".into(),
            node_hostname: "h2".into(),
            task_id: "task1".into(),
            task_name: "app_web.3.task1".into(),
            task_slot: "3".into(),
        }
    }

    #[test]
    fn placeholders_expand_with_or_without_spaces() {
        assert_eq!(
            expand(
                "{{.Service.Name}}-{{ .Task.Slot }}@{{.Node.Hostname}}",
                &context()
            ),
            Ok("app_web-3@h2".to_owned())
        );
        assert_eq!(
            expand(
                "/data/{{.Task.Name}}/{{.Node.ID}}/{{.Task.ID}}/{{.Service.ID}}",
                &context()
            ),
            Ok("/data/app_web.3.task1/node1/task1/svc1".to_owned())
        );
        assert_eq!(
            expand(
                r#"TIER={{index .Service.Labels "tier"}}{{index .Service.Labels "none"}}"#,
                &context()
            ),
            Ok("TIER=front".to_owned())
        );
        assert_eq!(
            expand("plain $HOME {x}", &context()),
            Ok("plain $HOME {x}".to_owned())
        );
    }

    #[test]
    fn unknown_and_unterminated_placeholders_are_named() {
        let unknown = expand("{{.Task.Colour}}", &context()).unwrap_err();
        assert!(
            unknown.contains("unknown placeholder {{.Task.Colour}}"),
            "{unknown}"
        );
        assert!(unknown.contains("{{.Task.Slot}}"), "{unknown}");
        let open = expand("x-{{.Task.Slot", &context()).unwrap_err();
        assert!(open.contains("unterminated placeholder"), "{open}");
    }
}
