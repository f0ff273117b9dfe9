//! The HTTP edge: routes, extractors, authentication and problem+json errors.

mod api;
mod auth;
mod dashboard;
mod deadline_body;
mod error;
mod extract;
mod forwarded;
mod request_context;
mod router;

pub use deadline_body::{BodyTimedOut, DeadlineBody};
pub use error::{ApiError, ErrorCode, Problem};
pub use forwarded::{Client, Peer};
pub use router::{openapi, router};
