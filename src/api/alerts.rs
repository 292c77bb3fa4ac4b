//! `cep.flush_alert_repeats`: what a cooldown counted in this session, written now.

use pgrx::prelude::*;

use crate::error::OrReport;

/// Under a cooldown, a session counts the repeats of an open alert in memory and adds them to the
/// alert row once per `cep.alert_repeat_flush_interval` while it keeps writing (see the README's
/// "Storms"). This writes what this session has counted now, this transaction's repeats included;
/// returns the number of alerts updated. Call it before reading `repeats` in the session that
/// wrote them (a session that ends writes what it has left by itself).
///
/// ```sql
/// SELECT cep.flush_alert_repeats();
/// ```
#[pg_extern(volatile)]
fn flush_alert_repeats() -> i64 {
    crate::pg::cooldown::flush_now().or_report()
}

/// Called by `cep.set_alert_state` after it changed an alert's state: sessions that count repeats
/// under a cooldown forget the alerts they knew open, so a resolved alert takes no more repeats.
#[pg_extern(volatile)]
fn alert_state_changed() {
    crate::pg::cooldown::state_changed();
}
