//! Sequence patterns in Postgres: compiling a definition against its source table, reading
//! events from trigger rows or from SQL, and keeping each key's partial matches in
//! `cep.pattern_state`, so they follow transactions and survive restarts.
//!
//! Keys are serialised with a transaction-scoped advisory lock on (pattern, hash of key): two
//! sessions inserting events of one key advance its state one after the other, never from the
//! same old state (under READ COMMITTED, where each statement sees what committed before it).
//! A statement takes its keys' locks in key order. With `shared_preload_libraries`, committed
//! states are also copied in shared memory (`pg::state_cache`), so a key's row is written on
//! every event but read only when its copy is missing.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{Map, Value as Json};

use crate::engine::pattern::{self, AfterMatch, Clauses, Contiguity, Emit, Event, KeyState, Match, Pattern, PatternOptions};
use crate::error::{CepError, CepResult};
use crate::pg::columns::{TableColumns, TIME_TYPES};
use crate::pg::time::timestamptz;
use crate::pg::tuple::Col;
use crate::pg::{spi, state_cache};
use pgrx::pg_sys::BuiltinOid::{BOOLARRAYOID, INT4OID, JSONBARRAYOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID};
use pgrx::PgOid;

pub const ID_TYPES: &[&str] = &["smallint", "integer", "bigint"];

/// What `cep.define_pattern` and `cep.match_recognize` are given.
pub struct Definition<'a> {
    pub partition_by: &'a str,
    pub order_by: &'a str,
    pub id_column: &'a str,
    pub pattern: &'a str,
    pub define: &'a Json,
    pub within: Option<i64>,
    pub contiguity: &'a str,
    pub after_match: &'a str,
    pub max_partials: i32,
    /// `eager` or `final`; `None` picks `final` for a pattern the standard defines, else `eager`.
    pub emit: Option<&'a str>,
    /// MEASURES and SUBSET (`cep.match_recognize`).
    pub clauses: &'a Clauses,
}

/// The columns a compiled pattern reads from its source rows.
pub struct Columns {
    pub key: Col,
    pub time: Col,
    pub id: Col,
    pub values: Vec<Col>,
}

/// Compiles a definition and resolves its columns on `table`, refusing anything that would
/// fail later: unknown columns, wrong types, bad syntax or predicates, bad options.
pub fn compile(def: &Definition<'_>, table: &TableColumns) -> CepResult<(Pattern, Columns)> {
    let contiguity = Contiguity::from_str(def.contiguity)?;
    let after_match = AfterMatch::from_str(def.after_match)?;
    if def.max_partials < 1 {
        return Err(CepError::InvalidArgument(format!("max_partials: {} is not a positive number", def.max_partials)));
    }
    if def.within.is_some_and(|w| w <= 0) {
        return Err(CepError::InvalidArgument("within: must be a positive interval".into()));
    }
    let emit = def.emit.map(Emit::from_str).transpose()?;
    let options =
        PatternOptions { contiguity, after_match, within: def.within, max_partials: def.max_partials as usize, emit: emit.unwrap_or_default() };
    // Without `emit`, the standard's matching where the pattern allows it, else eager.
    let compile = |options| pattern::compile_clauses(def.pattern, def.define, def.clauses, options);
    let compiled = match emit {
        Some(_) => compile(options)?,
        None => compile(PatternOptions { emit: Emit::Final, ..options.clone() }).or_else(|_| compile(options))?,
    };
    table.require("partition_by", def.partition_by)?;
    table.check("order_by", def.order_by, TIME_TYPES)?;
    table.check("id_column", def.id_column, ID_TYPES)?;
    let col = |role: &str, name: &str| -> CepResult<Col> {
        table.require(role, name)?;
        let (attnum, typid) =
            table.position(name).ok_or_else(|| CepError::UndefinedColumn(format!("{role} {name:?} is not a column of \"{}\"", table.name())))?;
        Col::new(attnum, typid).ok_or_else(|| CepError::UndefinedColumn(format!("{role} {name:?} is a system column")))
    };
    let mut values = Vec::new();
    for name in compiled.columns() {
        values.push(col("define or measures: column", name)?);
    }
    let columns =
        Columns { key: col("partition_by", def.partition_by)?, time: col("order_by", def.order_by)?, id: col("id_column", def.id_column)?, values };
    Ok((compiled, columns))
}

