//! A PostgREST-protocol server for tests: `POST /rest/v1/rpc/<function>` runs the
//! function on the real test PostgreSQL with the JSON body as named arguments, the way
//! PostgREST does, and answers with PostgREST's result and error shapes. It checks the
//! key headers the way Supabase's gateway does.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::sync::Arc;

pub const SECRET_KEY: &str = "sb_secret_test_0123456789abcdef";
pub const JWT_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdA";

struct Gateway {
    pool: PgPool,
    key: String,
}

pub struct PostgrestServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PostgrestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the database at `database_url` on a free port, accepting `key`.
pub async fn start(database_url: &str, key: &str) -> PostgrestServer {
    let pool = PgPool::connect_lazy(database_url).unwrap();
    let gateway = Arc::new(Gateway { pool, key: key.to_owned() });
    let app = Router::new().route("/rest/v1/rpc/{function}", post(rpc)).with_state(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    PostgrestServer { url, task }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"code": code, "message": message.into(), "details": null, "hint": null});
    (status, axum::Json(body)).into_response()
}

/// The gateway's rule: `apikey` always; a JWT key also as `Authorization: Bearer`; an
/// `sb_secret_` key never as a bearer token, since it is not a JWT. Returns the refusal.
fn refuse_keys(gateway: &Gateway, headers: &HeaderMap) -> Option<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let expected_bearer = gateway.key.starts_with("eyJ").then(|| format!("Bearer {}", gateway.key));
    if header("apikey") != Some(gateway.key.as_str()) {
        Some(error(StatusCode::UNAUTHORIZED, "PGRST301", "missing or wrong apikey"))
    } else if header("authorization") != expected_bearer.as_deref() {
        Some(error(StatusCode::UNAUTHORIZED, "PGRST301", "Authorization does not fit the key kind"))
    } else if header("prefer").is_some_and(|prefer| prefer.contains("params=single-object")) {
        Some(error(StatusCode::BAD_REQUEST, "PGRST122", "Prefer: params=single-object was removed"))
    } else {
        None
    }
}

/// Parameter names and types of a function, as PostgREST reads them from the catalog.
type Signature = (Vec<String>, Vec<String>);

async fn rpc(
    State(gateway): State<Arc<Gateway>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    axum::Json(args): axum::Json<Map<String, Value>>,
) -> Response {
    if let Some(refused) = refuse_keys(&gateway, &headers) {
        return refused;
    }
    let signature: Result<Option<Signature>, sqlx::Error> = sqlx::query_as(
        "SELECT coalesce(p.proargnames, '{}'), \
                array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public' AND p.proname = $1",
    )
    .bind(&function)
    .fetch_optional(&gateway.pool)
    .await;
    let (names, types) = match signature {
        Ok(Some(signature)) => signature,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "PGRST202",
                format!("Could not find the function public.{function}"),
            );
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "PGRST001", e.to_string()),
    };
    let mut given: Vec<&String> = args.keys().collect();
    let mut wanted: Vec<&String> = names.iter().collect();
    given.sort();
    wanted.sort();
    if given != wanted {
        return error(StatusCode::NOT_FOUND, "PGRST202", format!("no {function} with parameters {given:?}"));
    }
    let named: Vec<String> = names.iter().map(|n| format!("{n} => _.{n}")).collect();
    let columns: Vec<String> = names.iter().zip(&types).map(|(n, t)| format!("{n} {t}")).collect();
    let sql = if names.is_empty() {
        format!("SELECT to_jsonb(public.{function}())::text")
    } else {
        format!(
            "SELECT to_jsonb(public.{function}({}))::text FROM json_to_record($1::json) AS _({})",
            named.join(", "),
            columns.join(", ")
        )
    };
    let mut query = sqlx::query_scalar::<_, Option<String>>(&sql);
    if !names.is_empty() {
        query = query.bind(Value::Object(args).to_string());
    }
    match query.fetch_one(&gateway.pool).await {
        Ok(json) => {
            let body = json.unwrap_or_else(|| "null".into());
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        Err(sqlx::Error::Database(db)) => {
            let code = db.code().unwrap_or_default().into_owned();
            error(StatusCode::BAD_REQUEST, &code, db.message())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "PGRST001", e.to_string()),
    }
}
