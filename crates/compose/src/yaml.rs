//! A YAML tree whose every node remembers its file and line, built from saphyr-parser's events.
//!
//! Compose needs three things a plain YAML value does not give: the line of every node (errors name
//! it), anchors with merge keys `<<` (YAML 1.2 dropped merge keys, compose still uses them) and the
//! raw text of scalars (compose reads `0400` as octal and `${N}` only becomes a number after
//! interpolation, so typing happens later, field by field).

use std::collections::HashMap;
use std::rc::Rc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::ComposeError;

/// Where a node came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub file: Rc<str>,
    /// 1-based.
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scalar {
    pub text: String,
    /// Quoted and block scalars are always strings; plain ones may be numbers or booleans.
    pub quoted: bool,
}

#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub mark: Mark,
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Node { value, mark }
    }

    pub fn string(text: impl Into<String>, mark: Mark) -> Self {
        Node::new(
            Value::Scalar(Scalar {
                text: text.into(),
                quoted: true,
            }),
            mark,
        )
    }

    /// Describes the node's kind for "expected X, got Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing (null)",
            Value::Scalar(_) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses one compose file into a tree. `file` names the file in errors.
pub fn parse(file: &str, text: &str) -> Result<Node, ComposeError> {
    let file: Rc<str> = Rc::from(file);
    // Tabs are only blamed when the parser refuses the file: inside block scalars they are content.
    build(&file, text).map_err(|error| check_tabs(&file, text).unwrap_or(error))
}

enum Frame {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        mark: Mark,
        anchor: usize,
    },
}

fn mark_of(file: &Rc<str>, span: &Span) -> Mark {
    Mark {
        file: file.clone(),
        line: span.start.line(),
    }
}

fn build(file: &Rc<str>, text: &str) -> Result<Node, ComposeError> {
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut expanded_nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| syntax_error(file, &error))?;
        let mark = mark_of(file, &span);
        let complete = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(ComposeError::at(
                        &mark,
                        "",
                        "a compose file holds one YAML document: remove the extra `---` section or move it into its own file passed with another -c",
                    ));
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    // Aliases of aliases grow exponentially ("billion laughs"); a compose file
                    // never needs more than a tiny fraction of this.
                    expanded_nodes += node_count(node);
                    if expanded_nodes > MAX_EXPANDED_NODES {
                        return Err(ComposeError::at(
                            &mark,
                            "",
                            "aliases expand to over a million nodes: the file nests anchors too deeply",
                        ));
                    }
                    Some((node.clone(), 0))
                }
                None => {
                    return Err(ComposeError::at(
                        &mark,
                        "",
                        "alias to an unknown anchor: define `&name` before using `*name`",
                    ));
                }
            },
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == ScalarStyle::Plain && is_null(&text) {
                    Value::Null
                } else {
                    Value::Scalar(Scalar {
                        text: text.into_owned(),
                        quoted: style != ScalarStyle::Plain,
                    })
                };
                Some((Node::new(value, mark), anchor))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    mark,
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    mark,
                    anchor,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    mark,
                    anchor,
                }) => Some((Node::new(Value::Seq(items), mark), anchor)),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    mark,
                    anchor,
                    ..
                }) => Some((
                    Node::new(Value::Map(apply_merge_keys(entries)?), mark),
                    anchor,
                )),
                _ => None,
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        };
        let Some((node, anchor)) = complete else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        attach(&mut stack, &mut root, node)?;
    }
    Ok(root.unwrap_or_else(|| {
        Node::new(
            Value::Null,
            Mark {
                file: file.clone(),
                line: 1,
            },
        )
    }))
}

fn syntax_error(file: &Rc<str>, error: &saphyr_parser::ScanError) -> ComposeError {
    ComposeError {
        file: file.to_string(),
        line: Some(error.marker().line()),
        path: String::new(),
        message: format!(
            "YAML syntax error: {} (column {}); check the indentation and quoting on that line",
            error.info(),
            error.marker().col() + 1
        ),
    }
}

/// Puts a finished node where it belongs: the root, the open sequence, or the open mapping (as
/// its next key, or as the value of the key before it).
fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) -> Result<(), ComposeError> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq { items, .. }) => items.push(node),
        Some(Frame::Map {
            entries,
            pending_key,
            ..
        }) => match pending_key.take() {
            Some(key) => {
                if let Some((previous, _)) = entries.iter().find(|(k, _)| k.name == key.name)
                    && key.name != "<<"
                {
                    return Err(ComposeError::at(
                        &key.mark,
                        &key.name,
                        &format!(
                            "key `{}` appears twice in one mapping (first on line {}): keep one of them",
                            key.name, previous.mark.line
                        ),
                    ));
                }
                entries.push((key, node));
            }
            None => {
                let name = match node.value {
                    Value::Scalar(scalar) => scalar.text,
                    Value::Null => String::new(),
                    _ => {
                        return Err(ComposeError::at(
                            &node.mark,
                            "",
                            "mapping keys must be plain strings, not lists or mappings",
                        ));
                    }
                };
                *pending_key = Some(Key {
                    name,
                    mark: node.mark,
                });
            }
        },
    }
    Ok(())
}

