//! What a function call's answer means for its caller: the rejections it may raise,
//! and its JSON result decoded.

use serde::de::DeserializeOwned;

use super::CallError;
use crate::domain::Rejection;
use crate::store::{StoreError, WriteError};

/// The rejections a call may raise, and what each means for this call.
#[derive(Default)]
pub(super) struct Rejections {
    pub not_found: Option<Rejection>,
    pub parent_not_found: Option<Rejection>,
    pub expired: Option<Rejection>,
    pub turn_limit: Option<Rejection>,
    pub run_ended: Option<Rejection>,
}

impl Rejections {
    fn meaning(self, sqlstate: &str) -> Option<Rejection> {
        match sqlstate {
            "EX404" => self.not_found,
            "EX422" => self.parent_not_found,
            "EX410" => self.expired,
            "EX409" => self.turn_limit,
            "EX412" => self.run_ended,
            _ => None,
        }
    }
}

/// A call's answer, as its meaning for the caller: a refusal only where `rejections`
/// expects one.
pub(super) fn decode<R: DeserializeOwned>(
    function: &str,
    answer: Result<String, CallError>,
    rejections: Rejections,
) -> Result<R, WriteError> {
    let json = answer.map_err(|error| match error {
        CallError::Rejected { sqlstate } => rejections.meaning(&sqlstate).map_or_else(
            || StoreError::Internal(format!("{function} raised unexpected SQLSTATE {sqlstate}")).into(),
            WriteError::Refused,
        ),
        other => transport_error(function, other).into(),
    })?;
    Ok(serde_json::from_str(&json)
        .map_err(|e| StoreError::Internal(format!("{function} returned unreadable JSON: {e}")))?)
}

/// The answer of a call no rule refuses.
pub(super) fn decode_unrefused<R: DeserializeOwned>(
    function: &str,
    answer: Result<String, CallError>,
) -> Result<R, StoreError> {
    decode(function, answer, Rejections::default()).map_err(|error| unrefused(function, error))
}

/// The failure of a call no rule refuses: a refusal there is a fault of the function.
pub(super) fn unrefused(function: &str, error: WriteError) -> StoreError {
    match error {
        WriteError::Failed(failure) => failure,
        WriteError::Refused(refusal) => StoreError::Internal(format!("{function} refused: {refusal}")),
    }
}

pub(super) fn transport_error(function: &str, error: CallError) -> StoreError {
    match error {
        CallError::Unavailable(cause) => StoreError::Unavailable(cause),
        CallError::Misconfigured(cause) => StoreError::Misconfigured(cause),
        CallError::Rejected { sqlstate } => {
            StoreError::Internal(format!("{function} raised SQLSTATE {sqlstate}"))
        }
        CallError::Failed(cause) => StoreError::Internal(format!("{function}: {cause}")),
    }
}
