//! A PostgREST-protocol server for tests: `POST /rest/v1/rpc/<function>` runs the
//! function on the real test PostgreSQL with the JSON body as named arguments, the way
//! PostgREST does, and answers with PostgREST's result and error shapes. It checks the
//! key headers the way Supabase's gateway does. `/rest/v1/<table>` answers the table
//! requests supabase-py makes (upsert with `on_conflict` and `Prefer: resolution=…`;
//! select with `eq.` filters, `order` and `limit`) as the `service_role` role.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
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
    let app = Router::new()
        .route("/rest/v1/rpc/{function}", post(rpc))
        .route("/rest/v1/{table}", post(upsert).get(select))
        .with_state(gateway);
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

/// A table or column name as the request gives it, refused unless a plain identifier.
fn identifier(name: &str) -> Option<&str> {
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(name)
}

/// Runs `sql` (binding `params`) as `service_role`, the role Supabase's secret key maps to;
/// the answer is the JSON text the query returns.
async fn as_service_role(gateway: &Gateway, sql: &str, params: Vec<String>, status: StatusCode) -> Response {
    let result = async {
        let mut tx = gateway.pool.begin().await?;
        sqlx::query("SET LOCAL ROLE service_role").execute(&mut *tx).await?;
        let mut query = sqlx::query_scalar::<_, String>(sql);
        for param in params {
            query = query.bind(param);
        }
        let body = query.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(body)
    }
    .await;
    match result {
        Ok(body) => (status, [("content-type", "application/json")], body).into_response(),
        Err(sqlx::Error::Database(db)) => {
            let code = db.code().unwrap_or_default().into_owned();
            let status = if code == "23505" { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            error(status, &code, db.message())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "PGRST001", e.to_string()),
    }
}

/// `POST /rest/v1/<table>?on_conflict=<columns>` with `Prefer: resolution=merge-duplicates`
/// (update the given columns) or `resolution=ignore-duplicates` (skip the row).
async fn upsert(
    State(gateway): State<Arc<Gateway>>,
    Path(table): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(refused) = refuse_keys(&gateway, &headers) {
        return refused;
    }
    let rows = match body {
        Value::Array(rows) => rows,
        row => vec![row],
    };
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for key in row.as_object().map(|o| o.keys()).into_iter().flatten() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    let conflict: Vec<&str> = query.get("on_conflict").map(|c| c.split(',').collect()).unwrap_or_default();
    let Some(table) = identifier(&table) else {
        return error(StatusCode::BAD_REQUEST, "PGRST100", "bad table name");
    };
    if columns.iter().chain(&conflict).any(|c| identifier(c).is_none()) {
        return error(StatusCode::BAD_REQUEST, "PGRST100", "bad column name");
    }
    let prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let on_conflict = if conflict.is_empty() {
        String::new()
    } else if prefer.contains("resolution=ignore-duplicates") {
        format!("ON CONFLICT ({}) DO NOTHING", conflict.join(", "))
    } else {
        let set: Vec<String> = columns.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        format!("ON CONFLICT ({}) DO UPDATE SET {}", conflict.join(", "), set.join(", "))
    };
    let list = columns.join(", ");
    let sql = format!(
        "WITH stored AS (INSERT INTO {table} ({list}) \
         SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::json) {on_conflict} RETURNING *) \
         SELECT coalesce(jsonb_agg(to_jsonb(stored)), '[]')::text FROM stored"
    );
    as_service_role(&gateway, &sql, vec![Value::Array(rows).to_string()], StatusCode::CREATED).await
}

/// `GET /rest/v1/<table>?select=*&<column>=eq.<value>&order=<column>&limit=<n>`.
async fn select(
    State(gateway): State<Arc<Gateway>>,
    Path(table): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_keys(&gateway, &headers) {
        return refused;
    }
    let Some(table) = identifier(&table) else {
        return error(StatusCode::BAD_REQUEST, "PGRST100", "bad table name");
    };
    let mut filters = Vec::new();
    let mut params = Vec::new();
    let mut order = String::new();
    let mut limit = String::new();
    for (name, value) in &query {
        match name.as_str() {
            "select" => {}
            "order" => match identifier(value) {
                Some(column) => order = format!("ORDER BY {column}"),
                None => return error(StatusCode::BAD_REQUEST, "PGRST100", "bad order"),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) => limit = format!("LIMIT {n}"),
                Err(_) => return error(StatusCode::BAD_REQUEST, "PGRST100", "bad limit"),
            },
            column => match (identifier(column), value.strip_prefix("eq.")) {
                (Some(column), Some(value)) => {
                    params.push(value.to_owned());
                    filters.push(format!("{column}::text = ${}", params.len()));
                }
                _ => return error(StatusCode::BAD_REQUEST, "PGRST100", "unsupported filter"),
            },
        }
    }
    let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
    let sql = format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(found)), '[]')::text \
         FROM (SELECT * FROM {table} {filter} {order} {limit}) found"
    );
    as_service_role(&gateway, &sql, params, StatusCode::OK).await
}
