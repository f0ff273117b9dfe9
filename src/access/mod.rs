//! Who may do what: API keys, dashboard sign-in sessions, and the proxies whose word
//! on a client's address is believed. Built from the configuration, used by the HTTP
//! layer.

mod api_keys;
mod proxies;
pub mod sessions;

pub use api_keys::{ApiKeys, bearer_token};
pub use proxies::TrustedProxies;
pub use sessions::Sessions;
