//! Who may change what pg_cep does with a table, and as whom maintenance runs.
//!
//! Configuring a table (watching, capturing, matching patterns on it, managing its partitions)
//! changes what happens on every write to it and can move or drop its rows, so only its owner (or
//! a member of the owner's role, or a superuser) may do it, as only they may ALTER it. Maintenance
//! runs each table's DDL and row moves as that owner, restricted as VACUUM and REINDEX restrict
//! themselves, so that a function of the owner's (a CHECK, a default, a trigger) never runs with the
//! privileges of whoever started maintenance.

use pgrx::prelude::*;

use crate::error::{CepError, CepResult};

/// Refuses unless the current user owns `relid` (or is a member of its owner role); `action`
/// names the function, for the message.
pub fn require_owner(relid: pg_sys::Oid, action: &str) -> CepResult<()> {
    let row = Spi::get_two_with_args::<bool, String>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE'), pg_catalog.format('%I.%I', n.nspname, c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[relid.into()],
    );
    match row {
        Ok((Some(true), _)) => Ok(()),
        Ok((_, Some(name))) => Err(CepError::NotOwner(format!(
            "permission denied: {action} changes how {name} is processed, and only its owner may do that (must be owner of table {name})"
        ))),
        Ok((_, None)) => Err(CepError::WrongObjectType(format!("relation with OID {} does not exist", u32::from(relid)))),
        Err(pgrx::spi::SpiError::InvalidPosition) => {
            Err(CepError::WrongObjectType(format!("relation with OID {} does not exist", u32::from(relid))))
        }
        Err(e) => Err(e.into()),
    }
}

/// As [`require_owner`], but a relation that no longer exists passes: removing the configuration
/// of a dropped table is cleanup, not a change to anyone's table.
pub fn require_owner_if_exists(relid: pg_sys::Oid, action: &str) -> CepResult<()> {
    match require_owner(relid, action) {
        Err(CepError::WrongObjectType(_)) => Ok(()),
        other => other,
    }
}

/// Runs `body` as `owner`, with `SECURITY_RESTRICTED_OPERATION` and a GUC nest level, as VACUUM
/// and REINDEX run a table's own code: a function of the owner's that runs inside (a CHECK, a
/// default, a trigger of the table) has the owner's rights, cannot change the session's role,
/// and cannot leave a setting behind.
pub fn as_owner<T>(owner: pg_sys::Oid, body: impl FnOnce() -> T) -> T {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: reads the backend's current user and security context into locals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    let restricted = saved_context
        | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
        | pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
    // SAFETY: switches user as DefineIndex does; every path below switches back, and an abort
    // of the (sub)transaction also restores the user it started with.
    let nest = unsafe {
        pg_sys::SetUserIdAndSecContext(owner, restricted);
        pg_sys::NewGUCNestLevel()
    };
    let saved_user_raw = u32::from(saved_user);
    let restore = move || unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(pg_sys::Oid::from(saved_user_raw), saved_context);
    };
    let result = pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(body))
        .catch_others(move |error| {
            restore();
            error.rethrow()
        })
        .execute();
    restore();
    result
}
