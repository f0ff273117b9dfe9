//! What a function call's answer means for its caller: the rejections it may raise,
//! and its JSON result decoded.

use serde::de::DeserializeOwned;

use super::CallError;
use crate::store::StoreError;

/// The rejections a call may raise, and what each means for this call.
#[derive(Default)]
pub(super) struct Rejections {
    pub not_found: Option<StoreError>,
    pub parent_not_found: Option<StoreError>,
    pub expired: Option<StoreError>,
    pub turn_limit: Option<StoreError>,
}

impl Rejections {
    fn meaning(self, sqlstate: &str) -> Option<StoreError> {
        match sqlstate {
            "EX404" => self.not_found,
            "EX422" => self.parent_not_found,
            "EX410" => self.expired,
            "EX409" => self.turn_limit,
            _ => None,
        }
    }
}

/// A call's answer, as its meaning for the caller.
pub(super) fn decode<R: DeserializeOwned>(
    function: &str,
    answer: Result<String, CallError>,
    rejections: Rejections,
) -> Result<R, StoreError> {
    let json = answer.map_err(|error| match error {
        CallError::Rejected { sqlstate } => rejections.meaning(&sqlstate).unwrap_or_else(|| {
            StoreError::Internal(format!("{function} raised unexpected SQLSTATE {sqlstate}"))
        }),
        other => transport_error(function, other),
    })?;
    serde_json::from_str(&json)
        .map_err(|e| StoreError::Internal(format!("{function} returned unreadable JSON: {e}")))
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
