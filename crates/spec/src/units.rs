//! Durations and sizes, one grammar each. Durations are Go's `time.ParseDuration` syntax, which
//! every Docker duration flag and compose key uses (`300ms`, `1.5h`, `2h45m`, `0`); sizes are
//! go-units' `RAMInBytes` (binary units: `512m`, `1g`, `1.5k`, `8 MB`) and `FromHumanSize`
//! (decimal units), as Docker parses memory flags and human sizes, and printed back as go-units'
//! `HumanSize` and `BytesSize` print them.

use std::time::Duration;

use crate::SpecError;

fn duration_error(text: &str, problem: &str) -> SpecError {
    SpecError::Duration {
        text: text.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Parses a Go duration. A number needs a unit (`2` alone is refused, as Docker refuses it),
/// except `0`; a negative duration is refused, since nothing in a spec can wait a negative time.
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let nanos = parse_signed_nanos(text)?;
    if nanos < 0 {
        return Err(duration_error(text, "it is negative"));
    }
    let nanos = u64::try_from(nanos).map_err(|_| duration_error(text, "it is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Go's `time.ParseDuration`, to nanoseconds with their sign.
fn parse_signed_nanos(text: &str) -> Result<i128, SpecError> {
    let mut rest = text;
    let negative = rest.starts_with('-');
    if let Some(unsigned) = rest.strip_prefix(['-', '+']) {
        rest = unsigned;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(duration_error(text, "it is empty"));
    }
    // Go's limit: what fits in an int64 of nanoseconds (about 292 years).
    let limit = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let fraction_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            fraction = &after_dot[..fraction_len];
            rest = &after_dot[fraction_len..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(duration_error(text, "a number is missing"));
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(duration_error(text, "a unit is missing")),
            unit => return Err(duration_error(text, &format!("unknown unit {unit:?}"))),
        };
        rest = &rest[unit_len..];
        let too_long = || duration_error(text, "it is too long");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(too_long)?;
        // Digits past nanosecond precision change nothing, as in Go.
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            value += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(too_long)?;
        if total > limit {
            return Err(too_long());
        }
    }
    let total = total as i128;
    Ok(if negative { -total } else { total })
}

/// Prints a duration as Go's `time.Duration.String()` does, which is what Docker prints:
/// `1m30s`, `10s`, `500ms`, `1h0m0s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let second_nanos = nanos % 60_000_000_000;
    let seconds = format!("{}s", fraction(second_nanos, 1_000_000_000));
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}")
    } else {
        seconds
    }
}

/// `value / scale` in decimal without trailing zeros.
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let remainder = value % scale;
    if remainder == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let decimals = format!("{remainder:0digits$}");
    format!("{whole}.{}", decimals.trim_end_matches('0'))
}

