//! What the monitor counts per watched table, for `cep.stats()`.

/// Counters for one table. Plain numbers, so the same struct lives in shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorCounters {
    pub rows_seen: u64,
    pub alerts: u64,
    pub notifications: u64,
    pub rows_blocked: u64,
    pub rule_errors: u64,
    pub total_micros: u64,
    /// The longest single trigger call.
    pub max_micros: u64,
    /// Partial matches of the table's live patterns dropped by `max_partials` (each flags the
    /// key's next matches `dropped_partials`).
    pub partials_dropped: u64,
}

impl MonitorCounters {
    pub const ZERO: MonitorCounters = MonitorCounters {
        rows_seen: 0,
        alerts: 0,
        notifications: 0,
        rows_blocked: 0,
        rule_errors: 0,
        total_micros: 0,
        max_micros: 0,
        partials_dropped: 0,
    };

    /// Adds one trigger call's counts; its time is both added and compared with the maximum.
    pub fn add(&mut self, call: &MonitorCounters) {
        self.rows_seen += call.rows_seen;
        self.alerts += call.alerts;
        self.notifications += call.notifications;
        self.rows_blocked += call.rows_blocked;
        self.rule_errors += call.rule_errors;
        self.total_micros += call.total_micros;
        self.partials_dropped += call.partials_dropped;
        self.max_micros = self.max_micros.max(call.max_micros.max(call.total_micros));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sums_counts_and_keeps_the_longest_call() {
        let mut c = MonitorCounters::ZERO;
        c.add(&MonitorCounters { rows_seen: 10, alerts: 1, notifications: 1, total_micros: 300, ..Default::default() });
        c.add(&MonitorCounters { rows_seen: 1, rule_errors: 2, rows_blocked: 1, total_micros: 50, ..Default::default() });
        c.add(&MonitorCounters { partials_dropped: 3, ..Default::default() });
        assert_eq!(
            c,
            MonitorCounters {
                rows_seen: 11,
                alerts: 1,
                notifications: 1,
                rows_blocked: 1,
                rule_errors: 2,
                total_micros: 350,
                max_micros: 300,
                partials_dropped: 3
            }
        );
    }
}