/// Refuses what a live pattern cannot run with the standard's meaning (`$`, empty matches,
/// MEASURES that read rows after the match, MEASURES of eager matches): 0A000, nothing stored.
pub fn require_live(compiled: &Pattern) -> CepResult<()> {
    if let Some(what) = compiled.history_only() {
        return Err(CepError::Unsupported(format!("a live pattern cannot have {what}; cep.match_recognize runs it over the rows a table holds")));
    }
    if compiled.measure_names().next().is_some() && compiled.options().emit != Emit::Final {
        return Err(CepError::Unsupported(
            "MEASURES of a live pattern need emit => 'final' (an eager match is emitted before its rows are all known)".into(),
        ));
    }
    Ok(())
}

/// A pattern attached to a table, ready for its trigger.
pub struct LivePattern {
    pub id: i32,
    /// The table it matches on.
    pub source: pg_sys::Oid,
    /// The OID of `cep.patterns`: with the id, names this definition across a DROP and CREATE
    /// EXTENSION that restarts the ids (the shared state copies outlive them). Not the row's
    /// xmin, which reads as the same frozen id for every old row.
    pub generation: u32,
    pub name: String,
    pub channel: String,
    pub pattern: Pattern,
    pub columns: Columns,
}

impl LivePattern {
    /// What names this pattern's shared state copies.
    fn copies(&self) -> state_cache::PatternId {
        state_cache::PatternId { id: self.id, generation: self.generation }
    }
}

/// The sequence patterns defined on `relid`, compiled.
pub fn cached(relid: pg_sys::Oid) -> CepResult<std::rc::Rc<Vec<LivePattern>>> {
    thread_local! {
        static PATTERNS: crate::pg::cache::PerTable<std::rc::Rc<Vec<LivePattern>>> = Default::default();
    }
    PATTERNS.with(|p| p.get_or_load(relid, || Ok(std::rc::Rc::new(load(relid)?))))
}

