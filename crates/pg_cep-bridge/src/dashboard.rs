//! The dashboard: one HTML page built into the binary (`GET /`) and the JSON it draws its cards
//! and charts from (`GET /api/summary?table=...`). Its alert and match feeds come live from the
//! SSE streams.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{self, Viewer};
use crate::db::{quote_ident, DbError};
use crate::AppState;

/// The page: self-contained (no CDN), charts drawn as SVG by its own script.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the dashboard page.
pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

/// The watched table and the columns its watch names. `to_regclass` parses the name as an
/// identifier; the column names come from pg_cep's catalog and are quoted before use.
const WATCH_SQL: &str = "SELECT w.relid::regclass::text, w.key_column::text, w.amount_column::text, w.time_column::text, w.relid
    FROM cep.watches w WHERE w.relid = to_regclass($1)";

/// `GET /api/summary?table=T` (default `transactions`): cards, charts and recent rows. In role
/// mode, 403 unless the role may SELECT `T`, and the recent alerts, matches and per-table stats
/// are those of tables the role may SELECT.
pub async fn summary(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let table = query.get("table").map(String::as_str).unwrap_or("transactions");
    match build_summary(&state, table, &viewer).await {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response(),
        Err((status, message)) => (status, Json(json!({ "error": message }))).into_response(),
    }
}

type Failure = (StatusCode, String);

fn db_failure(e: tokio_postgres::Error) -> Failure {
    let e = DbError::from(e);
    let status = if e.from_server { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, e.message)
}

async fn json_query(client: &tokio_postgres::Client, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Value, Failure> {
    let row = client.query_one(sql, params).await.map_err(db_failure)?;
    let text: Option<String> = row.get(0);
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null))
}

async fn build_summary(state: &AppState, table: &str, viewer: &Viewer) -> Result<Value, Failure> {
    let client = state.pool.get().await.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}")))?;
    let watch = client.query_opt(WATCH_SQL, &[&table]).await.map_err(db_failure)?;
    let Some(watch) = watch else {
        return Err((StatusCode::NOT_FOUND, format!("{table:?} is not a table watched by pg_cep")));
    };
    let (qualified, key, amount, time): (String, String, String, String) = (watch.get(0), watch.get(1), watch.get(2), watch.get(3));
    if let Some(role) = &viewer.0 {
        match auth::can_select(state, role, watch.get(4)).await {
            Ok(true) => {}
            Ok(false) => return Err((StatusCode::FORBIDDEN, format!("role {role:?} may not SELECT {qualified}"))),
            Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}"))),
        }
    }
    // NULL outside role mode: no filter.
    let role = viewer.role();
    let (key, amount, time) = (quote_ident(&key), quote_ident(&amount), quote_ident(&time));

    // Per minute over the last 30 minutes; the last minute's count gives the TPS card. Reads the
    // table itself (the watch's time column is indexed by cep.watch by default).
    let per_minute_sql = format!(
        "SELECT jsonb_build_object(
            'minutes', coalesce((SELECT jsonb_agg(jsonb_build_object('minute', m, 'count', n, 'amount', a) ORDER BY m) FROM (
                SELECT date_trunc('minute', {time}) AS m, count(*) AS n, coalesce(sum({amount}), 0)::float8 AS a
                FROM {qualified} WHERE {time} > now() - interval '30 minutes' GROUP BY 1) s), '[]'::jsonb),
            'last_minute', (SELECT count(*) FROM {qualified} WHERE {time} > now() - interval '1 minute'),
            'users_30m', (SELECT count(DISTINCT {key}) FROM {qualified} WHERE {time} > now() - interval '30 minutes'))::text"
    );
    let per_minute = json_query(&client, &per_minute_sql, &[]).await?;
    let realtime =
        json_query(&client, "SELECT to_jsonb(r)::text FROM cep.realtime_stats(to_regclass($1), interval '5 minutes', 10) r", &[&qualified]).await?;
    let stats = json_query(
        &client,
        "SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.total_ms DESC), '[]')::text FROM cep.stats() s
          WHERE $1::name IS NULL OR has_table_privilege($1::name, to_regclass(s.table_name)::oid, 'SELECT')",
        &[&role],
    )
    .await?;
    let rules = json_query(&client, "SELECT coalesce(jsonb_object_agg(rule_id, rule_name), '{}')::text FROM cep.risk_rules", &[]).await?;
    let recent_alerts = json_query(
        &client,
        "SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.alert_id DESC), '[]')::text FROM (SELECT * FROM cep.alerts
          WHERE $1::name IS NULL OR has_table_privilege($1::name, relid, 'SELECT') ORDER BY alert_id DESC LIMIT 50) a",
        &[&role],
    )
    .await?;
    let recent_matches = json_query(
        &client,
        "SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.match_id DESC), '[]')::text FROM (SELECT * FROM cep.pattern_matches
          WHERE $1::name IS NULL OR has_table_privilege($1::name, cep.pattern_source(pattern_id), 'SELECT') ORDER BY match_id DESC LIMIT 20) m",
        &[&role],
    )
    .await?;

    let this_table = stats.as_array().and_then(|a| a.iter().find(|s| s["table_name"].as_str() == Some(qualified.as_str())));
    let latency_ms = this_table.and_then(|s| {
        let rows = s["rows_seen"].as_f64()?;
        let total = s["total_ms"].as_f64()?;
        (rows > 0.0).then(|| total / rows)
    });
    let minutes = per_minute["minutes"].clone();
    let total_30m: i64 = minutes.as_array().map(|a| a.iter().filter_map(|m| m["count"].as_i64()).sum()).unwrap_or(0);
    let tps = per_minute["last_minute"].as_f64().unwrap_or(0.0) / 60.0;
    Ok(json!({
        "table": qualified,
        "cards": {
            "total": total_30m,
            "tps": tps,
            "latency_ms": latency_ms,
            "active_users": realtime["active_users"],
        },
        "per_minute": minutes,
        "realtime": realtime,
        "top_users": realtime["top_users"],
        "stats": stats,
        "rules": rules,
        "recent_alerts": recent_alerts,
        "recent_matches": recent_matches,
    }))
}
