//! Every route of the service, and the OpenAPI document generated from them.

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use std::collections::BTreeMap;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::api::system::HealthFormat;
use super::api::{runs, stats, system, threads, tools, turns};
use super::auth::require_api_key;
use super::error::{ApiError, ErrorCode, PROBLEM_JSON};
use super::extract::UUID_PATTERN;
use super::request_context::request_context;
use crate::app::AppState;
use crate::conversations::StatusFilter;

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
    // Query parameters name these schemas; routes only collect those of bodies.
    components(schemas(StatusFilter, HealthFormat)),
    modifiers(&BearerKeys),
    tags(
        (name = "threads", description = "Conversation threads"),
        (name = "turns", description = "Turns of a thread"),
        (name = "tools", description = "Tools and starting runs"),
        (name = "runs", description = "Tool runs: state, events, cancellation"),
        (name = "health", description = "Probes; no API key needed"),
        (name = "stats", description = "Recent figures behind the dashboard"),
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

/// Answers that follow from an operation's shape, declared once: every `/v1` call can
/// be refused its key or meet a store that is down; an `{id}` can be malformed; a body
/// can be malformed, too slow to arrive, too large, of another media type or invalid. Applied to the
/// document after the routes are merged in, since it walks their operations.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let codes = shared_codes(path, operation);
                for (status, described) in by_status(&codes) {
                    let problem = ResponseBuilder::new()
                        .description(described)
                        .content(
                            PROBLEM_JSON,
                            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                        )
                        .build();
                    operation.responses.responses.entry(status).or_insert(RefOr::T(problem));
                }
                hyphenated_ids(operation);
            }
        }
    }
}

fn shared_codes(path: &str, operation: &Operation) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    if path.starts_with("/v1/") || path == "/metrics" {
        codes.push(ErrorCode::Unauthorized);
    }
    if path.starts_with("/v1/") {
        codes.extend([ErrorCode::Internal, ErrorCode::StoreUnavailable]);
    }
    if path.contains("{id}") {
        codes.push(ErrorCode::InvalidId);
    }
    if operation.request_body.is_some() {
        codes.extend([
            ErrorCode::MalformedJson,
            ErrorCode::RequestTimeout,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ValidationFailed,
        ]);
    }
    codes
}

/// Each status with the codes that share it, as a response description.
fn by_status(codes: &[ErrorCode]) -> BTreeMap<String, String> {
    let mut described = BTreeMap::<String, String>::new();
    for code in codes {
        let entry = described.entry(code.status().as_u16().to_string()).or_default();
        if !entry.is_empty() {
            entry.push_str(" or ");
        }
        entry.push_str(&format!("`{}`", code.as_str()));
    }
    described
}

/// Says what an `{id}` in a path must look like, beyond `format: uuid`.
fn hyphenated_ids(operation: &mut Operation) {
    let parameters = operation.parameters.iter_mut().flatten().filter_map(|p| match p {
        RefOr::T(parameter) => Some(parameter),
        RefOr::Ref(_) => None,
    });
    for parameter in parameters.filter(|p| p.parameter_in == ParameterIn::Path && p.name == "id") {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .pattern(Some(UUID_PATTERN));
        parameter.schema = Some(RefOr::T(Schema::Object(schema.build())));
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
        .routes(routes!(stats::get_stats))
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
        .merge(super::dashboard::routes(state.clone()))
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
