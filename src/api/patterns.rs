//! `cep.define_pattern`, `cep.drop_pattern`, `cep.fire_timeouts` and `cep.match_recognize`:
//! sequence patterns matched live by a trigger, or over the rows a table already holds.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::engine::pattern::{value_to_json, Clauses, Event, KeyState, Match, Pattern, RowsPerMatch, Value};
use crate::error::{required, CepError, CepResult, OrReport};
use crate::pg::columns::TableColumns;
use crate::pg::json_arg::JsonArg;
use crate::pg::patterns::{self, Columns, Definition};
use crate::pg::privileges::as_extension_owner;
use crate::pg::table_arg::TableArg;
use crate::pg::tuple::{datum_value, for_each_transition_row};

fn micros(client: &SpiClient<'_>, within: Option<pgrx::datum::Interval>) -> CepResult<Option<i64>> {
    let Some(within) = within else { return Ok(None) };
    Ok(client.select("SELECT (extract(epoch FROM $1::interval) * 1e6)::int8", None, &[within.into()])?.first().get_one()?)
}

/// Registers a sequence pattern over a table of events and starts matching it live: every
/// inserted row advances its key's partial matches, and a completed match goes into
/// `cep.pattern_matches` and is notified on `channel`. Returns the pattern's id.
///
/// `pattern` is regex-like over symbol names (`a b+ c`, `* ? {n} {n,m}`, `|`, `( )`, and
/// `!sym` for "not followed by"); `define` maps each symbol to a predicate on the row's columns.
/// An invalid pattern or predicate is refused here, with the offending token, and nothing is
/// registered. Matching starts with the rows inserted after this call; use
/// `cep.match_recognize` to run the same pattern over the rows already there. With
/// `emit => 'final'`, `measures` (`{"name": "expression"}`, with `subset` names) are stored with
/// each match in `cep.pattern_matches.measures` and sent in its notification.
///
/// ```sql
/// SELECT cep.define_pattern('checkout', 'user_events', 'user_id', 'created_at',
///     'login browse+ purchase',
///     '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"},
///       "purchase": {"event_type": "purchase"}}',
///     within => '30 minutes');
/// ```
#[pg_extern(volatile)]
#[allow(clippy::too_many_arguments)]
fn define_pattern(
    name: Option<&str>,
    source: Option<TableArg>,
    partition_by: Option<&str>,
    order_by: Option<&str>,
    pattern: Option<&str>,
    define: Option<JsonArg>,
    within: default!(Option<pgrx::datum::Interval>, "NULL"),
    contiguity: default!(Option<&str>, "'skip_till_next'"),
    after_match: default!(Option<&str>, "'past_last_row'"),
    channel: default!(Option<&str>, "'pattern_matches'"),
    id_column: default!(Option<&str>, "'id'"),
    max_partials: default!(Option<i32>, 1000),
    emit: default!(Option<&str>, "NULL"),
    measures: default!(Option<JsonArg>, "NULL"),
    subset: default!(Option<JsonArg>, "NULL"),
) -> i32 {
    let name = required("name", name);
    let source = required("source", source).open("source").or_report();
    let partition_by = required("partition_by", partition_by);
    let order_by = required("order_by", order_by);
    let pattern = required("pattern", pattern);
    let define = pgrx::JsonB(required("define", define).parse("define").or_report());
    let contiguity = required("contiguity", contiguity);
    let after_match = required("after_match", after_match);
    let channel = required("channel", channel);
    let id_column = required("id_column", id_column);
    let max_partials = required("max_partials", max_partials);
    let clauses = Clauses {
        measures: measures.map(|m| m.parse("measures").or_report()).unwrap_or_default(),
        subset: subset.map(|m| m.parse("subset").or_report()).unwrap_or_default(),
    };
    crate::pg::table_arg::require_table(&source).or_report();
    let relid = source.oid();
    crate::pg::privileges::require_owner(relid, "cep.define_pattern").or_report();
    let table_name = source.name().to_string();
    // Closed first: CREATE TRIGGER refuses a table this session has open.
    drop(source);
    Spi::connect_mut(|client| -> CepResult<i32> {
        if name.trim().is_empty() {
            return Err(CepError::InvalidArgument("name must not be empty".into()));
        }
        crate::pg::notifier::check_channel("channel", channel)?;
        let within = micros(client, within)?;
        let def = Definition { partition_by, order_by, id_column, pattern, define: &define.0, within, contiguity, after_match, max_partials, emit, clauses: &clauses };
        let (compiled, _) = patterns::compile(&def, &TableColumns::read(relid, &table_name)?)?;
        patterns::require_live(&compiled)?;
        let emit = if compiled.options().emit == crate::engine::pattern::Emit::Final { "final" } else { "eager" };
        let stored = |clause: &serde_json::Value| (!clause.is_null()).then(|| pgrx::JsonB(clause.clone()));
        let id: Option<i32> = as_extension_owner(|| client
            .update(
                "INSERT INTO cep.patterns (name, source, partition_by, order_by, id_column, pattern, define, within, contiguity, after_match, channel, max_partials, emit, measures, subset)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, make_interval(secs => $8::float8 / 1e6), $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (name) DO NOTHING RETURNING pattern_id",
                None,
                &[
                    name.into(),
                    relid.into(),
                    partition_by.into(),
                    order_by.into(),
                    id_column.into(),
                    pattern.into(),
                    define.into(),
                    within.map(|w| w as f64).into(),
                    contiguity.into(),
                    after_match.into(),
                    channel.into(),
                    max_partials.into(),
                    emit.into(),
                    stored(&clauses.measures).into(),
                    stored(&clauses.subset).into(),
                ],
            )
            .map(|rows| rows.first().get_one().unwrap_or(None)))?;
        let Some(id) = id else {
            return Err(CepError::DuplicateObject(format!("pattern {name:?} already exists; drop it with cep.drop_pattern first")));
        };
        let ddl: Option<String> = client
            .select(
                "SELECT format('CREATE TRIGGER cep_pattern AFTER INSERT ON %s REFERENCING NEW TABLE AS cep_pattern_rows
                                FOR EACH STATEMENT EXECUTE FUNCTION cep.pattern_trigger()', $1::regclass)
                 WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1 AND tgname = 'cep_pattern')",
                None,
                &[relid.into()],
            )?
            .first()
            .get_one()
            .unwrap_or(None);
        if let Some(ddl) = ddl {
            client.update(ddl.as_str(), None, &[])?;
        }
        Ok(id)
    })
    .or_report()
}

