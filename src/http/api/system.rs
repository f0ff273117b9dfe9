//! Endpoints for probes, open to everyone.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `alive`.
    status: &'static str,
}

/// Liveness: answers whenever the process serves; touches no dependency.
#[utoipa::path(get, path = "/livez", tag = "health", security(()),
    responses((status = OK, body = Liveness)))]
pub async fn livez() -> Json<Liveness> {
    Json(Liveness { status: "alive" })
}