/// The patterns defined on `relid`. One that no longer compiles (a column it reads was dropped)
/// is skipped with a WARNING: an INSERT never fails because of it.
fn load(relid: pg_sys::Oid) -> CepResult<Vec<LivePattern>> {
    let name = crate::pg::table_arg::relation_name(relid)?;
    let table = TableColumns::read(relid, &name)?;
    // Before ALTER EXTENSION pg_cep UPDATE to 0.3.0 there is no `emit` column: 0.2.0 emitted eagerly.
    let emit = if crate::pg::cache::schema_0_3() { "emit, measures, subset" } else { "'eager', NULL::jsonb, NULL::jsonb" };
    let stored: Vec<Stored> = Spi::connect(|client| {
        let mut v = Vec::new();
        for row in client.select(
            &format!(
                "SELECT pattern_id, name, channel, partition_by::text, order_by::text, id_column::text, pattern, define,
                        (extract(epoch FROM within) * 1e6)::int8, contiguity, after_match, max_partials, tableoid::int8, {emit}
                     FROM cep.patterns WHERE source = $1 ORDER BY pattern_id"
            ),
            None,
            &[relid.into()],
        )? {
            let clause = |n: usize| -> CepResult<Json> { Ok(row.get::<pgrx::JsonB>(n)?.map(|j| j.0).unwrap_or_default()) };
            v.push(Stored {
                id: row.get(1)?.unwrap_or_default(),
                name: row.get(2)?.unwrap_or_default(),
                channel: row.get(3)?.unwrap_or_default(),
                partition_by: row.get(4)?.unwrap_or_default(),
                order_by: row.get(5)?.unwrap_or_default(),
                id_column: row.get(6)?.unwrap_or_default(),
                pattern: row.get(7)?.unwrap_or_default(),
                define: clause(8)?,
                within: row.get(9)?,
                contiguity: row.get(10)?.unwrap_or_default(),
                after_match: row.get(11)?.unwrap_or_default(),
                max_partials: row.get(12)?.unwrap_or(1000),
                patterns_table: row.get(13)?.unwrap_or(0),
                emit: row.get(14)?.unwrap_or_else(|| "eager".to_string()),
                clauses: Clauses { measures: clause(15)?, subset: clause(16)? },
            });
        }
        Ok::<_, CepError>(v)
    })?;
    let mut out = Vec::new();
    for p in stored {
        let def = Definition {
            partition_by: &p.partition_by,
            order_by: &p.order_by,
            id_column: &p.id_column,
            pattern: &p.pattern,
            define: &p.define,
            within: p.within,
            contiguity: &p.contiguity,
            after_match: &p.after_match,
            max_partials: p.max_partials,
            emit: Some(&p.emit),
            clauses: &p.clauses,
        };
        match compile(&def, &table) {
            Ok((pattern, columns)) => out.push(LivePattern {
                id: p.id,
                source: relid,
                generation: p.patterns_table as u32,
                name: p.name,
                channel: p.channel,
                pattern,
                columns,
            }),
            Err(e) => pgrx::warning!("pg_cep: pattern {:?} is skipped: {e}", p.name),
        }
    }
    Ok(out)
}

/// A row of `cep.patterns`, as `load` reads it.
struct Stored {
    id: i32,
    name: String,
    channel: String,
    partition_by: String,
    order_by: String,
    id_column: String,
    pattern: String,
    define: Json,
    within: Option<i64>,
    contiguity: String,
    after_match: String,
    max_partials: i32,
    /// `tableoid` of `cep.patterns` (see `LivePattern::generation`).
    patterns_table: i64,
    emit: String,
    clauses: Clauses,
}

/// An event of one key, read from a row; `None` when its key, time or id is null. The key is
/// bounded as `cep.pattern_state`'s index needs (`pg::keys`), and so named in matches.
pub fn event_of(t: &crate::pg::tuple::Tuple, cols: &Columns) -> Option<(String, Event)> {
    let key = crate::pg::keys::into_stored(t.text(cols.key)?);
    let ts = t.timestamptz(cols.time)?;
    let id = t.int(cols.id)?;
    Some((key, Event { id, ts, values: cols.values.iter().map(|c| t.value(*c)).collect() }))
}

/// Groups events by key, each key's events in (time, id) order, as the engine wants them.
pub fn by_key(events: Vec<(String, Event)>) -> BTreeMap<String, Vec<Event>> {
    let mut keys: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (key, event) in events {
        keys.entry(key).or_default().push(event);
    }
    for events in keys.values_mut() {
        events.sort_by_key(|e| (e.ts, e.id));
    }
    keys
}

/// `{"symbol": [row ids]}`, symbols in the order they first matched.
pub fn rows_json(symbols: &[String], m: &Match) -> Json {
    let mut rows = Map::new();
    for (symbol, id) in &m.rows {
        let name = symbols.get(*symbol as usize).cloned().unwrap_or_default();
        match rows.entry(name).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(ids) => ids.push(Json::from(*id)),
            _ => unreachable!("only arrays are inserted"),
        }
    }
    Json::Object(rows)
}

