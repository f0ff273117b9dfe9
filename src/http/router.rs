//! Every route of the service, and the OpenAPI document generated from them.

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::api::{runs, system, threads, tools, turns};
use super::auth::require_api_key;
use super::error::{ApiError, ErrorCode, PROBLEM_JSON};
use super::request_context::request_context;
use crate::app::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "exai",
        description = "Conversation memory and tool execution for AI tool chains. A thread's `id` \
                       is the `continuation_id` tools pass around. Errors are RFC 9457 \
                       problem+json with a stable `code`."
    ),
    security(("bearer" = [])),
    modifiers(&BearerKeys),
    tags(
        (name = "threads", description = "Conversation threads"),
        (name = "turns", description = "Turns of a thread"),
        (name = "tools", description = "Tools and starting runs"),
        (name = "runs", description = "Tool runs: state, events, cancellation"),
        (name = "health", description = "Probes; no API key needed"),
    )
)]
struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("One of the keys in EXAI_API_KEYS; required when keys are configured"))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Answers every `/v1` operation can give, declared once. Applied to the document
/// after the routes are merged in, since it walks their operations.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let shared: &[ErrorCode] = match path.as_str() {
                api if api.starts_with("/v1/") => {
                    &[ErrorCode::Unauthorized, ErrorCode::Internal, ErrorCode::StoreUnavailable]
                }
                "/metrics" => &[ErrorCode::Unauthorized],
                _ => continue,
            };
            let operations =
                [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                for &code in shared {
                    let problem = ResponseBuilder::new()
                        .description(format!("`{}`", code.as_str()))
                        .content(
                            PROBLEM_JSON,
                            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .insert(code.status().as_u16().to_string(), RefOr::T(problem));
                }
            }
        }
    }
}

fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(threads::create_thread, threads::list_threads))
        .routes(routes!(threads::get_thread, threads::delete_thread))
        .routes(routes!(threads::get_history))
        .routes(routes!(turns::append_turn, turns::list_turns))
        .routes(routes!(tools::list_tools))
        .routes(routes!(tools::create_run))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::run_events))
        .routes(routes!(runs::cancel_run))
}

/// Routes behind the API key (when keys are configured).
fn protected_routes() -> OpenApiRouter<AppState> {
    v1_routes().routes(routes!(system::metrics))
}

/// Probes, open to every caller.
fn probe_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(system::livez))
        .routes(routes!(system::readyz))
        .routes(routes!(system::healthz))
}

/// Joins the route groups into the routes served and the document describing them.
fn assemble(protected: OpenApiRouter<AppState>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(probe_routes())
        .split_for_parts();
    SharedErrors.modify(&mut openapi);
    (routes, openapi)
}

/// The OpenAPI document of every route below.
pub fn openapi() -> utoipa::openapi::OpenApi {
    assemble(protected_routes()).1
}

pub fn router(state: AppState) -> Router {
    let protected =
        protected_routes().route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    let (routes, openapi) = assemble(protected);
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), request_context))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no route matches this path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}