/// Removes a pattern, its partial matches, and the trigger once no pattern uses the table.
/// Completed matches stay in `cep.pattern_matches`. Returns false when there was no such pattern.
///
/// ```sql
/// SELECT cep.drop_pattern('checkout');
/// ```
#[pg_extern(volatile, strict)]
fn drop_pattern(name: &str) -> bool {
    Spi::connect_mut(|client| -> CepResult<bool> {
        let source: Option<pg_sys::Oid> =
            as_extension_owner(|| client.select("SELECT source FROM cep.patterns WHERE name = $1", None, &[name.into()]))?
                .first()
                .get_one()
                .unwrap_or(None);
        if let Some(source) = source {
            crate::pg::privileges::require_owner_if_exists(source, "cep.drop_pattern")?;
        }
        let row =
            as_extension_owner(|| client.update("DELETE FROM cep.patterns WHERE name = $1 RETURNING source::oid, pattern_id", None, &[name.into()]))?;
        let (source, id): (Option<pg_sys::Oid>, Option<i32>) = if row.is_empty() { (None, None) } else { row.first().get_two()? };
        let (Some(source), Some(id)) = (source, id) else { return Ok(false) };
        as_extension_owner(|| client.update("DELETE FROM cep.pattern_state WHERE pattern_id = $1", None, &[id.into()]))?;
        let last: bool = as_extension_owner(|| {
            client
                .select("SELECT NOT EXISTS (SELECT 1 FROM cep.patterns WHERE source = $1)", None, &[source.into()])
                .map(|rows| rows.first().get_one().unwrap_or(None).unwrap_or(false))
        })?;
        if last {
            crate::pg::triggers::drop_triggers(client, source, &["cep_pattern"])?;
        }
        Ok(true)
    })
    .or_report()
}

