//! `cep.flush_alert_repeats`: the repeats a cooldown counted and did not write yet, written now.

use pgrx::prelude::*;

use crate::error::OrReport;

/// Under a cooldown, sessions count the repeats of an open alert in memory, and one flush per
/// database and `cep.alert_repeat_flush_interval` adds them to the alert rows (see "Storms" in
/// docs/monitor.md). This writes now what this session counted (this transaction's repeats
/// included) and what other sessions handed over; returns the number of alerts updated. Call it
/// before reading `repeats`.
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
