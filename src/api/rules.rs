//! `cep.validate_rule`, and the triggers that keep `cep.risk_rules` valid and the caches fresh.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::engine::rules::validate_rule as check;
use crate::error::OrReport;
use crate::pg::json_arg::JsonArg;

/// Checks a rule without writing it, with the verdict a write to `cep.risk_rules` would get:
/// the same error and SQLSTATE when it is malformed, the normalised condition when it is not.
///
/// ```sql
/// SELECT cep.validate_rule('{"rule_type": "threshold", "risk_score": 0.8,
///   "rule_condition": {"metric": "transaction_count", "operator": ">", "value": 10, "window": "1_hour"}}');
/// ```
#[pg_extern(immutable, parallel_safe, strict)]
fn validate_rule(rule: JsonArg) -> JsonB {
    JsonB(check(&rule.parse("rule").or_report()).or_report().to_json())
}

/// Statement trigger on `cep.risk_rules` and `cep.watches`: tells every backend to drop its cached
/// rules and plans. Sent at commit to others, at once to this backend; forgotten on rollback.
#[pg_trigger]
fn invalidate_cep_cache<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    // Names resolve as in every pg_cep function (see privileges::with_pinned_search_path).
    crate::pg::privileges::with_pinned_search_path(|| {
        let relid = trigger.relid()?;
        // SAFETY: a plain catalog call on a relation this trigger fires for.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
        Ok(None)
    })
}