const MAX_EXPANDED_NODES: usize = 1_000_000;

fn node_count(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(node_count).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| node_count(v)).sum(),
        _ => 0,
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Resolves `<<: *anchor` and `<<: [*a, *b]`: keys written in the mapping win over merged ones,
/// and earlier merged mappings win over later ones (the YAML 1.1 merge-key rules compose follows).
fn apply_merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, ComposeError> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return Ok(entries);
    }
    let mut merged_sources = Vec::new();
    let mut own = Vec::new();
    for (key, node) in entries {
        if key.name != "<<" {
            own.push((key, node));
            continue;
        }
        match node.value {
            Value::Map(map) => merged_sources.push(map),
            Value::Seq(items) => {
                for item in items {
                    match item.value {
                        Value::Map(map) => merged_sources.push(map),
                        _ => {
                            return Err(ComposeError::at(
                                &item.mark,
                                "<<",
                                "a merge key `<<` takes a mapping or a list of mappings (e.g. `<<: *defaults`)",
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(ComposeError::at(
                    &key.mark,
                    "<<",
                    "a merge key `<<` takes a mapping or a list of mappings (e.g. `<<: *defaults`)",
                ));
            }
        }
    }
    for source in merged_sources {
        for (key, node) in source {
            if !own.iter().any(|(k, _)| k.name == key.name) {
                own.push((key, node));
            }
        }
    }
    Ok(own)
}

/// YAML forbids tabs in indentation, and the parser's own message for them is cryptic; this names
/// the line and, by parsing a copy with the tabs expanded, the key path that line holds.
fn check_tabs(file: &Rc<str>, text: &str) -> Option<ComposeError> {
    let line_number = text.lines().position(|line| {
        let indent_end = line.len() - line.trim_start_matches([' ', '\t']).len();
        line[..indent_end].contains('\t') && !line.trim().is_empty()
    })? + 1;
    let expanded: String = text
        .lines()
        .map(|line| {
            let content = line.trim_start_matches([' ', '\t']);
            let indent: usize = line[..line.len() - content.len()]
                .chars()
                .map(|c| if c == '\t' { 2 } else { 1 })
                .sum();
            format!("{}{}\n", " ".repeat(indent), content)
        })
        .collect();
    let path = build(file, &expanded)
        .ok()
        .and_then(|root| path_at_line(&root, line_number, &mut Vec::new()))
        .unwrap_or_default();
    Some(ComposeError {
        file: file.to_string(),
        line: Some(line_number),
        path,
        message: "tab character in indentation: YAML indents with spaces only, replace the tabs with spaces".into(),
    })
}

fn path_at_line(node: &Node, line: usize, prefix: &mut Vec<String>) -> Option<String> {
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                prefix.push(key.name.clone());
                if key.mark.line == line {
                    return Some(prefix.join("."));
                }
                if let Some(found) = path_at_line(value, line, prefix) {
                    return Some(found);
                }
                prefix.pop();
            }
            None
        }
        Value::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                prefix.push(index.to_string());
                if item.mark.line == line {
                    return Some(prefix.join("."));
                }
                if let Some(found) = path_at_line(item, line, prefix) {
                    return Some(found);
                }
                prefix.pop();
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(node: &Node) -> Vec<String> {
        match &node.value {
            Value::Map(entries) => entries.iter().map(|(k, _)| k.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn merge_keys_let_own_keys_win() {
        let root = parse(
            "t.yml",
            "x: &base\n  a: 1\n  b: 2\ny:\n  <<: *base\n  b: 3\n  c: 4\n",
        )
        .expect("parses");
        let y = root.get("y").expect("y");
        assert_eq!(map_keys(y), ["b", "c", "a"]);
        match &y.get("b").expect("b").value {
            Value::Scalar(s) => assert_eq!(s.text, "3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tabs_name_line_and_path() {
        let error = parse("t.yml", "services:\n\tweb:\n\t\timage: x\n").expect_err("tabs");
        assert_eq!(error.line, Some(2));
        assert_eq!(error.path, "services.web");
    }

    #[test]
    fn tabs_inside_block_scalars_are_content() {
        let root = parse("t.yml", "a: |\n  x\n  \ty\n").expect("valid YAML");
        match &root.get("a").expect("a").value {
            Value::Scalar(s) => assert_eq!(s.text, "x\n\ty\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_has_line() {
        let error = parse("t.yml", "a: [1, 2\nb: c\n").expect_err("bad");
        assert!(error.line.is_some(), "{error}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let error = parse("t.yml", &text).expect_err("bomb");
        assert!(error.message.contains("million"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let error = parse("t.yml", "a: 1\na: 2\n").expect_err("dup");
        assert!(error.message.contains("twice"), "{error}");
    }
}