/// Completes patterns that end in an absence once their `within` has passed with no event for
/// the key, and drops partial matches that can no longer complete. The background worker calls
/// it every `cep.timeout_interval`; without the worker, call it from a scheduler. Returns the
/// matches it completed.
///
/// ```sql
/// SELECT cep.fire_timeouts();
/// ```
#[pg_extern(volatile)]
fn fire_timeouts(max_keys: default!(i64, 10000)) -> i64 {
    as_extension_owner(|| Spi::connect_mut(|client| patterns::fire_timeouts(client, max_keys))).or_report()
}

/// Statement trigger behind `cep.define_pattern`; not called directly.
#[pg_trigger]
fn pattern_trigger<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        let data = trigger.trigger_data();
        let live = crate::pg::patterns::cached(relid).or_report();
        if live.is_empty() {
            return Ok(None);
        }
        let mut events: Vec<Vec<(String, Event)>> = live.iter().map(|_| Vec::new()).collect();
        // SAFETY: this statement trigger's own transition table, described by its relation.
        unsafe {
            for_each_transition_row(data.tg_newtable, (*data.tg_relation).rd_att, |t| {
                for (p, out) in live.iter().zip(events.iter_mut()) {
                    // An event that fits no symbol costs no lock, no read and no write.
                    out.extend(patterns::event_of(t, &p.columns).filter(|(_, e)| p.pattern.can_affect(&e.values)));
                }
            });
        }
        // Partial matches and matches are pg_cep's own rows: kept as the extension, not the writer.
        as_extension_owner(|| {
            Spi::connect_mut(|client| -> CepResult<()> {
                for (p, events) in live.iter().zip(events) {
                    patterns::advance(client, p, patterns::by_key(events))?;
                }
                Ok(())
            })
        })
        .or_report();
        Ok(None)
    })
}

