//! Small helpers shared by the store, the shim and the engine: digests, atomic file writes,
//! random IDs and RFC 3339 timestamps (calendar maths by the `time` crate).

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::error::{EngineError, Result};

/// A `sha256:<64 hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; other algorithms are rejected because nothing we write uses them.
    pub fn parse(text: &str) -> Result<Digest> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| {
            EngineError::invalid("digest", format!("{text:?} is not sha256:<hex>"))
        })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(EngineError::invalid(
                "digest",
                format!("{text:?} is not sha256:<64 hex>"),
            ));
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, as docker shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = EngineError;
    fn try_from(text: String) -> Result<Digest> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads to the end (so trailing bytes count too) and returns the digest and byte count.
    pub(crate) fn finish(mut self) -> std::io::Result<(Digest, u64, R)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
            self.inner,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A reader that fails once more than `limit` bytes have come through it, naming `what` was too
/// large: image content is bounded before it is trusted.
pub(crate) struct BoundedReader<R> {
    inner: R,
    left: u64,
    limit: u64,
    what: &'static str,
}

impl<R: Read> BoundedReader<R> {
    pub(crate) fn new(inner: R, limit: u64, what: &'static str) -> Self {
        BoundedReader {
            inner,
            left: limit,
            limit,
            what,
        }
    }
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the limit is asked for, so that exactly `limit` bytes still pass.
        let wanted = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..wanted])?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} is larger than the limit of {} bytes",
                self.what, self.limit
            ))
        })?;
        Ok(n)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old or
/// the new content, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        EngineError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        }
    })
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes =
        std::fs::read(path).map_err(EngineError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid(path.display().to_string(), e))
}

/// Serialises to pretty JSON and writes atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::invalid(path.display().to_string(), e))?;
    write_atomic(path, &bytes)
}

/// 32 random bytes from the kernel, as 64 hex characters: container IDs and temp names.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(EngineError::io("reading /dev/urandom"))?;
    Ok(hex::encode(bytes))
}

/// RFC 3339 in UTC with all nine digits of nanoseconds, as docker's json-file log driver writes.
const RFC3339_NANOS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats a time as RFC 3339 in UTC with nanoseconds, as docker's json-file log driver does.
/// Times before the epoch are written as the epoch.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let at = OffsetDateTime::UNIX_EPOCH
        .checked_add(time::Duration::try_from(since).unwrap_or(time::Duration::ZERO))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // Formatting fails only for a year past 9999, which no clock of ours reaches.
    at.format(RFC3339_NANOS).unwrap_or_default()
}

/// Parses RFC 3339 in UTC (`Z` suffix), as [`rfc3339`] writes it, with any number of fraction
/// digits; returns `None` for anything else, and for times before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    if !text.ends_with('Z') {
        return None;
    }
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let since = u64::try_from(at.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::new(since, at.nanosecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let time = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let text = rfc3339(time);
        assert_eq!(text, "2026-11-18T11:06:40.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(time));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn rfc3339_writes_the_calendar_across_leap_years_and_ends_of_years() {
        let at = |secs: u64, nanos: u32| rfc3339(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(
            at(1_735_689_599, 999_999_999),
            "2024-12-31T23:59:59.999999999Z"
        );
        assert_eq!(at(4_107_542_400, 7), "2100-03-01T00:00:00.000000007Z");
        assert_eq!(at(68_169_600, 1_000), "1972-02-29T00:00:00.000001000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000000000Z",
            "times before the epoch are written as the epoch"
        );
    }

    #[test]
    fn parse_rfc3339_takes_utc_with_any_fraction_and_refuses_the_rest() {
        let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), at(951_782_400, 0));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.5Z"),
            at(951_782_400, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-12-31T23:59:59.123Z"),
            at(1_735_689_599, 123_000_000)
        );
        for refused in [
            "",
            "2024-12-31",
            "2024-12-31T23:59:59",
            "2024-12-31T23:59:59+01:00",
            "2024-13-01T00:00:00Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn digest_parsing_rejects_bad_input() {
        let good = Digest::of(b"hello");
        assert_eq!(Digest::parse(&good.to_string()).ok(), Some(good));
        assert!(Digest::parse("sha256:xyz").is_err());
        assert!(Digest::parse("md5:00").is_err());
    }
}
