//! Whether every manager's store is the same: each manager's objects as it serves them (kind
//! and name to the object's JSON, versions included), compared across managers.

use std::collections::BTreeMap;

/// One manager's objects: `"<kind>/<name>"` to the object as it serves it.
pub type ManagerView = BTreeMap<String, String>;

/// The first difference between the managers' views, `views[0]` taken as the reference, worded
/// for a failure message; `None` when all are the same.
pub fn first_difference(views: &[(String, ManagerView)]) -> Option<String> {
    let (reference_host, reference) = views.first()?;
    for (host, view) in &views[1..] {
        if view == reference {
            continue;
        }
        let key = reference
            .keys()
            .chain(view.keys())
            .filter(|key| reference.get(*key) != view.get(*key))
            .min()?;
        let shown = |side: Option<&String>| side.map_or("nothing".to_owned(), String::clone);
        return Some(format!(
            "{key}: {reference_host} has {}, {host} has {}",
            shown(reference.get(key)),
            shown(view.get(key))
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(entries: &[(&str, &str)]) -> ManagerView {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn identical_views_have_no_difference() {
        let same = view(&[("service/a", "{\"Version\":3}"), ("secret/s", "{}")]);
        let views = [
            ("h1".to_owned(), same.clone()),
            ("h2".to_owned(), same.clone()),
            ("h3".to_owned(), same),
        ];
        assert_eq!(first_difference(&views), None);
        assert_eq!(first_difference(&[]), None);
    }

    #[test]
    fn a_different_version_or_a_missing_object_is_named() {
        let reference = view(&[("service/a", "v3"), ("service/b", "v4")]);
        let stale = view(&[("service/a", "v2"), ("service/b", "v4")]);
        let missing = view(&[("service/a", "v3")]);
        let views = [
            ("h1".to_owned(), reference.clone()),
            ("h2".to_owned(), stale),
        ];
        assert_eq!(
            first_difference(&views).as_deref(),
            Some("service/a: h1 has v3, h2 has v2")
        );
        let views = [("h1".to_owned(), reference), ("h3".to_owned(), missing)];
        assert_eq!(
            first_difference(&views).as_deref(),
            Some("service/b: h1 has v4, h3 has nothing")
        );
    }
}