/// Takes the (pattern, key) lock until the transaction ends; `false` when `wait` is off and
/// another session holds it. An advisory lock of its own kind (`objsubid` 3 in `pg_locks`), so
/// it never collides with `pg_advisory_lock` calls of the application.
fn lock_key(pattern_id: i32, key: &str, wait: bool) -> bool {
    // FNV-1a: the same in every backend; a collision only serialises two keys.
    let hash = key.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    let tag = pg_sys::LOCKTAG {
        // SAFETY: set once the backend is connected to its database.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: pattern_id as u32,
        locktag_field3: hash,
        locktag_field4: 3,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    // SAFETY: a transaction-scoped lock on a tag we built; released by Postgres at transaction end.
    unsafe { pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, false, !wait) != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL }
}

const LOAD_STATES: &str = "SELECT key, state FROM cep.pattern_state WHERE pattern_id = $1 AND key = ANY ($2)";
/// One key: with `= ANY ($2)` the plan cache keeps choosing a custom plan, so every single-row
/// INSERT planned the statement again (a tenth of its time).
const LOAD_STATE: &str = "SELECT key, state FROM cep.pattern_state WHERE pattern_id = $1 AND key = $2";
/// One key (a single-row INSERT): a plain insert or update, always one index probe (a generic
/// plan joining an array to the states could choose to scan them all). An upsert even for a key
/// that had no row: under REPEATABLE READ another session may have added it meanwhile, and that
/// must not fail the user's INSERT.
const INSERT_STATE: &str = "INSERT INTO cep.pattern_state (pattern_id, key, state, deadline) VALUES ($1, $2, $3, $4)
     ON CONFLICT (pattern_id, key) DO UPDATE SET state = excluded.state, deadline = excluded.deadline";
const UPDATE_STATE: &str = "UPDATE cep.pattern_state SET state = $3, deadline = $4 WHERE pattern_id = $1 AND key = $2";
/// Many keys at once (a multi-row statement): one upsert, whose conflict arbiter is the index.
const UPSERT_STATES: &str = "INSERT INTO cep.pattern_state AS p (pattern_id, key, state, deadline)
     SELECT $1, k, s, d FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(k, s, d)
     ON CONFLICT (pattern_id, key) DO UPDATE SET state = excluded.state, deadline = excluded.deadline";
const DELETE_STATES: &str = "DELETE FROM cep.pattern_state WHERE pattern_id = $1 AND key = ANY ($2)";
/// The notifications of the matches just inserted (`m`), each with a payload that fits NOTIFY's
/// 8000 bytes: the matched row ids when they fit, else `"truncated": true` (the consumer reads them
/// from `cep.pattern_matches` by `match_id`). A match emitted while its key had dropped partial
/// matches (`max_partials`) says so.
macro_rules! match_notifications {
    () => {
        "
     p AS (
         SELECT (jsonb_build_object('type', 'pattern_match', 'match_id', match_id, 'pattern', pattern_name, 'key', key,
                                    'start', match_start, 'end', match_end, 'completed_by', completed_by, 'rows', rows)
                 || CASE WHEN dropped_partials THEN '{\"dropped_partials\": true}'::jsonb ELSE '{}'::jsonb END
                 || CASE WHEN measures IS NOT NULL THEN jsonb_build_object('measures', measures) ELSE '{}'::jsonb END)::text AS full_payload,
                json_build_object('type', 'pattern_match', 'match_id', match_id, 'pattern', left(pattern_name, 500),
                                  'key', left(key, 500), 'start', match_start, 'end', match_end,
                                  'completed_by', completed_by, 'truncated', true)::text AS short_payload
         FROM m)
     SELECT CASE WHEN octet_length(full_payload) < 8000 THEN full_payload ELSE short_payload END
     FROM p"
    };
}
/// Every match of a trigger call, in one statement.
const RECORD_MATCHES: &str = concat!(
    "WITH m AS (
         INSERT INTO cep.pattern_matches (pattern_id, pattern_name, key, rows, match_start, match_end, completed_by, dropped_partials, measures)
         SELECT $1, $2, u.k, u.r, u.s, u.e, $7, u.d, u.v
         FROM unnest($3::text[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[], $9::bool[], $10::jsonb[]) AS u(k, r, s, e, d, v)
         RETURNING *),",
    match_notifications!()
);
/// Before `ALTER EXTENSION pg_cep UPDATE` to 0.3.0, `cep.pattern_matches` has no `dropped_partials`.
const RECORD_MATCHES_0_2: &str = concat!(
    "WITH m AS (
         INSERT INTO cep.pattern_matches (pattern_id, pattern_name, key, rows, match_start, match_end, completed_by)
         SELECT $1, $2, u.k, u.r, u.s, u.e, $7
         FROM unnest($3::text[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[], $9::bool[], $10::jsonb[]) AS u(k, r, s, e, d, v)
         RETURNING *, false AS dropped_partials, NULL::jsonb AS measures),",
    match_notifications!()
);

