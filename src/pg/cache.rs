//! Per-backend caches of what pg_cep compiles from its configuration (rules here; each feature's
//! per-table settings in its own module, through [`PerTable`]), dropped when a configuration table
//! changes, or when a watched table's definition does (a dropped column, say).
//!
//! A statement trigger on `cep.risk_rules` and `cep.watches` sends a relcache invalidation for its
//! table; DDL on a watched table sends one by itself. Postgres delivers it to this backend at once and to the others at commit, so a backend
//! never scores with rules that a committed (or its own) change has replaced, and a rolled-back
//! change is forgotten. The callback only sets a flag: it can run in the middle of our own code.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::rules::{parse_condition, Rule};
use crate::error::{CepError, CepResult};
use crate::pg::privileges::as_extension_owner;
use pgrx::prelude::*;

static STALE: AtomicBool = AtomicBool::new(true);

#[derive(Default)]
struct State {
    rules: Option<Rc<Vec<Rule>>>,
    only_watch: Option<pg_sys::Oid>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    /// Bumped each time the caches are dropped: a [`PerTable`] built before is emptied on its next use.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// What one feature compiled for each table (a watch, a capture, the patterns), kept per backend
/// in that feature's module, and emptied with the rest of the cache. Loaded as the extension's
/// owner, as the configuration tables are pg_cep's own.
pub struct PerTable<T> {
    entries: RefCell<HashMap<u32, T>>,
    generation: Cell<u64>,
}

impl<T> Default for PerTable<T> {
    fn default() -> Self {
        PerTable { entries: RefCell::new(HashMap::new()), generation: Cell::new(0) }
    }
}

impl<T: Clone> PerTable<T> {
    /// The entry of `relid`, loaded by `load` when missing or when the cache was dropped since.
    pub fn get_or_load(&self, relid: pg_sys::Oid, load: impl FnOnce() -> CepResult<T>) -> CepResult<T> {
        refresh_if_stale();
        let generation = GENERATION.with(Cell::get);
        if self.generation.replace(generation) != generation {
            self.entries.borrow_mut().clear();
        }
        if let Some(entry) = self.entries.borrow().get(&relid.to_u32()) {
            return Ok(entry.clone());
        }
        let entry = as_extension_owner(|| {
            remember_our_tables()?;
            load()
        })?;
        self.entries.borrow_mut().insert(relid.to_u32(), entry.clone());
        Ok(entry)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Any relcache flush may concern our tables (InvalidOid means "all"); rebuilding is cheap.
    // Filtering by OID would need a catalog lookup, which is not allowed here.
    if relid == pg_sys::InvalidOid || is_ours(relid) {
        STALE.store(true, Ordering::Relaxed);
    }
    // A watched table's definition changed (a partition dropped or detached, say): what was kept
    // of its rows may hold rows it no longer has.
    if relid != pg_sys::InvalidOid && is_watched(relid) {
        if let Some(changed) = WATCHED_TABLE_CHANGED.get() {
            changed(relid);
        }
    }
}

/// Who hears that a watched table's definition changed (the window cache), registered at load:
/// the cache calls it without knowing it.
static WATCHED_TABLE_CHANGED: std::sync::OnceLock<fn(pg_sys::Oid)> = std::sync::OnceLock::new();

/// Registers the function the invalidation callback calls for a watched table whose definition
/// changed. Called once, from `_PG_init`.
pub fn on_watched_table_change(changed: fn(pg_sys::Oid)) {
    let _ = WATCHED_TABLE_CHANGED.set(changed);
}

thread_local! {
    static OUR_TABLES: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

fn is_watched(relid: pg_sys::Oid) -> bool {
    WATCHED.with(|t| t.try_borrow().map(|t| t.contains(&relid)).unwrap_or(false))
}

thread_local! {
    static WATCHED: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

fn is_ours(relid: pg_sys::Oid) -> bool {
    OUR_TABLES.with(|t| t.try_borrow().map(|t| t.is_empty() || t.contains(&relid)).unwrap_or(true))
}

pub fn register_invalidation_callback() {
    // SAFETY: called once from _PG_init; the callback has static lifetime.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
}

/// Drops every cached rule and plan if a change was signalled since they were built.
fn refresh_if_stale() {
    if STALE.swap(false, Ordering::Relaxed) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.rules = None;
            s.only_watch = None;
        });
        GENERATION.with(|g| g.set(g.get() + 1));
    }
}

/// The active rules, compiled, in `rule_id` order.
pub fn active_rules() -> CepResult<Rc<Vec<Rule>>> {
    refresh_if_stale();
    if let Some(rules) = STATE.with(|s| s.borrow().rules.clone()) {
        return Ok(rules);
    }
    let rules = Rc::new(as_extension_owner(load_rules)?);
    STATE.with(|s| s.borrow_mut().rules = Some(rules.clone()));
    Ok(rules)
}

fn load_rules() -> CepResult<Vec<Rule>> {
    remember_our_tables()?;
    let scope = if schema_0_3() { "tables::int8[], except_tables::int8[], mode = 'shadow'" } else { "NULL::int8[], NULL::int8[], false" };
    Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT rule_id, version, risk_score, rule_type::text, rule_condition, {scope} \
             FROM cep.risk_rules WHERE is_active ORDER BY rule_id"
            ),
            None,
            &[],
        )?;
        let mut rules = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i32 = row.get(1)?.unwrap_or_default();
            let version: i32 = row.get(2)?.unwrap_or(1);
            let score: f64 = row.get(3)?.unwrap_or_default();
            let rule_type: String = row.get(4)?.unwrap_or_default();
            let condition: pgrx::JsonB = row.get(5)?.unwrap_or(pgrx::JsonB(serde_json::Value::Null));
            // Rules are checked when written; one that fails here was stored by an older pg_cep.
            match parse_condition(&rule_type, &condition.0) {
                Ok(condition) => {
                    let oids = |v: Option<Vec<Option<i64>>>| v.map(|v| v.into_iter().flatten().map(|o| o as u32).collect::<Vec<u32>>());
                    let tables = oids(row.get(6)?);
                    let except_tables = oids(row.get(7)?).unwrap_or_default();
                    let shadow = row.get::<bool>(8)?.unwrap_or(false);
                    rules.push(Rule { id, version, score, condition, tables, except_tables, shadow })
                }
                Err(e) => pgrx::warning!("pg_cep: rule {id} is skipped: {e}"),
            }
        }
        Ok(rules)
    })
}

