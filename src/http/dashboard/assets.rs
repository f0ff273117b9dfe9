//! The stylesheet, script and icon, compiled into the binary and served with a content hash
//! in their URL, so browsers may keep them for a year.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    hash: LazyLock<String>,
}

impl Asset {
    /// Where pages link to it: the hash changes the URL whenever the content changes.
    pub fn url(&self) -> String {
        format!("/dashboard/static/{}?v={}", self.name, *self.hash)
    }
}

fn short_hash(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

pub static STYLESHEET: Asset = Asset {
    name: "dashboard.css",
    content_type: "text/css; charset=utf-8",
    body: include_str!("../../../static/dashboard.css"),
    hash: LazyLock::new(|| short_hash(include_str!("../../../static/dashboard.css"))),
};

pub static SCRIPT: Asset = Asset {
    name: "dashboard.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("../../../static/dashboard.js"),
    hash: LazyLock::new(|| short_hash(include_str!("../../../static/dashboard.js"))),
};

/// Named by every page, so that browsers do not ask for a `/favicon.ico` there is not.
pub static ICON: Asset = Asset {
    name: "favicon.svg",
    content_type: "image/svg+xml",
    body: include_str!("../../../static/favicon.svg"),
    hash: LazyLock::new(|| short_hash(include_str!("../../../static/favicon.svg"))),
};

pub async fn serve_asset(Path(name): Path<String>) -> Response {
    let Some(asset) = [&STYLESHEET, &SCRIPT, &ICON].into_iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let headers = [
        (CONTENT_TYPE, asset.content_type.to_owned()),
        (CACHE_CONTROL, "public, max-age=31536000, immutable".to_owned()),
        (ETAG, format!("\"{}\"", *asset.hash)),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_a_hash_of_the_content() {
        assert_eq!(short_hash("a").len(), 16);
        assert_ne!(short_hash("a"), short_hash("b"));
        assert!(STYLESHEET.url().starts_with("/dashboard/static/dashboard.css?v="));
    }
}
