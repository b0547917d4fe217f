//! Docker's `filters` query parameter: JSON, a map from key to values, in the current form
//! (`{"name":{"web":true}}`) or the old one (`{"name":["web"]}`). Values of one key are
//! alternatives; different keys must all match. Pure.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// Parsed filters: key → values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `text` (absent or empty: no filters), refusing keys outside `allowed` with
    /// Docker's words.
    pub fn parse(text: Option<&str>, allowed: &[&str]) -> Result<Filters, ApiError> {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let serde_json::Value::Object(keys) = value else {
            return Err(ApiError::bad_request(
                "invalid filter: expected a JSON object of filter keys",
            ));
        };
        let mut filters = BTreeMap::new();
        for (key, values) in keys {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match values {
                serde_json::Value::Object(map) => map
                    .into_iter()
                    .filter(|(_, on)| on.as_bool() != Some(false))
                    .map(|(value, _)| value)
                    .collect(),
                serde_json::Value::Array(list) => list
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(ApiError::bad_request(format!(
                            "invalid filter '{key}': {other} is not a string"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{key}': {other} is neither a map nor a list of values"
                    )));
                }
            };
            filters.insert(key, values);
        }
        Ok(Filters(filters))
    }

    /// The values given for `key`; empty when the key is absent.
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether `key` was given at all.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Passes when `key` is absent, or when `test` holds for one of its values.
    pub fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        !self.has(key) || self.values(key).iter().any(|value| test(value))
    }

    /// Docker's `label` filter on `labels`: every `KEY` or `KEY=VALUE` given must be there
    /// (unlike other keys, label values are all required).
    pub fn labels_match(
        &self,
        key: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        self.values(key)
            .iter()
            .all(|wanted| match wanted.split_once('=') {
                Some((name, value)) => labels.get(name).is_some_and(|v| v == value),
                None => labels.contains_key(wanted.as_str()),
            })
    }

    /// The filters as `key=value` lines, the form the control API's network listing takes.
    pub fn as_key_values(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|(key, values)| values.iter().map(move |value| format!("{key}={value}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn both_forms_parse_and_unknown_keys_are_refused() {
        let current = Filters::parse(
            Some(r#"{"name":{"web":true},"label":{"a=b":true}}"#),
            &["name", "label"],
        )
        .unwrap();
        let old = Filters::parse(
            Some(r#"{"name":["web"],"label":["a=b"]}"#),
            &["name", "label"],
        )
        .unwrap();
        assert_eq!(current, old);
        assert_eq!(current.values("name"), ["web"]);
        assert!(Filters::parse(None, &[]).unwrap().values("name").is_empty());
        assert_eq!(
            Filters::parse(Some(r#"{"colour":{"red":true}}"#), &["name"])
                .unwrap_err()
                .message,
            "invalid filter 'colour'"
        );
        assert!(
            Filters::parse(Some("{nope"), &["name"])
                .unwrap_err()
                .message
                .starts_with("invalid filter:")
        );
        assert!(Filters::parse(Some(r#"{"name":3}"#), &["name"]).is_err());
    }

    #[test]
    fn values_of_a_key_are_alternatives_and_labels_all_required() {
        let filters = Filters::parse(
            Some(r#"{"name":["a","b"],"label":["x","y=1"]}"#),
            &["name", "label"],
        )
        .unwrap();
        assert!(filters.any("name", |v| v == "b"));
        assert!(!filters.any("name", |v| v == "c"));
        assert!(filters.any("id", |_| false), "an absent key passes");
        let labels: HashMap<String, String> =
            [("x".into(), "".into()), ("y".into(), "1".into())].into();
        assert!(filters.labels_match("label", &labels));
        let missing: HashMap<String, String> = [("x".into(), "".into())].into();
        assert!(!filters.labels_match("label", &missing));
        assert_eq!(
            filters.as_key_values(),
            ["label=x", "label=y=1", "name=a", "name=b"]
        );
    }
}
