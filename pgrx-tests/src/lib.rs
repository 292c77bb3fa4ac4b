//! Harness for pg_cep's end-to-end tests: real connections to a real cluster, over the wire.
//!
//! `make e2e` starts a cluster with pg_cep installed and sets `PG_CEP_TEST_PORT`; each test gets a
//! database of its own, so tests never see each other's rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use postgres::{Client, NoTls};

pub fn port() -> u16 {
    std::env::var("PG_CEP_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PG_CEP_TEST_PORT is not set: run the end-to-end suite with `make e2e`")
}

pub fn connect_to(db: &str) -> Client {
    let conf = format!("host=127.0.0.1 port={} user=postgres dbname={db} connect_timeout=10", port());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(&conf, NoTls) {
            Ok(c) => return c,
            // A restarted server refuses connections for a moment.
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot connect to {conf}: {e}"),
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(label: &str) -> String {
    format!("e2e_{label}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A fresh database with pg_cep created in it.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(label: &str) -> TestDb {
        Self::create(unique(label), true)
    }

    /// A database with a fixed name, for what the cluster's configuration points at.
    pub fn named(name: &str) -> TestDb {
        Self::create(name.to_string(), true)
    }

    /// A fresh database where the test creates pg_cep itself (an older version, say).
    pub fn without_extension(label: &str) -> TestDb {
        Self::create(unique(label), false)
    }

    fn create(name: String, extension: bool) -> TestDb {
        let mut admin = connect_to("postgres");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
        if extension {
            connect_to(&name).batch_execute("CREATE EXTENSION pg_cep").unwrap();
        }
        TestDb { name }
    }

    pub fn connect(&self) -> Client {
        connect_to(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", port()), NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

/// Every notification of what has committed so far, and nothing left to come: waits until pg_cep's
/// sender has sent everything committed (`cep.notification_queue()`), then notifies itself on a
/// channel of its own and collects until that arrives. Postgres delivers notifications in commit
/// order, so none sent before is missed, and "none arrived" means none was due, not that it was
/// late. The barrier's own notification is left out.
pub fn drain_settled(listener: &mut Client) -> Vec<(String, String)> {
    drain_settled_with_senders(listener).into_iter().map(|(channel, payload, _)| (channel, payload)).collect()
}

/// The same, with the process id of the backend that sent each one.
pub fn drain_settled_with_senders(listener: &mut Client) -> Vec<(String, String, i32)> {
    use postgres::fallible_iterator::FallibleIterator;
    const BARRIER: &str = "pg_cep_e2e_barrier";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queued: i64 = listener.query_one("SELECT queued FROM cep.notification_queue()", &[]).expect("cep.notification_queue()").get(0);
        if queued == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pg_cep's sender still holds {queued} committed notifications after 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let token = format!("{}", COUNTER.fetch_add(1, Ordering::SeqCst));
    listener.batch_execute(&format!("LISTEN {BARRIER}; SELECT pg_notify('{BARRIER}', '{token}')")).unwrap();
    let mut got = Vec::new();
    let mut notes = listener.notifications();
    let mut it = notes.timeout_iter(Duration::from_secs(30));
    loop {
        match it.next() {
            Ok(Some(n)) if n.channel() == BARRIER => {
                if n.payload() == token {
                    return got;
                }
            }
            Ok(Some(n)) => got.push((n.channel().to_string(), n.payload().to_string(), n.process_id())),
            Ok(None) => panic!("the barrier notification never came back; got {} before", got.len()),
            Err(e) => panic!("the listening connection failed after {} notifications: {e}", got.len()),
        }
    }
}

/// Collects the notifications a LISTENing connection receives until `quiet` passes with none.
/// For notifications of work done in the background (not by a commit the test made), which
/// `drain_settled` cannot wait for.
pub fn drain_notifications(listener: &mut Client, quiet: Duration) -> Vec<(String, String)> {
    drain_notifications_with_senders(listener, quiet).into_iter().map(|(channel, payload, _)| (channel, payload)).collect()
}

/// The same, with the process id of the backend that sent each one.
pub fn drain_notifications_with_senders(listener: &mut Client, quiet: Duration) -> Vec<(String, String, i32)> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut got = Vec::new();
    {
        let mut notes = listener.notifications();
        let mut it = notes.timeout_iter(quiet);
        // `Ok(None)` is the quiet period passing; an error is a broken listener, which must not
        // pass for "no notification arrived".
        loop {
            match it.next() {
                Ok(Some(n)) => got.push((n.channel().to_string(), n.payload().to_string(), n.process_id())),
                Ok(None) => break,
                Err(e) => panic!("the listening connection failed after {} notifications: {e}", got.len()),
            }
        }
    }
    // A connection the server closed also ends with `Ok(None)`, as if it had been quiet.
    assert!(!listener.is_closed(), "the listening connection was closed after {} notifications", got.len());
    got
}

/// Restarts the test cluster (`scripts/cluster.sh restart`) and waits until it accepts connections.
pub fn restart_server() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cluster = std::env::var("PG_CEP_CLUSTER").unwrap_or_else(|_| "e2e".into());
    let status =
        std::process::Command::new("bash").arg(root.join("scripts/cluster.sh")).args(["restart", &cluster]).status().expect("run scripts/cluster.sh");
    assert!(status.success(), "restart failed");
    drop(connect_to("postgres"));
}