fn oids<const N: usize>(types: [pg_sys::BuiltinOid; N]) -> [PgOid; N] {
    types.map(PgOid::from)
}

/// Each key's stored state, with its stored text so that an unchanged state is not rewritten.
fn load_states(client: &SpiClient<'_>, pattern_id: i32, keys: &[&str]) -> CepResult<HashMap<String, (KeyState, String)>> {
    let rows = if let [key] = keys {
        let plan = spi::kept(LOAD_STATE, &oids([INT4OID, TEXTOID]))?;
        client.select(&*plan, None, &[pattern_id.into(), (*key).into()])?
    } else {
        let plan = spi::kept(LOAD_STATES, &oids([INT4OID, TEXTARRAYOID]))?;
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        client.select(&*plan, None, &[pattern_id.into(), keys.into()])?
    };
    let mut states = HashMap::new();
    for row in rows {
        let key: String = row.get(1)?.unwrap_or_default();
        let text: String = row.get(2)?.unwrap_or_default();
        // A state written by an incompatible pg_cep is dropped rather than failing the INSERT.
        match serde_json::from_str::<KeyState>(&text) {
            Ok(state) => {
                states.insert(key, (state, text));
            }
            Err(e) => pgrx::warning!("pg_cep: partial matches of key {key:?} are dropped: {e}"),
        }
    }
    Ok(states)
}

/// Writes back the keys' states: new ones inserted, changed ones updated, emptied ones deleted.
/// `stored` is the text a key's row holds now, if it has one (this session holds the key's lock,
/// so that cannot change under us).
fn save_states(client: &mut SpiClient<'_>, live: &LivePattern, states: &[(&str, &KeyState, Option<&str>)]) -> CepResult<()> {
    let mut gone = Vec::new();
    let mut writes: Vec<(&str, String, Option<pgrx::datum::TimestampWithTimeZone>, bool)> = Vec::new();
    for (key, state, stored) in states {
        if state.is_empty() {
            state_cache::touch(live.copies(), key, None, stored.is_some());
            if stored.is_some() {
                gone.push(key.to_string());
            }
            continue;
        }
        let text = serde_json::to_string(state).unwrap_or_default();
        let unchanged = stored.is_some_and(|old| old == text);
        state_cache::touch(live.copies(), key, Some(&text), !unchanged);
        if unchanged {
            continue;
        }
        writes.push((key, text, live.pattern.next_deadline(state).map(timestamptz), stored.is_some()));
    }
    // One key (a single-row INSERT): written in place when it can be.
    let in_place = match (writes.as_slice(), gone.as_slice()) {
        ([(key, text, deadline, _)], []) => state_rows::write(live.id, key, Some((text, *deadline))),
        ([], [key]) => state_rows::write(live.id, key, None),
        _ => false,
    };
    if in_place {
        return Ok(());
    }
    if let [(key, text, deadline, existed)] = writes.as_slice() {
        let plan = spi::kept(if *existed { UPDATE_STATE } else { INSERT_STATE }, &oids([INT4OID, TEXTOID, TEXTOID, TIMESTAMPTZOID]))?;
        client.update(&*plan, None, &[live.id.into(), (*key).into(), text.as_str().into(), (*deadline).into()])?;
    } else if !writes.is_empty() {
        let plan = spi::kept(UPSERT_STATES, &oids([INT4OID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID]))?;
        let keys: Vec<String> = writes.iter().map(|w| w.0.to_string()).collect();
        let texts: Vec<String> = writes.iter().map(|w| w.1.clone()).collect();
        let deadlines: Vec<Option<pgrx::datum::TimestampWithTimeZone>> = writes.iter().map(|w| w.2).collect();
        client.update(&*plan, None, &[live.id.into(), keys.into(), texts.into(), deadlines.into()])?;
    }
    if !gone.is_empty() {
        let plan = spi::kept(DELETE_STATES, &oids([INT4OID, TEXTARRAYOID]))?;
        client.update(&*plan, None, &[live.id.into(), gone.into()])?;
    }
    Ok(())
}

