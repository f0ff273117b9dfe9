//! Dashboard sign-in: signed, expiring session cookies, CSRF tokens bound to them, and
//! a limit on failed sign-ins per client.

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::secret::Secret;

/// Name of the session cookie.
pub const COOKIE: &str = "exai_session";
/// How long a session lasts from sign-in.
pub const LIFETIME: TimeDelta = TimeDelta::hours(12);
/// Failed sign-ins a client may make within `FAILURE_WINDOW` before it must wait.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: TimeDelta = TimeDelta::minutes(5);

/// A valid session, named by the random part of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
    pub expires_at: DateTime<Utc>,
}

pub struct Sessions {
    key: [u8; 32],
    /// Sessions signed out before they expired, with their expiry.
    revoked: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Per client: when its first recent failure happened, and how many since.
    failures: Mutex<HashMap<String, (DateTime<Utc>, u32)>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Sessions {
    /// Keyed by `EXAI_SESSION_SECRET` when set, else by a key drawn at random now.
    pub fn new(secret: Option<&Secret>) -> Self {
        let material = match secret {
            Some(secret) => secret.expose().to_owned(),
            None => format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        };
        let key = Sha256::digest(material.as_bytes()).into();
        Self { key, revoked: Mutex::new(HashMap::new()), failures: Mutex::new(HashMap::new()) }
    }

    fn sign(&self, purpose: &str, message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(message.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A new session's cookie value: `expiry.nonce.signature`.
    pub fn issue(&self, now: DateTime<Utc>) -> String {
        let payload = format!("{}.{}", (now + LIFETIME).timestamp(), Uuid::new_v4().simple());
        let signature = self.sign("session", &payload);
        format!("{payload}.{signature}")
    }

    /// The session a cookie value names, if it is signed by this key, unexpired and
    /// not signed out.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Session> {
        let (payload, signature) = token.rsplit_once('.')?;
        let expected = self.sign("session", payload);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return None;
        }
        let (expiry, nonce) = payload.split_once('.')?;
        let expires_at = DateTime::from_timestamp(expiry.parse().ok()?, 0)?;
        let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner).contains_key(nonce);
        (expires_at > now && !revoked).then(|| Session { nonce: nonce.to_owned(), expires_at })
    }

    /// Ends a session before its expiry.
    pub fn revoke(&self, session: &Session, now: DateTime<Utc>) {
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        revoked.retain(|_, expires_at| *expires_at > now);
        revoked.insert(session.nonce.clone(), session.expires_at);
    }

    /// The CSRF token of forms shown in a session, or outside any (sign-in, or when the
    /// dashboard is open): a page of another origin cannot read it.
    pub fn csrf_token(&self, session: Option<&Session>) -> String {
        self.sign("csrf", session.map_or("", |session| session.nonce.as_str()))
    }

    pub fn csrf_matches(&self, session: Option<&Session>, presented: &str) -> bool {
        self.csrf_token(session).as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Whether `client` may try to sign in now; `Err` holds how long it must wait.
    pub fn may_try(&self, client: &str, now: DateTime<Utc>) -> Result<(), TimeDelta> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(client) {
            Some((first, count)) if *count >= MAX_FAILURES && now - *first < FAILURE_WINDOW => {
                Err(*first + FAILURE_WINDOW - now)
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, client: &str, now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.retain(|_, (first, _)| now - *first < FAILURE_WINDOW);
        let entry = failures.entry(client.to_owned()).or_insert((now, 0));
        entry.1 += 1;
    }
}

/// The value of one cookie in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
    }

    #[test]
    fn sessions_verify_until_they_expire_or_are_revoked() {
        let sessions = Sessions::new(Some(&Secret::new("s3cret")));
        let token = sessions.issue(now());
        let session = sessions.verify(&token, now()).expect("valid");
        assert!(sessions.verify(&token, now() + LIFETIME).is_none(), "expired");
        sessions.revoke(&session, now());
        assert!(sessions.verify(&token, now()).is_none(), "signed out");
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let sessions = Sessions::new(Some(&Secret::new("s3cret")));
        let token = sessions.issue(now());
        let far = (now() + TimeDelta::days(900)).timestamp().to_string();
        let (_, rest) = token.split_once('.').unwrap();
        assert!(sessions.verify(&format!("{far}.{rest}"), now()).is_none(), "extended expiry");
        assert!(Sessions::new(None).verify(&token, now()).is_none(), "another key");
        assert!(Sessions::new(Some(&Secret::new("s3cret"))).verify(&token, now()).is_some(), "same key");
        assert!(sessions.verify("garbage", now()).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let sessions = Sessions::new(None);
        let session = sessions.verify(&sessions.issue(now()), now()).unwrap();
        let other = sessions.verify(&sessions.issue(now()), now()).unwrap();
        let token = sessions.csrf_token(Some(&session));
        assert!(sessions.csrf_matches(Some(&session), &token));
        assert!(!sessions.csrf_matches(Some(&other), &token));
        assert!(!sessions.csrf_matches(None, &token));
    }

    #[test]
    fn repeated_failures_make_a_client_wait() {
        let sessions = Sessions::new(None);
        for _ in 0..MAX_FAILURES {
            assert!(sessions.may_try("10.0.0.1", now()).is_ok());
            sessions.failed("10.0.0.1", now());
        }
        assert_eq!(sessions.may_try("10.0.0.1", now()), Err(FAILURE_WINDOW));
        assert!(sessions.may_try("10.0.0.2", now()).is_ok(), "other clients are not held");
        assert!(sessions.may_try("10.0.0.1", now() + FAILURE_WINDOW).is_ok());
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(cookie("a=1; exai_session=x.y.z; b=2", COOKIE), Some("x.y.z"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }
}
