//! Statements the monitor runs often, prepared once per backend and kept (`SPI_keepplan`), so a
//! row that raises an alert is not parsed and planned again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;

use crate::error::CepResult;

thread_local! {
    static KEPT: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// The kept plan of `sql`, whose parameters have the types `args`. Only for SQL that names
/// nothing a user can drop (pg_cep's own tables and functions): the plan lives as long as the
/// backend, and Postgres re-plans it by itself if those change.
pub fn kept(sql: &'static str, args: &[PgOid]) -> CepResult<Rc<OwnedPreparedStatement>> {
    if let Some(plan) = KEPT.with(|k| k.borrow().get(sql).cloned()) {
        return Ok(plan);
    }
    let plan = Rc::new(pgrx::spi::Spi::connect(|client| client.prepare(sql, args).map(|p| p.keep()))?);
    KEPT.with(|k| k.borrow_mut().insert(sql, plan.clone()));
    Ok(plan)
}

/// Runs `body`, which uses SPI, where a utility statement (`PREPARE TRANSACTION`, `COMMIT
/// PREPARED`) left no snapshot: with the transaction's snapshot pushed for it, and names resolved
/// as in every pg_cep function.
pub fn with_statement_snapshot<T>(body: impl FnOnce() -> T) -> T {
    // SAFETY: a snapshot pushed for the body and popped after it; an ERROR between leaves it to
    // the transaction's abort, which clears the stack.
    let pushed = unsafe { !pgrx::pg_sys::ActiveSnapshotSet() };
    if pushed {
        // SAFETY: see above.
        unsafe { pgrx::pg_sys::PushActiveSnapshot(pgrx::pg_sys::GetTransactionSnapshot()) };
    }
    let result = crate::pg::privileges::with_pinned_search_path(body);
    if pushed {
        // SAFETY: pops the snapshot pushed above.
        unsafe { pgrx::pg_sys::PopActiveSnapshot() };
    }
    result
}