/// A key's stored state written without the executor (see `direct_insert`): the UPDATE, INSERT
/// or DELETE through SPI built and tore down a whole plan state for one row, half of a live
/// pattern's cost on a single-row INSERT.
mod state_rows {
    use std::cell::Cell;

    use pgrx::pg_sys;
    use pgrx::IntoDatum;

    use crate::pg::direct_insert::{self, has_columns, Column, KeyedWrite, Statement, Target};

    /// `cep.pattern_state`'s columns, as pg_cep makes them.
    const COLUMNS: [Column; 4] = [
        ("pattern_id", pg_sys::INT4OID, false),
        ("key", pg_sys::TEXTOID, false),
        ("state", pg_sys::TEXTOID, false),
        ("deadline", pg_sys::TIMESTAMPTZOID, true),
    ];

    thread_local! {
        /// States this backend wrote here, for tests that must tell this path from SPI's.
        static WRITTEN: Cell<u64> = const { Cell::new(0) };
    }

    /// How many states this backend has written (or deleted) without the executor.
    pub fn written() -> u64 {
        WRITTEN.with(Cell::get)
    }

    /// Stores the (pattern, key) row's state and deadline, or with `None` deletes it, as
    /// `INSERT_STATE`, `UPDATE_STATE` and `DELETE_STATES` do; false when the caller must run those
    /// instead: under REPEATABLE READ or SERIALIZABLE (where a row changed since the transaction's
    /// snapshot must fail as the UPDATE fails it), when the table is not as pg_cep made it, or
    /// when the row was changed meanwhile. The caller holds the key's lock: no other session
    /// writes the row under READ COMMITTED.
    pub fn write(pattern_id: i32, key: &str, state: Option<(&str, Option<pgrx::datum::TimestampWithTimeZone>)>) -> bool {
        // SAFETY: plain read of the transaction's isolation level.
        if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
            return false;
        }
        let Some(oid) = direct_insert::relation_in_cep(c"pattern_state").filter(|&oid| direct_insert::writable_by_key(oid)) else { return false };
        let statement = Statement::new();
        // SAFETY: a relation open inside a transaction, closed below (or by the transaction's end
        // if an error comes first); the datums live in the statement's row memory until written.
        let done = unsafe {
            match Target::open(&statement, oid, true) {
                Some(table) => {
                    let heap = (*(*table.relation).rd_rel).relam == pg_sys::HEAP_TABLE_AM_OID;
                    let done = heap
                        && has_columns((*table.relation).rd_att, &COLUMNS)
                        && statement.in_row_memory(|| {
                            let text = |s: &str| direct_insert::text_datum(s.as_bytes());
                            let (id, key) = (pg_sys::Datum::from(pattern_id), text(key));
                            let values =
                                state.map(|(state, deadline)| [Some(id), Some(key), Some(text(state)), deadline.and_then(|d| d.into_datum())]);
                            let write = match &values {
                                Some(values) => KeyedWrite::Put(values),
                                None => KeyedWrite::Delete,
                            };
                            table.write_by_key(&statement, &[(pg_sys::F_INT4EQ, id), (pg_sys::F_TEXTEQ, key)], write)
                        });
                    table.close();
                    done
                }
                None => false,
            }
        };
        statement.free();
        if done {
            direct_insert::rows_stored();
            WRITTEN.with(|n| n.set(n.get() + 1));
        }
        done
    }
}

