//! Finding an object from what a user typed, as docker does: a full ID first, then an exact
//! name, then a unique ID prefix.

use crate::error::ManagerError;

/// Picks the one object `reference` names among `candidates`. `name_of` gives an object's name
/// (a service's name, a node's hostname), or "" when the kind has none.
pub(crate) fn resolve<'a, T>(
    candidates: &'a [T],
    reference: &str,
    kind: &'static str,
    id_of: impl Fn(&T) -> &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<&'a T, ManagerError> {
    let not_found = || ManagerError::NotFound {
        kind,
        reference: reference.to_owned(),
    };
    if reference.is_empty() {
        return Err(ManagerError::InvalidArgument(format!(
            "no {kind} given: name one by ID, ID prefix or name"
        )));
    }
    if let Some(found) = candidates.iter().find(|object| id_of(object) == reference) {
        return Ok(found);
    }
    let by_name: Vec<&T> = candidates
        .iter()
        .filter(|object| name_of(object) == reference)
        .collect();
    match by_name.as_slice() {
        [found] => return Ok(found),
        [] => {}
        several => {
            return Err(ManagerError::Ambiguous {
                kind,
                reference: reference.to_owned(),
                matches: several.len(),
            });
        }
    }
    let by_prefix: Vec<&T> = candidates
        .iter()
        .filter(|object| id_of(object).starts_with(reference))
        .collect();
    match by_prefix.as_slice() {
        [found] => Ok(found),
        [] => Err(not_found()),
        several => Err(ManagerError::Ambiguous {
            kind,
            reference: reference.to_owned(),
            matches: several.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECTS: &[(&str, &str)] = &[
        ("abc123", "web"),
        ("abd456", "db"),
        ("xyz789", "abc123x"),
        ("web000", "cache"),
    ];

    fn find(reference: &str) -> Result<&'static str, String> {
        resolve(OBJECTS, reference, "service", |o| o.0, |o| o.1)
            .map(|o| o.0)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn full_id_then_name_then_unique_prefix() {
        assert_eq!(find("abc123"), Ok("abc123"));
        // A name beats an ID prefix: "web" is a name here and also a prefix of "web000".
        assert_eq!(find("web"), Ok("abc123"));
        assert_eq!(find("xyz"), Ok("xyz789"));
        assert_eq!(find("abc123x"), Ok("xyz789"));
    }

    #[test]
    fn ambiguous_and_unknown_references_say_what_to_do() {
        let ambiguous = find("ab").unwrap_err();
        assert!(ambiguous.contains("matches 2 services"), "{ambiguous}");
        let unknown = find("nope").unwrap_err();
        assert_eq!(
            unknown,
            "service nope not found: list them with 'shoal service ls'"
        );
        assert!(find("").unwrap_err().contains("no service given"));
    }
}
