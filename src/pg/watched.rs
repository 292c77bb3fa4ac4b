//! A watched table as the evaluator and the monitor need it: its mapping, the rules that can run
//! on it now, and its kept queries.
//!
//! Built from `cep.watches` and the table's live columns whenever either changes. A mapped column
//! that was dropped or retyped after `cep.watch` does not make INSERTs fail: the rules that read
//! it are skipped (and counted, with a WARNING) until the table is fixed or watched again.

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;

use crate::engine::evaluate::WindowPlan;
use crate::engine::rules::Rule;
use crate::error::{CepError, CepResult};
use crate::pg::columns::{TableColumns, AMOUNT_TYPES, KEY_TYPES, LOCATION_TYPES, TIME_TYPES};
use crate::pg::history::{self, Mapping};
use crate::pg::tuple::{Col, RowColumns};

pub struct Watch {
    pub relid: pg_sys::Oid,
    /// `schema.table`, quoted, for messages and SQL.
    pub qualified_name: String,
    pub channel: String,
    /// Alerts are written at or above this level: "low", "medium" or "high".
    pub alert_level: String,
    /// Rows scoring at or above this are blocked before they are stored.
    pub block_at: Option<f64>,
    /// "error" rejects the INSERT, "skip" drops the row and records it.
    pub on_block: String,
    /// Which assessments go to `cep.risk_assessments`: "none", "alerts" or "all".
    pub log_assessments: String,
    /// Whether the monitor keeps the table's rollups (`pg::rollups`).
    pub rollups: bool,
    /// The OID of `cep.watches`: a recreated extension is a new generation of watches.
    pub generation: u32,
    /// The watched table's owner: its history is read with the owner's rights (see
    /// `privileges::as_table_owner`), whoever writes the row.
    pub owner: pg_sys::Oid,
    /// With a cooldown (microseconds), repeats of an open alert are counted on it (`cep.alter_watch`).
    pub cooldown: Option<i64>,
    /// A hash of the key, amount and time columns: rollups summed under another mapping are not
    /// this one's.
    pub mapping_hash: u32,
    /// Active rules that can run on this table as it is now.
    pub rules: Vec<Rule>,
    /// Active rules that cannot, with the reason.
    pub skipped: Vec<(i32, String)>,
    /// Set when the key or time column is gone: nothing can be scored.
    pub unusable: Option<String>,
    pub plan: WindowPlan,
    pub has_location: bool,
    /// The window query takes the transaction's location as its last parameter.
    pub binds_location: bool,
    /// Reads every window of `plan` in one pass; `None` when no rule needs history.
    pub window_query: Option<OwnedPreparedStatement>,
    /// Loads a key's rows for the shared window cache (`$1` key, `$2` from); `None` without it.
    pub cache_load: Option<OwnedPreparedStatement>,
    /// Loads every key's rows from `$1` on, for `cep.window_cache_warm`.
    pub cache_warm_sql: Option<String>,
    /// Every key's rows in `[$1, $2]`, for `cep.backtest_rule`; `None` when the watch is unusable.
    pub backtest_sql: Option<String>,
    /// The latest time in the table, for the rollups' first commit after a start; `None` when
    /// the watch is unusable.
    pub latest_time_sql: Option<String>,
    /// Where the monitor finds key, amount, location, time and primary key in this relation's
    /// tuples; `None` when the watch is unusable.
    pub row_columns: Option<RowColumns>,
    /// The watched table itself: the relation, or the partitioned table it belongs to.
    pub root: pg_sys::Oid,
}

struct Row {
    qualified_name: String,
    key: String,
    amount: String,
    time: String,
    location: Option<String>,
    pk: Option<String>,
    channel: String,
    alert_level: String,
    block_at: Option<f64>,
    on_block: String,
    log_assessments: String,
    rollups: bool,
    root: pg_sys::Oid,
    generation: u32,
    owner: pg_sys::Oid,
    cooldown: Option<i64>,
}

