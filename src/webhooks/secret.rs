//! Values that must never reach a log, an error message or a `{:?}`: endpoint secrets as
//! configured and the signing keys decoded from them.

use base64::Engine;
use serde::Deserialize;

/// What every redacted value prints instead of itself.
const REDACTED: &str = "[redacted]";

/// A secret as written in the configuration (`whsec_…`). It deserializes from a plain string
/// but prints as `[redacted]` through `Debug` and `Display`, so a `Settings` printed with
/// `{:?}`, or an error that formats a value, never shows it. The only way to the text is
/// [`SecretString::expose`], which is easy to search for.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wrap a secret (tests, or a value read from the environment).
    pub fn new(text: impl Into<String>) -> SecretString {
        SecretString(text.into())
    }

    /// The secret itself, for decoding it; never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The prefix of Standard Webhooks secrets; the rest is the key in standard base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// An HMAC key decoded from a `whsec_…` secret. Redacted like [`SecretString`].
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

/// Why a secret cannot be used. The text never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret does not start with `whsec_`.
    #[error("must start with '{SECRET_PREFIX}' followed by the key in base64")]
    MissingPrefix,
    /// What follows the prefix is not standard base64 (with padding).
    #[error("the part after '{SECRET_PREFIX}' is not valid base64")]
    NotBase64,
    /// The key is empty.
    #[error("the key after '{SECRET_PREFIX}' is empty")]
    Empty,
}

impl SigningKey {
    /// Decode a `whsec_<base64>` secret into its key bytes.
    pub fn from_secret(secret: &SecretString) -> Result<SigningKey, SecretError> {
        let encoded = secret
            .expose()
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SigningKey(key))
    }

    /// The key bytes, for the HMAC.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn secrets_and_keys_never_print_themselves() {
        let secret = SecretString::new(SECRET);
        let key = SigningKey::from_secret(&secret).expect("a valid secret");
        for printed in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{secret:#?}"),
            format!("{key:?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!printed.contains("MfKQ9r8"), "{printed}");
            assert!(printed.contains("[redacted]"), "{printed}");
        }
    }

    #[test]
    fn a_secret_decodes_only_with_the_prefix_and_valid_base64() {
        let key = SigningKey::from_secret(&SecretString::new(SECRET)).expect("valid");
        assert_eq!(key.bytes().len(), 24);
        for (bad, expected) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretError::MissingPrefix,
            ),
            ("whsec_not base64!", SecretError::NotBase64),
            ("whsec_MfKQ9r8", SecretError::NotBase64),
            ("whsec_", SecretError::Empty),
        ] {
            assert_eq!(
                SigningKey::from_secret(&SecretString::new(bad)),
                Err(expected),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_secret_error_never_contains_the_secret() {
        let error = SigningKey::from_secret(&SecretString::new("whsec_s3cr3t!!")).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"));
    }
}