pub use state_rows::written as states_written_directly;

/// Records a trigger call's completed matches and notifies each on the pattern's channel.
fn record_matches(client: &mut SpiClient<'_>, live: &LivePattern, matches: &[(String, Match)], by_timeout: bool) -> CepResult<()> {
    if matches.is_empty() {
        return Ok(());
    }
    let (mut keys, mut rows, mut starts, mut ends, mut dropped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let names: Vec<&str> = live.pattern.measure_names().collect();
    let mut measures: Vec<Option<pgrx::JsonB>> = Vec::with_capacity(matches.len());
    for (key, m) in matches {
        dropped.push(m.dropped_partials);
        measures.push(
            (!names.is_empty())
                .then(|| pgrx::JsonB(names.iter().map(|n| n.to_string()).zip(m.measures.iter().map(pattern::value_to_json)).collect())),
        );
        keys.push(key.clone());
        rows.push(pgrx::JsonB(rows_json(live.pattern.symbols(), m)));
        starts.push(timestamptz(m.start));
        ends.push(timestamptz(m.end));
    }
    let plan = spi::kept(
        if crate::pg::cache::schema_0_3() { RECORD_MATCHES } else { RECORD_MATCHES_0_2 },
        &oids([
            INT4OID,
            TEXTOID,
            TEXTARRAYOID,
            JSONBARRAYOID,
            TIMESTAMPTZARRAYOID,
            TIMESTAMPTZARRAYOID,
            TEXTOID,
            TEXTOID,
            BOOLARRAYOID,
            JSONBARRAYOID,
        ]),
    )?;
    let notices = client.update(
        &*plan,
        None,
        &[
            live.id.into(),
            live.name.as_str().into(),
            keys.into(),
            rows.into(),
            starts.into(),
            ends.into(),
            (if by_timeout { "timeout" } else { "event" }).into(),
            live.channel.as_str().into(),
            dropped.into(),
            measures.into(),
        ],
    )?;
    // Sent at commit (see `notifier::notify_at_commit`): the transaction may be prepared.
    for row in notices {
        if let Some(payload) = row.get::<String>(1)? {
            crate::pg::notifier::notify_at_commit(&live.channel, payload);
        }
    }
    Ok(())
}

/// Advances each key's partial matches by its new events (in time order), records and notifies
/// what completed, and stores the states. Returns the number of matches.
pub fn advance(client: &mut SpiClient<'_>, live: &LivePattern, events: BTreeMap<String, Vec<Event>>) -> CepResult<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    // Keys in sorted order (the map's), the same in every session: no deadlock between them.
    let keys: Vec<&str> = events.keys().map(String::as_str).collect();
    for key in &keys {
        lock_key(live.id, key, true);
    }
    let mut stored: HashMap<String, String> = HashMap::with_capacity(keys.len());
    let mut states: HashMap<String, KeyState> = HashMap::with_capacity(keys.len());
    // The keys' shared copies first; only the keys without one are read from the table.
    let mut to_read = Vec::new();
    for key in &keys {
        match state_cache::get(live.copies(), key) {
            Some(None) => {}
            Some(Some(text)) => match serde_json::from_str::<KeyState>(&text) {
                Ok(state) => {
                    states.insert(key.to_string(), state);
                    stored.insert(key.to_string(), text);
                }
                Err(_) => to_read.push(*key),
            },
            None => to_read.push(*key),
        }
    }
    let loaded = if to_read.is_empty() { HashMap::new() } else { load_states(client, live.id, &to_read)? };
    for (key, (state, text)) in loaded {
        stored.insert(key.clone(), text);
        states.insert(key, state);
    }
    let mut matches = Vec::new();
    let mut touched = Vec::with_capacity(keys.len());
    let mut dropped: Vec<(&str, u64)> = Vec::new();
    for (key, events) in &events {
        let state = states.entry(key.clone()).or_insert_with(|| live.pattern.new_state());
        let before = state.dropped();
        let mut out = Vec::new();
        for event in events {
            live.pattern.advance(state, event, &mut out);
        }
        if state.dropped() > before {
            dropped.push((key.as_str(), state.dropped() - before));
        }
        matches.extend(out.into_iter().map(|m| (key.clone(), m)));
        touched.push(key.as_str());
    }
    if let Some((first, _)) = dropped.first() {
        let total: u64 = dropped.iter().map(|(_, n)| n).sum();
        crate::pg::stats::record(live.source, &crate::engine::counters::MonitorCounters { partials_dropped: total, ..Default::default() });
        pgrx::warning!(
            "pattern {:?}: {total} partial match(es) of {} key(s) dropped (first key {}): a key held more than max_partials = {}; \
             its matches are flagged dropped_partials, and some may be missing or differ from cep.match_recognize's",
            live.name,
            dropped.len(),
            crate::engine::excerpt(first),
            live.pattern.options().max_partials
        );
    }
    let to_save: Vec<(&str, &KeyState, Option<&str>)> = touched.iter().map(|k| (*k, &states[*k], stored.get(*k).map(String::as_str))).collect();
    save_states(client, live, &to_save)?;
    record_matches(client, live, &matches, false)?;
    Ok(matches.len())
}

