//! The output format a list command was asked for: docker's table, or JSON lines.

/// Whether `--format` asks for JSON lines (`json`, `{{json .}}`) rather than the table.
pub(crate) fn json_format(format: Option<String>) -> anyhow::Result<bool> {
    match format.as_deref() {
        None | Some("table") => Ok(false),
        Some("json") | Some("{{json .}}") => Ok(true),
        Some(other) => anyhow::bail!("unsupported --format {other:?}: use 'json' or 'table'"),
    }
}
