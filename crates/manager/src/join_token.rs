//! Join tokens in Swarm's form: `SWMTKN-1-<digest>-<secret>`, where the digest is the SHA-256
//! of the root CA certificate (DER) in base 36, zero-padded to 50 characters, and the secret is
//! 16 random bytes in base 36, zero-padded to 25. A joining node checks the CA a manager
//! presents against the digest before trusting it, and proves with the secret that it may join
//! in the token's role.

use sha2::{Digest, Sha256};

use crate::error::ManagerError;

const PREFIX: &str = "SWMTKN-1-";
const DIGEST_LENGTH: usize = 50;
const SECRET_LENGTH: usize = 25;

/// A token taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The root CA digest, in base 36.
    pub ca_digest: String,
    /// The role secret, in base 36.
    pub secret: String,
}

/// `bytes` as a big-endian number in base 36, zero-padded to `width` digits.
fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&byte| byte != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(DIGITS[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// The digest part of a token for the root CA certificate `ca_cert_der`. DER, not PEM: a joining
/// node sees the certificate as DER in the TLS handshake.
pub fn ca_digest(ca_cert_der: &[u8]) -> String {
    base36(&Sha256::digest(ca_cert_der), DIGEST_LENGTH)
}

impl JoinToken {
    /// A new token for the root CA, with a fresh random secret.
    pub fn generate(ca_cert_der: &[u8]) -> JoinToken {
        let secret: [u8; 16] = rand::random();
        JoinToken {
            ca_digest: ca_digest(ca_cert_der),
            secret: base36(&secret, SECRET_LENGTH),
        }
    }

    /// Reads a token as a user pasted it.
    pub fn parse(token: &str) -> Result<JoinToken, ManagerError> {
        let invalid = |why: &str| {
            ManagerError::InvalidArgument(format!(
                "invalid join token ({why}): copy the whole line 'shoal swarm join-token worker' (or manager) prints on a manager"
            ))
        };
        let rest = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid("it does not start with SWMTKN-1-"))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| invalid("the secret part is missing"))?;
        let base36_digits = |part: &str| {
            part.bytes()
                .all(|byte| byte.is_ascii_digit() || byte.is_ascii_lowercase())
        };
        if digest.len() != DIGEST_LENGTH || !base36_digits(digest) {
            return Err(invalid("the CA digest part is not 50 base-36 characters"));
        }
        if secret.len() != SECRET_LENGTH || !base36_digits(secret) {
            return Err(invalid("the secret part is not 25 base-36 characters"));
        }
        Ok(JoinToken {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// Whether this is the token `stored` holds, compared in constant time: both are hashed
    /// and the digests compared without stopping at the first difference, so how long the
    /// comparison takes says nothing about how much of the secret a guess got right.
    pub fn is(&self, stored: &str) -> bool {
        let presented = Sha256::digest(self.to_string().as_bytes());
        let stored = Sha256::digest(stored.as_bytes());
        presented
            .iter()
            .zip(stored.iter())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }

    /// Whether `ca_cert_der` is the root CA this token was made for.
    pub fn trusts(&self, ca_cert_der: &[u8]) -> bool {
        self.ca_digest == ca_digest(ca_cert_der)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_big_endian_and_padded() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[1, 0], 4), "0074"); // 256 = 7 * 36 + 4
        assert_eq!(base36(&[0xff; 32], 50).len(), 50); // 2^256 - 1 fits in 50 digits
        assert_eq!(base36(&[0xff; 16], 25).len(), 25); // 2^128 - 1 fits in 25 digits
    }

    #[test]
    fn tokens_have_swarms_shape_and_round_trip() {
        let ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let token = JoinToken::generate(ca);
        let text = token.to_string();
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        let parsed = JoinToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed, token);
        assert!(parsed.trusts(ca));
        assert!(!parsed.trusts(b"another CA"));
        assert_ne!(JoinToken::generate(ca).secret, token.secret);
    }

    #[test]
    fn a_token_is_only_the_stored_text_it_was_read_from() {
        let ca = b"root certificate";
        let text = JoinToken::generate(ca).to_string();
        let parsed = JoinToken::parse(&text).unwrap();
        assert!(parsed.is(&text));
        assert!(!parsed.is(&JoinToken::generate(ca).to_string()));
        assert!(!parsed.is(""));
        assert!(!parsed.is(&text[..text.len() - 1]));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let digest = "0".repeat(50);
        let secret = "a".repeat(25);
        for (token, why) in [
            ("SWMTKN-2-x-y".to_owned(), "does not start"),
            (format!("SWMTKN-1-{digest}"), "secret part is missing"),
            (format!("SWMTKN-1-{}-{secret}", "0".repeat(49)), "CA digest"),
            (
                format!("SWMTKN-1-{digest}-{}", "A".repeat(25)),
                "secret part is not",
            ),
        ] {
            let message = JoinToken::parse(&token).unwrap_err().to_string();
            assert!(message.contains(why), "{token}: {message}");
            assert!(message.contains("swarm join-token"), "{message}");
        }
    }
}
