//! Authentication: none, one shared token, or the database's own roles (`--auth role`).
//!
//! In role mode a request carries HTTP Basic credentials of a database role. The bridge checks
//! them the only way that is certain to agree with the server: it logs in to the configured
//! database as that role with that password (host, port and database from `--database-url`), and
//! closes the connection at once. A success is remembered for `auth_cache_ttl` (60 s), keyed by
//! the user and a keyed hash of the password; a failure is not remembered. The role then decides
//! what the request sees: stream rows of tables it may `SELECT` (as pg_cep's row-level security
//! decides for `cep.alerts`), summaries of such tables, and ingest written as that role.
//!
//! The check is only as good as the server's `pg_hba.conf`: a `trust` rule for the bridge's
//! address logs anyone in with any password, and the bridge cannot tell.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use tokio_postgres::NoTls;

use crate::config::AuthMode;
use crate::db::DbError;
use crate::AppState;

/// Who a request acts for, put into every authenticated request's extensions: `Some(role)` in
/// role mode, `None` (everything the bridge's own role sees) otherwise.
#[derive(Clone, Debug, Default)]
pub struct Viewer(pub Option<Arc<str>>);

impl Viewer {
    pub fn role(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// How long a password check may take before it counts as failed (unavailable).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept in a cache before expired ones are swept out.
const SWEEP_AT: usize = 4096;

/// A role and a table's oid.
type RoleTable = (Arc<str>, u32);

/// The caches of role mode.
pub struct AuthCache {
    /// Keys the password hash: random per process, so the hash says nothing outside it.
    hasher: RandomState,
    /// (user, password hash) → when the login succeeded.
    logins: Mutex<HashMap<(String, u64), Instant>>,
    /// (role, table oid) → whether the role may SELECT the table, and when that was asked.
    selects: Mutex<HashMap<RoleTable, (bool, Instant)>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache { hasher: RandomState::new(), logins: Mutex::new(HashMap::new()), selects: Mutex::new(HashMap::new()) }
    }
}

/// Why credentials were not accepted.
pub enum Refusal {
    /// Wrong user or password, or the role may not log in (401).
    Denied(String),
    /// The database could not be asked (503).
    Unavailable(String),
}

impl AuthCache {
    /// Checks `user`/`password` by logging in to the database, or from a recent success.
    pub async fn verify(&self, database_url: &str, ttl: Duration, user: &str, password: &str) -> Result<(), Refusal> {
        let key = (user.to_string(), self.hasher.hash_one((user, password)));
        let now = Instant::now();
        {
            let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
            if logins.get(&key).is_some_and(|at| now.duration_since(*at) < ttl) {
                return Ok(());
            }
        }
        let mut config = tokio_postgres::Config::from_str(database_url).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        config.user(user).password(password).application_name("pg_cep-bridge login check").connect_timeout(CHECK_TIMEOUT);
        let attempt = tokio::time::timeout(CHECK_TIMEOUT, config.connect(NoTls)).await;
        match attempt {
            Err(_) => return Err(Refusal::Unavailable(format!("login check timed out after {CHECK_TIMEOUT:?}"))),
            Ok(Err(e)) => {
                let denied = match e.as_db_error() {
                    // invalid_authorization_specification (28000, 28P01: wrong password, no such
                    // role, no LOGIN), insufficient_privilege (no CONNECT), invalid_catalog_name.
                    Some(db) => {
                        let code = db.code().code();
                        code.starts_with("28") || code == "42501" || code == "3D000"
                    }
                    // The server asked for a password we could not give (an empty one).
                    None => e.to_string().contains("password"),
                };
                let why = crate::db::describe(&e);
                return Err(if denied { Refusal::Denied(why) } else { Refusal::Unavailable(why) });
            }
            Ok(Ok((client, connection))) => {
                // Dropping the client makes the connection send Terminate and end.
                drop(client);
                tokio::spawn(connection);
            }
        }
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        if logins.len() >= SWEEP_AT {
            logins.retain(|_, at| now.duration_since(*at) < ttl);
        }
        logins.insert(key, now);
        Ok(())
    }
}

/// Whether `role` may SELECT the table `relid`, asked with the bridge's own connection
/// (`has_table_privilege(role, relid, 'SELECT')`, the test pg_cep's row-level security applies
/// to the current user) and remembered for `privilege_cache_ttl`. A table or role that no longer
/// exists is a no. `Err` when the database could not be asked.
pub async fn can_select(state: &AppState, role: &Arc<str>, relid: u32) -> Result<bool, String> {
    let ttl = state.config.privilege_cache_ttl;
    let now = Instant::now();
    let key = (role.clone(), relid);
    {
        let selects = state.auth.selects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((answer, at)) = selects.get(&key) {
            if now.duration_since(*at) < ttl {
                return Ok(*answer);
            }
        }
    }
    let client = state.pool.get().await?;
    let answer = match client.query_one("SELECT coalesce(has_table_privilege($1::name, $2::oid, 'SELECT'), false)", &[&&**role, &relid]).await {
        Ok(row) => row.get::<_, bool>(0),
        Err(e) => {
            let e = DbError::from(e);
            if !e.from_server {
                return Err(e.message);
            }
            // The role was dropped since it logged in (42704), or similar: no.
            false
        }
    };
    let mut selects = state.auth.selects.lock().unwrap_or_else(|p| p.into_inner());
    if selects.len() >= SWEEP_AT {
        selects.retain(|_, (_, at)| now.duration_since(*at) < ttl);
    }
    selects.insert(key, (answer, now));
    Ok(answer)
}

/// The user and password of `Authorization: Basic base64(user:password)`.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// Refuses a request that does not authenticate as the configured mode asks; passes the others
/// on with their [`Viewer`].
pub async fn require_auth(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let viewer = match state.config.auth_mode() {
        AuthMode::None => Viewer(None),
        AuthMode::Token => {
            if !crate::token_matches(&state.config, &request) {
                state.metrics.auth_failures.fetch_add(1, Relaxed);
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    Json(serde_json::json!({ "error": "missing or wrong token" })),
                )
                    .into_response();
            }
            Viewer(None)
        }
        AuthMode::Role => {
            let Some((user, password)) = basic_credentials(request.headers()) else {
                state.metrics.auth_failures.fetch_add(1, Relaxed);
                return basic_challenge("credentials required: HTTP Basic with a database role and its password");
            };
            match state.auth.verify(&state.config.database_url, state.config.auth_cache_ttl, &user, &password).await {
                Ok(()) => Viewer(Some(user.into())),
                Err(Refusal::Denied(why)) => {
                    state.metrics.auth_failures.fetch_add(1, Relaxed);
                    eprintln!("pg_cep-bridge: login as {user:?} refused: {why}");
                    return basic_challenge("wrong user or password, or the role may not log in");
                }
                Err(Refusal::Unavailable(why)) => {
                    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": format!("cannot check credentials: {why}") })))
                        .into_response();
                    r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    return r;
                }
            }
        }
    };
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

fn basic_challenge(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"pg_cep\", charset=\"UTF-8\"")],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_credentials() {
        let mut headers = HeaderMap::new();
        assert_eq!(basic_credentials(&headers), None);
        // "alice:p:w" — the password may hold colons.
        headers.insert(header::AUTHORIZATION, "Basic YWxpY2U6cDp3".parse().unwrap());
        assert_eq!(basic_credentials(&headers), Some(("alice".to_string(), "p:w".to_string())));
        headers.insert(header::AUTHORIZATION, "basic  YWxpY2U6cDp3 ".parse().unwrap());
        assert_eq!(basic_credentials(&headers).map(|c| c.0), Some("alice".to_string()));
        headers.insert(header::AUTHORIZATION, "Bearer YWxpY2U6cDp3".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
        // ":pw": no user.
        headers.insert(header::AUTHORIZATION, "Basic OnB3".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
    }
}
