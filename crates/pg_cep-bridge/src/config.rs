//! Command-line flags and environment variables.
//!
//! Parsed by hand: the bridge has a handful of options, and a hand parser keeps the dependency
//! tree (and the build on small machines) small.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Everything the bridge needs to run. Built by [`Config::from_args`] for the binary, or directly
/// by tests and embedders.
#[derive(Clone, Debug)]
pub struct Config {
    /// libpq-style connection string (`host=... port=... user=... dbname=...`) or a
    /// `postgres://` URL.
    pub database_url: String,
    /// Where the HTTP server listens. Localhost by default: the bridge serves data from the
    /// database and should only face a network on purpose.
    pub listen: SocketAddr,
    /// How requests are authenticated; see [`AuthMode`] and [`Config::auth_mode`].
    pub auth: AuthMode,
    /// The token of [`AuthMode::Token`]: every endpoint but `/healthz` asks for
    /// `Authorization: Bearer <token>` or `?token=<token>`. Setting it with `auth` left at
    /// [`AuthMode::None`] means token mode.
    pub token: Option<String>,
    /// Role mode: how long a successful password check is remembered (per user and password hash).
    pub auth_cache_ttl: Duration,
    /// Role mode: how long an answer of `has_table_privilege(role, table, 'SELECT')` is remembered.
    pub privilege_cache_ttl: Duration,
    /// Rows kept in memory per stream for consumers that resume; older resumes query the
    /// database themselves.
    pub ring_size: usize,
    /// Rows buffered between a consumer's feeder and its socket (and read from the ring at once).
    pub consumer_queue: usize,
    /// Ingest batches running at once; more wait up to `ingest_wait`, then get 503.
    pub max_concurrent_ingests: usize,
    /// How long an ingest waits for a free slot before it is refused.
    pub ingest_wait: Duration,
    /// Largest accepted ingest body (HTTP) or message (WebSocket), in bytes.
    pub max_ingest_bytes: usize,
    /// The fallback tick: cursors are re-read this often even when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// How often the set of NOTIFY channels is re-read from pg_cep's catalog.
    pub channel_refresh: Duration,
}

impl Config {
    /// A configuration with the defaults and the given database.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            auth: AuthMode::None,
            token: None,
            auth_cache_ttl: Duration::from_secs(60),
            privilege_cache_ttl: Duration::from_secs(10),
            ring_size: 10_000,
            consumer_queue: 256,
            max_concurrent_ingests: 4,
            ingest_wait: Duration::from_secs(5),
            max_ingest_bytes: 16 * 1024 * 1024,
            poll_interval: Duration::from_secs(1),
            channel_refresh: Duration::from_secs(5),
        }
    }

    /// The mode in force: `auth`, except that a token with `auth` at `None` means `Token`.
    pub fn auth_mode(&self) -> AuthMode {
        match (self.auth, &self.token) {
            (AuthMode::None, Some(_)) => AuthMode::Token,
            (mode, _) => mode,
        }
    }

    /// Reads flags (`--name value` or `--name=value`) with environment variables as fallbacks.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut database_url = env("PG_CEP_BRIDGE_DATABASE_URL");
        let mut listen = env("PG_CEP_BRIDGE_LISTEN");
        let mut auth = env("PG_CEP_BRIDGE_AUTH");
        let mut token = env("PG_CEP_BRIDGE_TOKEN");
        let mut ring_size = env("PG_CEP_BRIDGE_RING_SIZE");
        let mut max_ingests = env("PG_CEP_BRIDGE_MAX_INGESTS");
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(USAGE.to_string());
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "--database-url" => &mut database_url,
                "--listen" => &mut listen,
                "--auth" => &mut auth,
                "--token" => &mut token,
                "--ring-size" => &mut ring_size,
                "--max-ingests" => &mut max_ingests,
                _ => return Err(format!("unknown argument {arg}\n\n{USAGE}")),
            };
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            *slot = Some(value);
        }
        let mut config = Config::new(database_url.ok_or_else(|| format!("--database-url (or PG_CEP_BRIDGE_DATABASE_URL) is required\n\n{USAGE}"))?);
        if let Some(l) = listen {
            config.listen = SocketAddr::from_str(&l).map_err(|e| format!("--listen {l}: {e}"))?;
        }
        config.token = token.filter(|t| !t.is_empty());
        config.auth = match (auth.as_deref(), &config.token) {
            (None, None) | (Some("none"), None) => AuthMode::None,
            (None, Some(_)) | (Some("token"), Some(_)) => AuthMode::Token,
            (Some("token"), None) => return Err("--auth token needs --token (or PG_CEP_BRIDGE_TOKEN)".to_string()),
            (Some("role"), None) => AuthMode::Role,
            (Some(m @ ("none" | "role")), Some(_)) => return Err(format!("--auth {m} and --token exclude each other")),
            (Some(other), _) => return Err(format!("--auth {other}: expected none, token or role")),
        };
        if let Some(r) = ring_size {
            config.ring_size = r.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("--ring-size {r}: expected a positive integer"))?;
        }
        if let Some(m) = max_ingests {
            config.max_concurrent_ingests =
                m.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("--max-ingests {m}: expected a positive integer"))?;
        }
        tokio_postgres::Config::from_str(&config.database_url).map_err(|e| format!("--database-url: {e}"))?;
        Ok(config)
    }
}