/// The watch on `relid`, with its window query prepared and kept.
pub fn cached(relid: pg_sys::Oid) -> CepResult<std::rc::Rc<Watch>> {
    thread_local! {
        static WATCHES: crate::pg::cache::PerTable<std::rc::Rc<Watch>> = Default::default();
    }
    let rules = crate::pg::cache::active_rules()?;
    WATCHES.with(|w| w.get_or_load(relid, || Ok(std::rc::Rc::new(load(relid, &rules)?))))
}

/// Loads the watch for `relid`: a watched table, or a partition of one (a row trigger on a
/// partitioned table fires on the partition, whose columns may sit at other positions).
/// The registration that covers `relid`: its own, or its nearest partitioned ancestor's.
fn read_registration(relid: pg_sys::Oid) -> CepResult<Row> {
    let rollups = if crate::pg::cache::schema_0_2() { "w.rollups" } else { "false" };
    let cooldown = if crate::pg::cache::schema_0_3() { "(extract(epoch FROM w.cooldown) * 1000000)::int8" } else { "NULL::int8" };
    let row = Spi::connect(|client| -> CepResult<Option<Row>> {
        let rows = client.select(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname), w.key_column::text, w.amount_column::text, \
                    w.time_column::text, w.location_column::text, w.pk_column::text, w.channel, \
                    w.alert_level, w.block_at, w.on_block, w.relid, w.log_assessments, {rollups}, w.tableoid::int8, c.relowner, {cooldown} \
             FROM (SELECT $1::oid AS relid, 0::int8 AS depth \
                   UNION ALL SELECT * FROM pg_partition_ancestors($1) WITH ORDINALITY) a(relid, depth) \
             JOIN cep.watches w ON w.relid = a.relid \
             JOIN pg_class c ON c.oid = w.relid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY a.depth LIMIT 1"
            ),
            None,
            &[relid.into()],
        )?;
        let Some(r) = rows.into_iter().next() else { return Ok(None) };
        Ok(Some(Row {
            qualified_name: r.get(1)?.unwrap_or_default(),
            key: r.get(2)?.unwrap_or_default(),
            amount: r.get(3)?.unwrap_or_default(),
            time: r.get(4)?.unwrap_or_default(),
            location: r.get(5)?,
            pk: r.get(6)?,
            channel: r.get(7)?.unwrap_or_default(),
            alert_level: r.get(8)?.unwrap_or_default(),
            block_at: r.get(9)?,
            on_block: r.get(10)?.unwrap_or_default(),
            root: r.get(11)?.unwrap_or(pg_sys::InvalidOid),
            log_assessments: r.get(12)?.unwrap_or_default(),
            rollups: r.get(13)?.unwrap_or(true),
            generation: r.get::<i64>(14)?.unwrap_or(0) as u32,
            owner: r.get(15)?.unwrap_or(pg_sys::InvalidOid),
            cooldown: r.get(16)?,
        }))
    })?;
    row.ok_or_else(|| {
        let name = crate::pg::table_arg::relation_name(relid).unwrap_or_else(|_| format!("table with OID {relid}"));
        CepError::NotWatched(format!("{name} is not watched: call cep.watch on it first"))
    })
}

/// The rules this table can run, and why each other one is skipped: key and time carry every
/// rule; amount and location only the rules that read them.
fn usable_rules(
    all_rules: &[Rule],
    root: pg_sys::Oid,
    [unusable, amount_problem, location_problem]: [&Option<String>; 3],
) -> (Vec<Rule>, Vec<(i32, String)>) {
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    for rule in all_rules.iter().filter(|r| r.applies_to(root.to_u32())) {
        let why = if let Some(why) = &unusable {
            Some(why.clone())
        } else if rule.condition.needs_amount() && amount_problem.is_some() {
            amount_problem.clone()
        } else if rule.condition.needs_location() && location_problem.is_some() {
            location_problem.clone()
        } else {
            None
        };
        match why {
            Some(why) => skipped.push((rule.id, why)),
            None => rules.push(rule.clone()),
        }
    }
    (rules, skipped)
}

