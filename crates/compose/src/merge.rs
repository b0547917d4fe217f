//! Merges several compose files (`-c a.yml -c b.yml`) with the Compose Specification's override
//! rules: mappings merge key by key, `command`/`entrypoint`/`healthcheck.test` are replaced,
//! environment-like lists merge as mappings, ports/volumes/secrets/configs merge by target, and
//! other lists append without duplicates. Scalars from later files win.

use shoal_proto::api::port_config::Protocol;
use spec::enums::TextForm;

use super::units::parse_port_short;
use super::yaml::{Key, Node, Scalar, Value};

/// Merges `over` into `base`; `path` is the key path of `base` (empty for the file root).
pub fn merge(base: Node, over: Node, path: &[&str]) -> Node {
    let rule = rule_for(path);
    match rule {
        Rule::Replace => over,
        Rule::AsMapping => {
            let base = list_to_mapping(base);
            let over = list_to_mapping(over);
            merge_maps(base, over, path)
        }
        Rule::ByKey(key_of) => match (base.value, over.value) {
            (Value::Seq(mut items), Value::Seq(new_items)) => {
                for item in new_items {
                    let key = key_of(&item);
                    match items.iter_mut().find(|existing| key_of(existing) == key) {
                        Some(existing) => *existing = item,
                        None => items.push(item),
                    }
                }
                Node::new(Value::Seq(items), base.mark)
            }
            (_, value) => Node::new(value, over.mark),
        },
        Rule::Default => merge_maps(base, over, path),
    }
}

fn merge_maps(base: Node, over: Node, path: &[&str]) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(new_entries)) => {
            for (key, value) in new_entries {
                match entries.iter_mut().find(|(k, _)| k.name == key.name) {
                    Some((_, existing)) => {
                        let mut child_path = path.to_vec();
                        child_path.push(&key.name);
                        let old =
                            std::mem::replace(existing, Node::new(Value::Null, key.mark.clone()));
                        *existing = merge(old, value, &child_path);
                    }
                    None => entries.push((key, value)),
                }
            }
            Node::new(Value::Map(entries), base.mark)
        }
        (Value::Seq(mut items), Value::Seq(new_items)) => {
            for item in new_items {
                let duplicate = items.iter().any(|existing| same_scalar(existing, &item));
                if !duplicate {
                    items.push(item);
                }
            }
            Node::new(Value::Seq(items), base.mark)
        }
        (_, value) => Node::new(value, over.mark),
    }
}

fn same_scalar(a: &Node, b: &Node) -> bool {
    matches!((&a.value, &b.value), (Value::Scalar(x), Value::Scalar(y)) if x.text == y.text)
}

enum Rule {
    Replace,
    AsMapping,
    ByKey(fn(&Node) -> String),
    Default,
}

fn rule_for(path: &[&str]) -> Rule {
    match path {
        ["services", _, "command" | "entrypoint"] => Rule::Replace,
        ["services", _, "healthcheck", "test"] => Rule::Replace,
        [
            "services",
            _,
            "environment" | "labels" | "sysctls" | "extra_hosts" | "networks" | "depends_on",
        ] => Rule::AsMapping,
        ["services", _, "deploy", "labels"] => Rule::AsMapping,
        ["services", _, "ports"] => Rule::ByKey(port_key),
        ["services", _, "volumes"] => Rule::ByKey(volume_key),
        ["services", _, "secrets" | "configs"] => Rule::ByKey(file_reference_key),
        _ => Rule::Default,
    }
}

fn scalar_text(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Scalar(scalar) => Some(&scalar.text),
        _ => None,
    }
}

fn field(node: &Node, key: &str) -> String {
    node.get(key)
        .and_then(scalar_text)
        .unwrap_or_default()
        .to_owned()
}

fn port_key(node: &Node) -> String {
    match &node.value {
        Value::Scalar(scalar) => match parse_port_short(&scalar.text) {
            Ok(ports) => ports
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}:{}/{}",
                        p.host_ip.as_deref().unwrap_or_default(),
                        p.published.map(|p| p.to_string()).unwrap_or_default(),
                        p.target,
                        p.protocol.text()
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => scalar.text.clone(),
        },
        _ => {
            let protocol = field(node, "protocol");
            format!(
                "{}:{}:{}/{}",
                field(node, "host_ip"),
                field(node, "published"),
                field(node, "target"),
                if protocol.is_empty() {
                    Protocol::Tcp.text().to_owned()
                } else {
                    protocol
                }
            )
        }
    }
}

