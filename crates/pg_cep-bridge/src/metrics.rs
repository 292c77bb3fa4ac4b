//! Counters the bridge keeps, and their Prometheus text rendering for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::streams::{Hubs, StreamKind};

/// Process-wide counters. Per-stream values are indexed by [`StreamKind::index`].
#[derive(Default)]
pub struct Metrics {
    /// Rows sent to consumers (SSE events and WebSocket messages), per stream.
    pub events_out: [AtomicU64; 3],
    /// Rows read from the database cursors by the readers, per stream.
    pub events_read: [AtomicU64; 3],
    /// Consumers connected now, per stream.
    pub consumers: [AtomicI64; 3],
    /// Consumers disconnected because they fell out of the ring, per stream.
    pub consumers_lagged: [AtomicU64; 3],
    /// Rows written by ingest.
    pub rows_ingested: AtomicU64,
    /// Ingest batches committed.
    pub ingest_batches: AtomicU64,
    /// Ingest batches refused (bad input, database error, saturation).
    pub ingest_errors: AtomicU64,
    /// Requests refused for missing or wrong credentials (token or role).
    pub auth_failures: AtomicU64,
    /// Times the reader connection was re-established after a loss.
    pub db_reconnects: AtomicU64,
    /// Whether the reader connection is up.
    pub db_up: AtomicBool,
}

impl Metrics {
    /// The Prometheus text exposition of the counters and of the streams' positions.
    pub fn render(&self, hubs: &Hubs) -> String {
        let mut out = String::new();
        let per_stream = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(StreamKind) -> i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in StreamKind::ALL {
                let _ = writeln!(out, "{name}{{stream=\"{}\"}} {}", s.name(), value(s));
            }
        };
        per_stream(&mut out, "pg_cep_bridge_events_out_total", "counter", "Rows sent to consumers.", &|s| {
            self.events_out[s.index()].load(Relaxed) as i64
        });
        per_stream(&mut out, "pg_cep_bridge_events_read_total", "counter", "Rows read from the database cursor.", &|s| {
            self.events_read[s.index()].load(Relaxed) as i64
        });
        per_stream(&mut out, "pg_cep_bridge_consumers", "gauge", "Consumers connected.", &|s| self.consumers[s.index()].load(Relaxed));
        per_stream(&mut out, "pg_cep_bridge_consumers_lagged_total", "counter", "Consumers disconnected for falling behind.", &|s| {
            self.consumers_lagged[s.index()].load(Relaxed) as i64
        });
        per_stream(&mut out, "pg_cep_bridge_newest_id", "gauge", "Id of the newest row read from the cursor (0: none yet).", &|s| {
            hubs.get(s).newest_id()
        });
        per_stream(
            &mut out,
            "pg_cep_bridge_lag_events",
            "gauge",
            "Rows between the newest row read and the slowest live consumer's last delivered row.",
            &|s| hubs.get(s).max_lag() as i64,
        );
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        scalar(&mut out, "pg_cep_bridge_rows_ingested_total", "counter", "Rows written by ingest.", self.rows_ingested.load(Relaxed));
        scalar(&mut out, "pg_cep_bridge_ingest_batches_total", "counter", "Ingest batches committed.", self.ingest_batches.load(Relaxed));
        scalar(&mut out, "pg_cep_bridge_ingest_errors_total", "counter", "Ingest batches refused.", self.ingest_errors.load(Relaxed));
        scalar(
            &mut out,
            "pg_cep_bridge_auth_failures_total",
            "counter",
            "Requests refused for missing or wrong credentials.",
            self.auth_failures.load(Relaxed),
        );
        scalar(
            &mut out,
            "pg_cep_bridge_db_reconnects_total",
            "counter",
            "Reader reconnections after a lost connection.",
            self.db_reconnects.load(Relaxed),
        );
        scalar(&mut out, "pg_cep_bridge_db_up", "gauge", "1 when the reader connection is up.", self.db_up.load(Relaxed) as u64);
        out
    }
}
