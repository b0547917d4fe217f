//! Variable interpolation (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$VAR`, `$$`) over every
//! scalar value of a tree, and `.env` parsing. The environment comes in as a map, so this stays pure.

use std::collections::{BTreeMap, BTreeSet};

use super::ComposeError;
use super::yaml::{Node, Value};

pub type Environment = BTreeMap<String, String>;

/// Substitutes variables in one string. Unset variables without a default become empty and are
/// added to `unset`, so the caller can warn once per name as docker does.
pub fn interpolate_str(
    text: &str,
    env: &Environment,
    unset: &mut BTreeSet<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let close = matching_brace(body_and_tail).ok_or_else(|| {
                format!("unclosed `${{` in {text:?}: add the closing `}}`, or write `$$` for a literal dollar")
            })?;
            out.push_str(&expand_braced(&body_and_tail[..close], env, unset)?);
            rest = &body_and_tail[close + 1..];
        } else {
            let name_len = variable_name_len(after);
            if name_len == 0 {
                // A lone `$` (e.g. "costs $ 3") is kept, as docker does.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..name_len], env, unset));
                rest = &after[name_len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn variable_name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(text.len(), |(i, _)| i)
}

/// Finds the `}` closing a `${`, allowing nested `${...}` in defaults.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn lookup(name: &str, env: &Environment, unset: &mut BTreeSet<String>) -> String {
    match env.get(name) {
        Some(value) => value.clone(),
        None => {
            unset.insert(name.to_owned());
            String::new()
        }
    }
}

fn expand_braced(
    body: &str,
    env: &Environment,
    unset: &mut BTreeSet<String>,
) -> Result<String, String> {
    let name_len = variable_name_len(body);
    if name_len == 0 {
        return Err(format!(
            "invalid variable reference `${{{body}}}`: names start with a letter or `_`; write `$$` for a literal dollar"
        ));
    }
    let name = &body[..name_len];
    let operator = &body[name_len..];
    let value = env.get(name);
    // `:` variants treat an empty value like an unset one.
    let set_non_empty = value.is_some_and(|v| !v.is_empty());
    let expand = |text: &str, unset: &mut BTreeSet<String>| interpolate_str(text, env, unset);
    if operator.is_empty() {
        return Ok(lookup(name, env, unset));
    }
    if let Some(default) = operator.strip_prefix(":-") {
        return if set_non_empty {
            Ok(value.cloned().unwrap_or_default())
        } else {
            expand(default, unset)
        };
    }
    if let Some(default) = operator.strip_prefix('-') {
        return match value {
            Some(value) => Ok(value.clone()),
            None => expand(default, unset),
        };
    }
    if let Some(message) = operator.strip_prefix(":?") {
        return if set_non_empty {
            Ok(value.cloned().unwrap_or_default())
        } else {
            Err(required_message(name, &expand(message, unset)?))
        };
    }
    if let Some(message) = operator.strip_prefix('?') {
        return match value {
            Some(value) => Ok(value.clone()),
            None => Err(required_message(name, &expand(message, unset)?)),
        };
    }
    if let Some(alternative) = operator.strip_prefix(":+") {
        return if set_non_empty {
            expand(alternative, unset)
        } else {
            Ok(String::new())
        };
    }
    if let Some(alternative) = operator.strip_prefix('+') {
        return match value {
            Some(_) => expand(alternative, unset),
            None => Ok(String::new()),
        };
    }
    Err(format!(
        "invalid variable reference `${{{body}}}`: use ${{{name}}}, ${{{name}:-default}}, ${{{name}-default}}, ${{{name}:?message}} or ${{{name}?message}}"
    ))
}

fn required_message(name: &str, message: &str) -> String {
    if message.is_empty() {
        format!("required variable {name} is not set: export it or add it to the .env file")
    } else {
        format!(
            "required variable {name} is not set: {message} (export it or add it to the .env file)"
        )
    }
}

/// Interpolates every scalar value (keys are left alone, as compose does).
pub fn interpolate_tree(
    node: &mut Node,
    path: &mut Vec<String>,
    env: &Environment,
    unset: &mut BTreeSet<String>,
) -> Result<(), ComposeError> {
    match &mut node.value {
        Value::Scalar(scalar) => {
            if scalar.text.contains('$') {
                scalar.text = interpolate_str(&scalar.text, env, unset)
                    .map_err(|message| ComposeError::at(&node.mark, &path.join("."), &message))?;
            }
        }
        Value::Seq(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(index.to_string());
                interpolate_tree(item, path, env, unset)?;
                path.pop();
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                path.push(key.name.clone());
                interpolate_tree(value, path, env, unset)?;
                path.pop();
            }
        }
        Value::Null => {}
    }
    Ok(())
}

/// Parses a `.env` file: `KEY=value` lines, `#` comments, optional `export `, and single or
/// double quotes around the value.
pub fn parse_dotenv(file: &str, text: &str) -> Result<Environment, ComposeError> {
    let mut env = Environment::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ComposeError {
                file: file.to_owned(),
                line: Some(index + 1),
                path: String::new(),
                message: format!("line {line:?} is not KEY=value: fix or remove it"),
            });
        };
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value[1..value.len() - 1].to_owned()
        } else {
            // An unquoted value ends at ` #`, a trailing comment.
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim_end()
                .to_owned()
        };
        env.insert(key.trim().to_owned(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, String> {
        let env: Environment = [("SET", "v"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        interpolate_str(text, &env, &mut BTreeSet::new())
    }

    #[test]
    fn forms() {
        let cases = [
            ("${SET}", "v"),
            ("$SET/x", "v/x"),
            ("${UNSET}", ""),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${SET:-d}", "v"),
            ("${SET:+alt}", "alt"),
            ("${UNSET:+alt}", ""),
            ("costs $$3", "costs $3"),
            ("$$SET", "$SET"),
            ("a $ b", "a $ b"),
            ("${UNSET:-${SET}}", "v"),
            ("${UNSET:-x-${UNSET2:-y}}", "x-y"),
            ("{{.Task.Slot}}", "{{.Task.Slot}}"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_variables() {
        let error = run("${UNSET:?set the tag}").expect_err("required");
        assert!(
            error.contains("UNSET") && error.contains("set the tag"),
            "{error}"
        );
        assert!(run("${EMPTY:?x}").is_err());
        assert_eq!(run("${EMPTY?x}").as_deref(), Ok(""));
        assert!(run("${UNSET?x}").is_err());
    }

    #[test]
    fn malformed_references() {
        assert!(run("${SET").expect_err("unclosed").contains("unclosed"));
        assert!(run("${1A}").is_err());
        assert!(run("${SET:x}").is_err());
    }

    #[test]
    fn unset_names_are_reported() {
        let mut unset = BTreeSet::new();
        interpolate_str("$A ${B} ${C:-c}", &Environment::new(), &mut unset).expect("ok");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["A", "B"]);
    }

    #[test]
    fn dotenv() {
        let env = parse_dotenv(
            ".env",
            "# c\nA=1\nexport B = two \nC=\"q # x\"\nD=e # comment\n\n",
        )
        .expect("parses");
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two");
        assert_eq!(env["C"], "q # x");
        assert_eq!(env["D"], "e");
        assert!(parse_dotenv(".env", "nonsense\n").is_err());
    }
}