/// How the bridge authenticates requests (all endpoints but `/healthz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can reach the listen address.
    None,
    /// One shared bearer token ([`Config::token`]).
    Token,
    /// HTTP Basic credentials of a database role, checked by logging in to the database as that
    /// role; streams, summaries and ingest then act with that role's table privileges.
    Role,
}

/// Printed by `--help` and with argument errors.
pub const USAGE: &str =
    "usage: pg_cep-bridge --database-url URL [--listen ADDR] [--auth none|token|role] [--token TOKEN] [--ring-size N] [--max-ingests N]

  --database-url  libpq string or postgres:// URL      env PG_CEP_BRIDGE_DATABASE_URL
  --listen        address to serve HTTP on             env PG_CEP_BRIDGE_LISTEN (default 127.0.0.1:8787)
  --auth          none, token or role                  env PG_CEP_BRIDGE_AUTH (default none, token with --token)
  --token         bearer token for all but /healthz    env PG_CEP_BRIDGE_TOKEN
  --ring-size     rows kept in memory per stream       env PG_CEP_BRIDGE_RING_SIZE (default 10000)
  --max-ingests   ingest batches running at once       env PG_CEP_BRIDGE_MAX_INGESTS (default 4)";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::from_args(args(&["--database-url", "host=x dbname=y", "--listen=0.0.0.0:9000", "--token", "t"])).unwrap();
        assert_eq!(c.database_url, "host=x dbname=y");
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(c.token.as_deref(), Some("t"));
        assert!(Config::from_args(args(&["--database-url", "host=x", "--bogus", "1"])).is_err());
        assert!(Config::from_args(args(&["--database-url", "host=x", "--listen", "nope"])).is_err());
    }

    #[test]
    fn auth_modes() {
        let mode = |a: &[&str]| Config::from_args(args(&[&["--database-url", "host=x"], a].concat())).map(|c| c.auth_mode());
        assert_eq!(mode(&[]), Ok(AuthMode::None));
        assert_eq!(mode(&["--token", "t"]), Ok(AuthMode::Token));
        assert_eq!(mode(&["--auth", "token", "--token", "t"]), Ok(AuthMode::Token));
        assert_eq!(mode(&["--auth=role"]), Ok(AuthMode::Role));
        assert_eq!(mode(&["--auth", "none"]), Ok(AuthMode::None));
        assert!(mode(&["--auth", "token"]).is_err());
        assert!(mode(&["--auth", "role", "--token", "t"]).is_err());
        assert!(mode(&["--auth", "bogus"]).is_err());
    }
}