fn load(relid: pg_sys::Oid, all_rules: &[Rule]) -> CepResult<Watch> {
    let row = read_registration(relid)?;
    // Names and types are checked on the watched table; positions come from this relation.
    let columns = TableColumns::read(row.root, &row.qualified_name)?;
    let here = if relid == row.root { None } else { Some(TableColumns::read(relid, &row.qualified_name)?) };
    let here = here.as_ref().unwrap_or(&columns);
    let quote = |name: &str| pgrx::spi::quote_identifier(name);

    // Key and time carry every rule; amount and location only some.
    let unusable = columns
        .check("key_column", &row.key, KEY_TYPES)
        .and_then(|_| columns.check("time_column", &row.time, TIME_TYPES))
        .err()
        .map(|e| e.to_string());
    let amount_problem = columns.check("amount_column", &row.amount, AMOUNT_TYPES).err().map(|e| e.to_string());
    let location_problem = row.location.as_deref().and_then(|l| columns.check("location_column", l, LOCATION_TYPES).err()).map(|e| e.to_string());
    let pk_ok = row.pk.as_deref().is_some_and(|p| columns.type_of(p).is_some());

    let (rules, skipped) = usable_rules(all_rules, row.root, [&unusable, &amount_problem, &location_problem]);
    let plan = WindowPlan::for_rules(&rules);
    let mapping = Mapping {
        qualified_name: row.qualified_name.clone(),
        key: quote(&row.key),
        key_type: columns.type_of(&row.key).unwrap_or("text").to_string(),
        amount: amount_problem.is_none().then(|| quote(&row.amount)),
        time: quote(&row.time),
        location: if location_problem.is_none() { row.location.as_deref().map(quote) } else { None },
        pk: if pk_ok { row.pk.as_deref().map(quote) } else { None },
    };
    let binds_location = mapping.location.is_some() && plan.needs_location;
    let window_query = if unusable.is_some() || plan.windows.is_empty() {
        None
    } else {
        let (sql, types) = history::window_query_sql(&mapping, &plan, binds_location);
        Some(prepare(&sql, &types)?)
    };
    // Prepared whether or not the window cache exists (one plan, once per backend): the cache's
    // own code decides when to use it.
    let cache_load = if window_query.is_some() {
        Some(prepare(&history::cache_load_sql(&mapping), &[PgOid::from(pg_sys::TEXTOID), PgOid::from(pg_sys::TIMESTAMPTZOID)])?)
    } else {
        None
    };
    let col = |name: Option<&str>| name.and_then(|n| here.position(n)).and_then(|(num, typ)| Col::new(num, typ));
    let row_columns = match (unusable.is_none(), col(Some(&row.key)), col(Some(&row.time))) {
        (true, Some(key), Some(time)) => Some(RowColumns {
            key,
            time,
            amount: if amount_problem.is_none() { col(Some(&row.amount)) } else { None },
            location: if location_problem.is_none() { col(row.location.as_deref()) } else { None },
            pk: if pk_ok { col(row.pk.as_deref()) } else { None },
        }),
        _ => None,
    };
    Ok(Watch {
        relid,
        qualified_name: row.qualified_name,
        channel: row.channel,
        alert_level: row.alert_level,
        block_at: row.block_at,
        on_block: row.on_block,
        log_assessments: row.log_assessments,
        rollups: row.rollups,
        generation: row.generation,
        owner: row.owner,
        cooldown: row.cooldown,
        mapping_hash: crate::engine::window_cache::key_hash(&format!("{}\u{0}{}\u{0}{}", row.key, row.amount, row.time))[0] as u32,
        rules,
        skipped,
        latest_time_sql: unusable.is_none().then(|| format!("SELECT max({})::timestamptz FROM {}", mapping.time, mapping.qualified_name)),
        unusable,
        plan,
        has_location: mapping.location.is_some(),
        binds_location,
        window_query,
        cache_warm_sql: cache_load.as_ref().map(|_| history::cache_warm_sql(&mapping)),
        backtest_sql: row_columns.is_some().then(|| history::backtest_sql(&mapping)),
        cache_load,
        row_columns,
        root: row.root,
    })
}

fn prepare(sql: &str, types: &[PgOid]) -> CepResult<OwnedPreparedStatement> {
    Ok(Spi::connect(|client| client.prepare(sql, types).map(|p| p.keep()))?)
}