thread_local! {
    static SCHEMA_0_2: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    static SCHEMA_0_3: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the installed SQL objects are 0.3.0's (alert lifecycle and cooldowns). The monitor
/// works on older objects without them until `ALTER EXTENSION pg_cep UPDATE`.
pub fn schema_0_3() -> bool {
    SCHEMA_0_3.with(|s| s.get())
}

/// Whether the installed SQL objects are 0.2.0's. Between installing a new pg_cep library and
/// `ALTER EXTENSION pg_cep UPDATE`, the monitor keeps working on the 0.1.0 objects, without
/// what 0.2.0 added (rollups, patterns, captures).
pub fn schema_0_2() -> bool {
    SCHEMA_0_2.with(|s| s.get())
}

fn remember_our_tables() -> CepResult<()> {
    let oids: Vec<(pg_sys::Oid, bool)> = Spi::connect(|client| -> CepResult<Vec<(pg_sys::Oid, bool)>> {
        let v2 = client.select("SELECT to_regclass('cep.patterns') IS NOT NULL", None, &[])?.first().get_one::<bool>()?.unwrap_or(false);
        SCHEMA_0_2.with(|s| s.set(v2));
        let v3 = client
            .select(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'cep.watches'::regclass AND attname = 'cooldown' AND NOT attisdropped)",
                None,
                &[],
            )?
            .first()
            .get_one::<bool>()?
            .unwrap_or(false);
        SCHEMA_0_3.with(|s| s.set(v3));
        let sql = if v2 {
            "SELECT c.oid, false FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'cep' AND c.relname IN ('risk_rules', 'watches', 'patterns', 'captures') \
             UNION ALL SELECT relid, true FROM cep.watches \
             UNION ALL SELECT source::oid, false FROM cep.patterns \
             UNION ALL SELECT relid::oid, false FROM cep.captures"
        } else {
            "SELECT c.oid, false FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'cep' AND c.relname IN ('risk_rules', 'watches') \
             UNION ALL SELECT relid, true FROM cep.watches"
        };
        let rows = client.select(sql, None, &[])?;
        let mut v = Vec::new();
        for row in rows {
            if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                v.push((oid, row.get::<bool>(2)?.unwrap_or(false)));
            }
        }
        Ok(v)
    })?;
    WATCHED.with(|t| *t.borrow_mut() = oids.iter().filter(|(_, w)| *w).map(|(o, _)| *o).collect());
    OUR_TABLES.with(|t| *t.borrow_mut() = oids.into_iter().map(|(o, _)| o).collect());
    Ok(())
}

/// The one watched table, for calls that name none.
pub fn only_watch() -> CepResult<pg_sys::Oid> {
    refresh_if_stale();
    if let Some(oid) = STATE.with(|s| s.borrow().only_watch) {
        return Ok(oid);
    }
    let oid = as_extension_owner(find_only_watch)?;
    STATE.with(|s| s.borrow_mut().only_watch = Some(oid));
    Ok(oid)
}

fn find_only_watch() -> CepResult<pg_sys::Oid> {
    remember_our_tables()?;
    let rows: Vec<(pg_sys::Oid, String)> = Spi::connect(|client| -> CepResult<_> {
        let rows = client.select("SELECT relid, relid::regclass::text FROM cep.watches ORDER BY 1 LIMIT 3", None, &[])?;
        let mut v = Vec::new();
        for row in rows {
            v.push((row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(v)
    })?;
    match rows.as_slice() {
        [] => Err(CepError::NotWatched("no table is watched: register one first, for example SELECT cep.watch('transactions')".into())),
        [(oid, _)] => Ok(*oid),
        many => Err(CepError::Ambiguous(format!(
            "more than one table is watched ({}{}): name the table, as in cep.evaluate_risk_rules('{}', ...)",
            many.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", "),
            if many.len() > 2 { ", ..." } else { "" },
            many[0].1
        ))),
    }
}
