//! Bearer API keys, kept as digests.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::secret::Secret;

/// Accepted keys, kept as SHA-256 digests so that comparing a presented key takes the
/// same time whatever its length or how much of it matches.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        Self { digests: keys.iter().map(|key| digest(key.expose())).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let matched = self.digests.iter().fold(Choice::from(0), |found, key| found | key.ct_eq(&presented));
        matched.into()
    }

    /// Whether a request may see what is kept from the public: always when no keys are
    /// configured, else only with a valid key.
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        self.is_empty() || bearer_token(headers).is_some_and(|token| self.accepts(token))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_keys_are_accepted() {
        let keys = ApiKeys::new(&[Secret::new("alpha-key"), Secret::new("beta-key")]);
        assert!(keys.accepts("alpha-key") && keys.accepts("beta-key"));
        assert!(!keys.accepts("alpha") && !keys.accepts("") && !keys.accepts("alpha-key "));
        assert!(ApiKeys::new(&[]).is_empty());
    }
}
