//! API versions in request paths: `/v1.51/services` names the version the client speaks, a path
//! without one means the newest. shoal answers 1.24 (the oldest the docker CLI of today still
//! negotiates down to) through 1.51 (docker 28).

use std::fmt;

use crate::error::ApiError;

/// One `MAJOR.MINOR` API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

/// The oldest version served.
pub const MIN_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 24,
};
/// The newest version served, and what an unversioned path speaks.
pub const API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 51,
};

/// [`API_VERSION`] as text, for the `Api-Version` header every answer carries.
pub const API_VERSION_TEXT: &str = "1.51";

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl ApiVersion {
    fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.split_once('.')?;
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse().ok())
                .flatten()
        };
        Some(ApiVersion {
            major: number(major)?,
            minor: number(minor)?,
        })
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ApiVersion { major, minor }
    }
}

/// Splits a request path into the version it asks for and the rest: `/v1.45/nodes` is
/// (1.45, `/nodes`), `/nodes` is (newest, `/nodes`). A version outside the served range is
/// Docker's 400, with its words.
pub fn split_version(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((API_VERSION, path));
    };
    let (text, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some(version) = ApiVersion::parse(text) else {
        // `/version` and the like: a path, not a version.
        return Ok((API_VERSION, path));
    };
    if version > API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if version < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok((version, if tail.is_empty() { "/" } else { tail }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_version_or_speak_the_newest() {
        for (path, version, rest) in [
            ("/v1.51/services", "1.51", "/services"),
            ("/v1.24/nodes/abc", "1.24", "/nodes/abc"),
            ("/v1.41/_ping", "1.41", "/_ping"),
            ("/services", "1.51", "/services"),
            ("/version", "1.51", "/version"),
            ("/v1.45", "1.45", "/"),
        ] {
            let (got, tail) = split_version(path).unwrap();
            assert_eq!((got.to_string().as_str(), tail), (version, rest), "{path}");
        }
    }

    #[test]
    fn versions_outside_the_range_are_refused_in_docker_s_words() {
        let error = split_version("/v1.99/info").unwrap_err();
        assert_eq!(error.status, hyper::StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "client version 1.99 is too new. Maximum supported API version is 1.51"
        );
        let error = split_version("/v1.12/info").unwrap_err();
        assert!(
            error.message.starts_with(
                "client version 1.12 is too old. Minimum supported API version is 1.24"
            ),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_header_s_text_is_the_newest_version() {
        assert_eq!(API_VERSION.to_string(), API_VERSION_TEXT);
    }

    #[test]
    fn at_least_compares_minor_numbers_as_numbers() {
        let version = ApiVersion {
            major: 1,
            minor: 41,
        };
        assert!(version.at_least(1, 9));
        assert!(version.at_least(1, 41));
        assert!(!version.at_least(1, 42));
    }
}