/// Runs a pattern over the rows a table already holds, with the same engine as live matching
/// (so it backtests a pattern before `cep.define_pattern`). Patterns ending in an absence
/// complete only where `within` has passed by now, as they would live.
///
/// `rows_per_match => 'one'` returns one row per match with `rows` as `{"symbol": [ids]}`;
/// `'all'` returns one row per matched row, with the symbol it matched (MATCH_RECOGNIZE's
/// CLASSIFIER) and its id; `'all_omit_empty'` leaves out empty matches and `'all_with_unmatched'`
/// adds the rows no match took (match_number NULL). `measures` (`{"name": "expression"}`) adds
/// what each match (or each row, running) reports, as the jsonb `measures`; `subset` names unions
/// of variables.
///
/// ```sql
/// SELECT * FROM cep.match_recognize('user_events', 'user_id', 'created_at',
///     'login browse+ purchase',
///     '{"login": {"event_type": "login"}, "browse": {"event_type": "browse"},
///       "purchase": {"event_type": "purchase"}}',
///     within => '30 minutes');
/// ```
#[pg_extern(volatile)]
#[allow(clippy::too_many_arguments)]
fn match_recognize(
    relation: Option<TableArg>,
    partition_by: Option<&str>,
    order_by: Option<&str>,
    pattern: Option<&str>,
    define: Option<JsonArg>,
    within: default!(Option<pgrx::datum::Interval>, "NULL"),
    contiguity: default!(Option<&str>, "'skip_till_next'"),
    after_match: default!(Option<&str>, "'past_last_row'"),
    rows_per_match: default!(Option<&str>, "'one'"),
    id_column: default!(Option<&str>, "'id'"),
    max_partials: default!(Option<i32>, 1000),
    measures: default!(Option<JsonArg>, "NULL"),
    subset: default!(Option<JsonArg>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(match_number, Option<i64>),
        name!(key, String),
        name!(match_start, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(match_end, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(symbol, Option<String>),
        name!(row_id, Option<i64>),
        name!(rows, Option<pgrx::JsonB>),
        name!(measures, Option<pgrx::JsonB>),
    ),
> {
    let relation = required("relation", relation).open("relation").or_report();
    let partition_by = required("partition_by", partition_by);
    let order_by = required("order_by", order_by);
    let pattern = required("pattern", pattern);
    let define = pgrx::JsonB(required("define", define).parse("define").or_report());
    let contiguity = required("contiguity", contiguity);
    let after_match = required("after_match", after_match);
    let rows_per_match = required("rows_per_match", rows_per_match);
    let id_column = required("id_column", id_column);
    let max_partials = required("max_partials", max_partials);
    let clauses = Clauses {
        measures: measures.map(|m| m.parse("measures").or_report()).unwrap_or_default(),
        subset: subset.map(|m| m.parse("subset").or_report()).unwrap_or_default(),
    };
    let mode: RowsPerMatch = rows_per_match.parse().map_err(CepError::from).or_report();
    let relid = relation.oid();
    let table_name = relation.name().to_string();
    let rows = Spi::connect(|client| -> CepResult<Vec<MatchRow>> {
        let within = micros(client, within)?;
        let def = Definition {
            partition_by,
            order_by,
            id_column,
            pattern,
            define: &define.0,
            within,
            contiguity,
            after_match,
            max_partials,
            emit: None,
            clauses: &clauses,
        };
        let (compiled, columns) = patterns::compile(&def, &TableColumns::read(relid, &table_name)?)?;
        let sql = history_sql(client, relid, [partition_by, order_by, id_column], compiled.columns())?;
        run_over_history(client, &compiled, &columns, &sql, mode)
    })
    .or_report();
    TableIterator::new(rows)
}

/// One row of `cep.match_recognize`: match number (none for a row no match took), key, match
/// start and end, symbol and row id (ALL ROWS PER MATCH), rows by symbol (ONE ROW), measures.
type MatchRow = (
    Option<i64>,
    String,
    Option<pgrx::datum::TimestampWithTimeZone>,
    Option<pgrx::datum::TimestampWithTimeZone>,
    Option<String>,
    Option<i64>,
    Option<pgrx::JsonB>,
    Option<pgrx::JsonB>,
);

/// The table's rows in partition order, keys, times and ids first, then the columns DEFINE reads:
/// every identifier quoted, the table named by its regclass.
fn history_sql(client: &SpiClient<'_>, relid: pg_sys::Oid, [key, time, id]: [&str; 3], read: &[String]) -> CepResult<String> {
    let names: Vec<String> = [key, time, id].iter().map(|s| s.to_string()).chain(read.iter().cloned()).collect();
    let quoted: Vec<String> = client
        .select("SELECT array_agg(quote_ident(c) ORDER BY o) FROM unnest($1::text[]) WITH ORDINALITY u(c, o)", None, &[names.into()])?
        .first()
        .get_one::<Vec<String>>()?
        .unwrap_or_default();
    let table = crate::pg::table_arg::relation_name(relid)?;
    let values: String = quoted[3..].iter().map(|c| format!(", {c}")).collect();
    let (key, time, id) = (&quoted[0], &quoted[1], &quoted[2]);
    Ok(format!(
        "SELECT {key}::text, {time}::timestamptz, {id}::int8{values} FROM {table}
         WHERE {key} IS NOT NULL AND {time} IS NOT NULL AND {id} IS NOT NULL ORDER BY 1, 2, 3"
    ))
}

/// The rows `cep.match_recognize` returns for the table's rows `sql` reads, key by key: each
/// match, numbered within its key, as `mode` shows it.
fn run_over_history(client: &SpiClient<'_>, compiled: &Pattern, columns: &Columns, sql: &str, mode: RowsPerMatch) -> CepResult<Vec<MatchRow>> {
    let now = crate::pg::time::now();
    let mut out = Vec::new();
    // With strict contiguity a key's rows are kept until the next key, for the standard's
    // preferred matches (which need every row of the partition); otherwise they go through the
    // live engine one by one, and are kept only for MEASURES and unmatched rows.
    let standard = compiled.is_standard();
    let keep_rows = standard || compiled.measure_names().next().is_some() || mode == RowsPerMatch::AllWithUnmatched;
    let mut current: Option<(String, KeyState, Vec<Event>, Vec<Match>)> = None;
    let finish = |current: Option<(String, KeyState, Vec<Event>, Vec<Match>)>, out: &mut Vec<MatchRow>| -> CepResult<()> {
        let Some((key, mut state, rows, mut found)) = current else { return Ok(()) };
        match compiled.standard_matches(&rows).filter(|_| standard) {
            Some(preferred) => found = preferred?,
            None => compiled.expire(&mut state, now, &mut found),
        }
        out.extend(match_rows(compiled, &key, &rows, &found, mode));
        Ok(())
    };
    let mut cursor = client.open_cursor(sql, &[]);
    loop {
        let mut batch = cursor.fetch(10_000)?;
        if batch.is_empty() {
            break;
        }
        while batch.next().is_some() {
            // Matching runs in Rust between fetches: let statement_timeout and cancel in.
            check_for_interrupts!();
            let key: String = batch.get(1)?.unwrap_or_default();
            let ts = batch.get_datum_by_ordinal(2)?.map(|d| d.value() as i64).unwrap_or_default();
            let id: i64 = batch.get(3)?.unwrap_or_default();
            let mut row_values = Vec::with_capacity(columns.values.len());
            for (i, col) in columns.values.iter().enumerate() {
                row_values.push(match batch.get_datum_by_ordinal(4 + i)? {
                    Some(d) => datum_value(d, *col),
                    None => Value::Null,
                });
            }
            if current.as_ref().is_none_or(|(k, ..)| *k != key) {
                finish(current.take(), &mut out)?;
                current = Some((key.clone(), compiled.new_state(), Vec::new(), Vec::new()));
            }
            let (_, state, rows, found) = current.as_mut().expect("set above");
            let event = Event { id, ts, values: row_values };
            if !standard {
                compiled.advance(state, &event, found);
            }
            if keep_rows {
                rows.push(event);
            }
        }
    }
    finish(current.take(), &mut out)?;
    Ok(out)
}

/// One partition's rows of the result: one per match, or (ALL ROWS PER MATCH) one per row shown.
/// Matches are numbered within their partition, as the standard's MATCH_NUMBER() is.
fn match_rows(compiled: &Pattern, key: &str, rows: &[Event], found: &[Match], mode: RowsPerMatch) -> Vec<MatchRow> {
    let ts = crate::pg::time::timestamptz;
    let symbols = compiled.symbols();
    let names: Vec<&str> = compiled.measure_names().collect();
    let measured = |values: Vec<Value>| {
        (!names.is_empty()).then(|| pgrx::JsonB(names.iter().map(|n| n.to_string()).zip(values.iter().map(value_to_json)).collect()))
    };
    compiled
        .output(rows, found, mode)
        .into_iter()
        .map(|shown| {
            let m = shown.found.map(|n| &found[n]);
            let (symbol, row_id) = match shown.row {
                Some((id, symbol)) => (symbol.and_then(|s| symbols.get(s as usize).cloned()), Some(id)),
                None => (None, None),
            };
            let grouped = m.filter(|_| !mode.all_rows()).map(|m| pgrx::JsonB(patterns::rows_json(symbols, m)));
            (
                shown.found.map(|n| n as i64 + 1),
                key.to_string(),
                m.map(|m| ts(m.start)),
                m.map(|m| ts(m.end)),
                symbol,
                row_id,
                grouped,
                measured(shown.measures).filter(|_| m.is_some()),
            )
        })
        .collect()
}