/// Prints a size with decimal units as go-units' `HumanSize` does (`image ls`'s SIZE): four
/// significant digits, trailing zeros dropped (`12.5MB`, `796kB`, `1.235GB`, `0B`).
pub fn human_size(bytes: u64) -> String {
    four_significant_digits(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"])
}

/// Prints a size with binary units as go-units' `BytesSize` does (memory in `inspect --pretty`
/// and `node inspect`): four significant digits, trailing zeros dropped (`20MiB`, `1.5GiB`).
pub fn bytes_size(bytes: u64) -> String {
    four_significant_digits(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    )
}

/// go-units' `CustomSize` with Go's `%.4g`: the size divided by `base` while it is at least
/// `base`, then printed with four significant digits. The scaled value is below 1024, so `%g`
/// never switches to an exponent here.
fn four_significant_digits(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit + 1 < units.len() {
        value /= base;
        unit += 1;
    }
    // The exponent after rounding to four significant digits decides how many decimals are
    // left (999.95 rounds to 1000, with none), as `%g` decides it.
    let exponent = format!("{value:.3e}")
        .split_once('e')
        .and_then(|(_, exponent)| exponent.parse::<i32>().ok())
        .unwrap_or(0);
    let decimals = usize::try_from(3 - exponent).unwrap_or(0);
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", units[unit])
}

/// Parses a size with binary units as go-units' `RAMInBytes` does (`--memory`, `--limit-memory`,
/// compose's `mem_limit` and `deploy.resources`): `1k` is 1024 bytes; `t` and `p` are accepted.
pub fn parse_ram_bytes(text: &str) -> Result<u64, SpecError> {
    parse_size(text, 1024)
}

/// Parses a size with decimal units as go-units' `FromHumanSize` does: `1k` is 1000 bytes.
pub fn parse_human_size(text: &str) -> Result<u64, SpecError> {
    parse_size(text, 1000)
}

/// go-units' `parseSize`: a number, an optional space, and a suffix of a unit letter (k, m, g,
/// t, p, any case) followed by an optional `b` or `ib`, or `b` alone.
fn parse_size(text: &str, base: u64) -> Result<u64, SpecError> {
    let error = |problem: &str| SpecError::Size {
        text: text.to_owned(),
        problem: problem.to_owned(),
    };
    let Some(separator) = text.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else {
        return Err(error("it has no number"));
    };
    let (number, suffix) = if text.as_bytes()[separator] == b' ' {
        (&text[..separator], &text[separator + 1..])
    } else {
        (&text[..=separator], &text[separator + 1..])
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if number.trim_start().starts_with('-') {
            return Err(error("a size can't be negative"));
        }
        return Err(error("it is not a number"));
    }
    let value: f64 = number.parse().map_err(|_| error("it is not a number"))?;
    let suffix = suffix.to_ascii_lowercase();
    let multiplier = match suffix.as_str() {
        "" | "b" => 1,
        _ => {
            let mut letters = suffix.chars();
            let exponent = match letters.next() {
                Some('k') => 1,
                Some('m') => 2,
                Some('g') => 3,
                Some('t') => 4,
                Some('p') => 5,
                _ => return Err(error(&format!("unknown unit {suffix:?}"))),
            };
            if !matches!(letters.as_str(), "" | "b" | "ib") {
                return Err(error(&format!("unknown unit {suffix:?}")));
            }
            base.pow(exponent)
        }
    };
    let bytes = value * multiplier as f64;
    if bytes >= i64::MAX as f64 {
        return Err(error("it is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go_and_round_trip() {
        let cases = [
            ("10s", "10s"),
            ("1m30s", "1m30s"),
            ("90s", "1m30s"),
            ("500ms", "500ms"),
            ("1.5s", "1.5s"),
            (".5s", "500ms"),
            ("1h", "1h0m0s"),
            ("2h45m", "2h45m0s"),
            ("0", "0s"),
            ("+0", "0s"),
            ("0s", "0s"),
            ("1500us", "1.5ms"),
            ("1µs", "1µs"),
            ("100ns", "100ns"),
            ("1.0000000001s", "1s"),
        ];
        for (input, want) in cases {
            let parsed = parse_duration(input).expect(input);
            assert_eq!(format_duration(parsed), want, "{input}");
        }
    }

    #[test]
    fn bad_durations_say_why_and_what_is_accepted() {
        let message = |text: &str| parse_duration(text).expect_err(text).to_string();
        assert_eq!(
            message("2"),
            "invalid duration \"2\": a unit is missing; use a number with a unit (ns, us, ms, s, m, h) such as 500ms, 10s, 1m30s or 2h"
        );
        assert!(message("5x").contains("unknown unit \"x\""));
        assert!(message("-1s").contains("negative"));
        assert!(message("soon").contains("a number is missing"));
        assert!(message("").contains("empty"));
        assert!(message(".s").contains("a number is missing"));
        assert!(message("3000000h").contains("too long"));
        assert!(message("1s ").contains("unknown unit"));
    }

    #[test]
    fn sizes_follow_go_units() {
        assert_eq!(parse_ram_bytes("32M"), Ok(32 << 20));
        assert_eq!(parse_ram_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_ram_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("1gb"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("1t"), Ok(1 << 40));
        assert_eq!(parse_ram_bytes("2p"), Ok(2 << 50));
        assert_eq!(parse_ram_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_ram_bytes("100"), Ok(100));
        assert_eq!(parse_ram_bytes("100b"), Ok(100));
        assert_eq!(parse_ram_bytes("8 MB"), Ok(8 << 20));
        assert_eq!(parse_ram_bytes("0"), Ok(0));
        assert_eq!(parse_human_size("1k"), Ok(1000));
        assert_eq!(parse_human_size("1.5MB"), Ok(1_500_000));
        for bad in [
            "512x", "lots", "1kk", "1bb", "1mib2", "", "k", "-1m", "1e3k",
        ] {
            assert!(parse_ram_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ram_bytes("-1m").unwrap_err().to_string(),
            "invalid size \"-1m\": a size can't be negative; use a number of bytes with an optional unit b, k, m, g, t or p, such as 512m or 1g"
        );
        assert!(
            parse_ram_bytes("9999999p")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    /// go-units' `HumanSize` and `BytesSize`, whose `%.4g` keeps four significant digits
    /// (issue 13: `image ls` printed three decimals, `123.457MB` where docker prints `123.5MB`).
    #[test]
    fn sizes_print_as_go_units_prints_them() {
        for (bytes, want) in [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (12_500_000, "12.5MB"),
            (1_234_567, "1.235MB"),
            (123_456_789, "123.5MB"),
            (999_950, "1000kB"),
            (7_340_032, "7.34MB"),
            (u64::MAX, "18.45EB"),
        ] {
            assert_eq!(human_size(bytes), want, "{bytes}");
        }
        for (bytes, want) in [
            (512, "512B"),
            (20 << 20, "20MiB"),
            (1536 << 20, "1.5GiB"),
            (123_456_789, "117.7MiB"),
            (1023, "1023B"),
        ] {
            assert_eq!(bytes_size(bytes), want, "{bytes}");
        }
    }
}