/// Completes absences and drops expired runs for every key whose deadline has passed.
/// Keys another session is advancing right now are left for the next call.
pub fn fire_timeouts(client: &mut SpiClient<'_>, limit: i64) -> CepResult<i64> {
    let now = crate::pg::time::now();
    let mut due: Vec<(i32, pg_sys::Oid, String)> = Vec::new();
    for row in client.select(
        "SELECT s.pattern_id, p.source::oid, s.key FROM cep.pattern_state s JOIN cep.patterns p USING (pattern_id)
         WHERE s.deadline <= $2 ORDER BY s.deadline LIMIT $1",
        None,
        &[limit.into(), crate::pg::time::timestamptz(now).into()],
    )? {
        due.push((row.get(1)?.unwrap_or_default(), row.get(2)?.unwrap_or(pg_sys::InvalidOid), row.get(3)?.unwrap_or_default()));
    }
    let mut fired = 0i64;
    for (pattern_id, source, key) in due {
        let patterns = crate::pg::patterns::cached(source)?;
        let Some(live) = patterns.iter().find(|p| p.id == pattern_id) else {
            // The pattern no longer loads (its source or a column it reads is gone): its partial
            // matches can never advance, and would block the keys due after them.
            client.update("DELETE FROM cep.pattern_state WHERE pattern_id = $1", None, &[pattern_id.into()])?;
            state_cache::forget_pattern(pattern_id);
            continue;
        };
        if !lock_key(pattern_id, &key, false) {
            continue;
        }
        let Some((mut state, text)) = load_states(client, pattern_id, &[key.as_str()])?.remove(&key) else { continue };
        let mut out = Vec::new();
        live.pattern.expire(&mut state, now, &mut out);
        save_states(client, live, &[(key.as_str(), &state, Some(text.as_str()))])?;
        let done: Vec<(String, Match)> = out.iter().map(|m| (key.clone(), m.clone())).collect();
        record_matches(client, live, &done, true)?;
        fired += out.len() as i64;
    }
    Ok(fired)
}