fn volume_key(node: &Node) -> String {
    match &node.value {
        Value::Scalar(scalar) => {
            let parts: Vec<&str> = scalar.text.split(':').collect();
            match parts.as_slice() {
                [target] => (*target).to_owned(),
                [_, target, ..] => (*target).to_owned(),
                [] => String::new(),
            }
        }
        _ => field(node, "target"),
    }
}

fn file_reference_key(node: &Node) -> String {
    match &node.value {
        Value::Scalar(scalar) => scalar.text.clone(),
        _ => {
            let target = field(node, "target");
            if target.is_empty() {
                field(node, "source")
            } else {
                target
            }
        }
    }
}

/// Turns `["A=1", "B"]` (or `[front, back]`) into `{A: "1", B: null}`; mappings pass through.
pub fn list_to_mapping(node: Node) -> Node {
    let Value::Seq(items) = node.value else {
        return node;
    };
    let mut entries: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Value::Scalar(Scalar { text, .. }) = &item.value else {
            // Left as a list so that validation reports the wrong type.
            return Node::new(Value::Seq(vec![item]), node.mark);
        };
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name.to_owned(), Node::string(value, item.mark.clone())),
            None => (text.clone(), Node::new(Value::Null, item.mark.clone())),
        };
        let key = Key {
            name,
            mark: item.mark.clone(),
        };
        match entries.iter_mut().find(|(k, _)| k.name == key.name) {
            Some(existing) => existing.1 = value,
            None => entries.push((key, value)),
        }
    }
    Node::new(Value::Map(entries), node.mark)
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    fn merged(a: &str, b: &str) -> Node {
        let a = yaml::parse("a.yml", a).expect("a");
        let b = yaml::parse("b.yml", b).expect("b");
        merge(a, b, &[])
    }

    fn texts(node: &Node) -> Vec<String> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .map(|i| match &i.value {
                    Value::Scalar(s) => s.text.clone(),
                    _ => format!("{{target: {}}}", field(i, "target")),
                })
                .collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| format!("{}={}", k.name, scalar_text(v).unwrap_or("~")))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn service<'a>(root: &'a Node, key: &str) -> &'a Node {
        root.get("services")
            .and_then(|s| s.get("web"))
            .and_then(|w| w.get(key))
            .expect(key)
    }

    #[test]
    fn command_is_replaced_and_image_overridden() {
        let root = merged(
            "services:\n  web:\n    image: a\n    command: [x, y]\n",
            "services:\n  web:\n    image: b\n    command: [z]\n",
        );
        assert_eq!(texts(service(&root, "command")), ["z"]);
        assert_eq!(scalar_text(service(&root, "image")), Some("b"));
    }

    #[test]
    fn environment_merges_as_mapping() {
        let root = merged(
            "services:\n  web:\n    environment: [A=1, B=2]\n",
            "services:\n  web:\n    environment:\n      B: 3\n      C: 4\n",
        );
        assert_eq!(texts(service(&root, "environment")), ["A=1", "B=3", "C=4"]);
    }

    #[test]
    fn ports_and_volumes_merge_by_target() {
        let root = merged(
            "services:\n  web:\n    ports: ['80:80', '443:443']\n    volumes: ['a:/data', '/x:/y']\n",
            "services:\n  web:\n    ports: ['80:80', '8080:8080']\n    volumes:\n      - {type: volume, source: b, target: /data}\n",
        );
        assert_eq!(
            texts(service(&root, "ports")),
            ["80:80", "443:443", "8080:8080"]
        );
        assert_eq!(
            texts(service(&root, "volumes")),
            ["{target: /data}", "/x:/y"]
        );
    }

    #[test]
    fn plain_lists_append_without_duplicates() {
        let root = merged(
            "services:\n  web:\n    cap_add: [A, B]\n",
            "services:\n  web:\n    cap_add: [B, C]\n",
        );
        assert_eq!(texts(service(&root, "cap_add")), ["A", "B", "C"]);
    }

    #[test]
    fn networks_list_and_mapping_merge() {
        let root = merged(
            "services:\n  web:\n    networks: [front]\n",
            "services:\n  web:\n    networks:\n      back:\n        aliases: [x]\n",
        );
        assert_eq!(texts(service(&root, "networks")), ["front=~", "back=~"]);
    }
}
