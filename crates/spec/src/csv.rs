//! One line of CSV as Go's `encoding/csv` reads it: the syntax of Docker's long-form flag values
//! (`--mount`, `--secret`, `--config`, `--network`), where a field may be double-quoted, with
//! `""` for a quote inside, so that it can hold a comma.

use crate::SpecError;

/// Splits `text` into its fields.
pub fn split_line(text: &str) -> Result<Vec<String>, SpecError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                at_field_start = false;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => {
                            return Err(SpecError::rule(format!(
                                "unclosed quote in {text:?}: close it, or double a quote inside a quoted field (\"\")"
                            )));
                        }
                    }
                }
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            c => {
                at_field_start = false;
                field.push(c);
            }
        }
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_hold_commas_and_quotes() {
        assert_eq!(split_line("a,b").unwrap(), ["a", "b"]);
        assert_eq!(split_line(r#""x,y",z"#).unwrap(), ["x,y", "z"]);
        assert_eq!(split_line(r#""say ""hi""""#).unwrap(), [r#"say "hi""#]);
        assert_eq!(split_line("").unwrap(), [""]);
        assert!(
            split_line(r#""open"#)
                .unwrap_err()
                .to_string()
                .contains("unclosed quote")
        );
    }
}
