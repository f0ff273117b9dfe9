//! The HTTP edge: routes, extractors, authentication and problem+json errors.

mod api;
mod auth;
mod dashboard;
mod error;
mod extract;
mod forwarded;
mod request_context;
mod router;

pub use auth::ApiKeys;
pub use dashboard::{Sessions, Setting, effective_settings};
pub use error::{ApiError, ErrorCode, Problem};
pub use forwarded::{Client, Peer, TrustedProxies};
pub use router::{openapi, router};
