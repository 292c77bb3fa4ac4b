//! The suite runs against the PostgreSQL major version `make` asked for (`PG=15` or `PG=18`),
//! with the library built for it: a wrong `pg_config` or a stale install cannot pass unnoticed.

use pg_cep_e2e::TestDb;

#[test]
fn the_cluster_runs_the_requested_version_with_pg_cep_loaded() {
    let expected: i32 = std::env::var("PG_CEP_TEST_PG_MAJOR")
        .expect("PG_CEP_TEST_PG_MAJOR is not set: run the end-to-end suite with `make e2e`")
        .parse()
        .expect("PG_CEP_TEST_PG_MAJOR is a number");
    let db = TestDb::new("server");
    let mut c = db.connect();
    let version: i32 = c.query_one("SELECT current_setting('server_version_num')::int", &[]).unwrap().get(0);
    assert_eq!(version / 10000, expected, "server_version_num {version}");
    let preload: String = c.query_one("SELECT current_setting('shared_preload_libraries')", &[]).unwrap().get(0);
    assert!(preload.split(',').any(|l| l.trim() == "pg_cep"), "{preload}");
    let installed: String = c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'pg_cep'", &[]).unwrap().get(0);
    assert_eq!(installed, "0.3.0");
}
