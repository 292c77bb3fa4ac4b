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
        Err(pgrx::spi::SpiError::InvalidPosition) => Err(CepError::WrongObjectType(format!("relation with OID {} does not exist", u32::from(relid)))),
        Err(e) => Err(e.into()),
    }
}

/// Refuses unless the current user may SELECT `relid`: scoring from SQL reads the table's history
/// with its owner's rights (see [`as_table_owner`]), so the caller must be one who could read it.
pub fn require_select(relid: pg_sys::Oid, name: &str, action: &str) -> CepResult<()> {
    // SAFETY: a catalog lookup of a relation the caller resolved.
    let allowed =
        unsafe { pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) } == pg_sys::AclResult::ACLCHECK_OK;
    if allowed {
        Ok(())
    } else {
        Err(CepError::NotOwner(format!("permission denied for table {name}: {action} reads its rows, and needs SELECT on it")))
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
    /// Undoes the settings the body made, on return and on unwind.
    struct RestoreSettings(i32);
    impl Drop for RestoreSettings {
        fn drop(&mut self) {
            // SAFETY: closes the nest level opened below, as fmgr does for a `SET` clause.
            unsafe { pg_sys::AtEOXact_GUC(false, self.0) };
        }
    }
    // As DefineIndex does: the user switched first, the settings' nest level inside it.
    run_as(owner, pg_sys::SECURITY_RESTRICTED_OPERATION as i32, || {
        // SAFETY: opens a nest level that the guard closes on every path.
        let _settings = RestoreSettings(unsafe { pg_sys::NewGUCNestLevel() });
        body()
    })
}

/// Runs `body` with the search path `pg_catalog, pg_temp` (on 15, `pg_catalog` alone: see below),
/// as the `SET search_path` of every other pg_cep function does. pg_cep's trigger functions pin it here instead: a `SET` clause costs
/// a watched table's single-row INSERT about a tenth of its rate (the setting is parsed, applied,
/// and the caller's path looked up again on every call), an override only swaps a list. An ERROR
/// inside needs no cleanup: the (sub)transaction's abort drops the override. The override leaves
/// the session's temporary schema out: with `addTemp` it would be searched first, before
/// `pg_catalog`, for relations and types, and a temporary type named `text`, with a cast to it,
/// would run the session's code inside pg_cep's SQL (which runs as the extension's owner). pg_cep
/// names every table it reads with its schema.
#[cfg(feature = "pg15")]
pub fn with_pinned_search_path<T>(body: impl FnOnce() -> T) -> T {
    let mut path = pg_sys::OverrideSearchPath { schemas: std::ptr::null_mut(), addCatalog: true, addTemp: false, generation: 0 };
    // SAFETY: the path is copied by Postgres; pushed and popped at the same transaction nest level
    // (the body ends every subtransaction it starts).
    unsafe { pg_sys::PushOverrideSearchPath(&mut path) };
    let result = body();
    // SAFETY: pops the entry pushed above.
    unsafe { pg_sys::PopOverrideSearchPath() };
    result
}

/// PostgreSQL 17 removed search path overrides (and caches search paths, so that a setting is
/// cheap): on 18 the same through the setting, as a `SET` clause does.
#[cfg(not(feature = "pg15"))]
pub fn with_pinned_search_path<T>(body: impl FnOnce() -> T) -> T {
    // SAFETY: a GUC nest level opened and closed around the body, as fmgr does for `SET`.
    let nest = unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest
    };
    let result = body();
    // SAFETY: closes the nest level opened above.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    result
}

thread_local! {
    static EXTENSION_OWNER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
}

/// The role that installed pg_cep (the owner of the extension and of its tables).
pub fn extension_owner() -> pg_sys::Oid {
    if let Some(owner) = EXTENSION_OWNER.with(|o| o.get()) {
        return owner;
    }
    let owner = Spi::get_one::<pg_sys::Oid>("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_cep'").ok().flatten();
    // Only a found owner is kept: inside CREATE EXTENSION it may not be visible yet.
    if let Some(owner) = owner {
        EXTENSION_OWNER.with(|o| o.set(Some(owner)));
    }
    // SAFETY: plain read of the backend's current user.
    owner.unwrap_or_else(|| unsafe { pg_sys::GetUserId() })
}

/// Restores the user and security context saved by [`run_as`], on return and on unwind.
struct RestoreUser {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for RestoreUser {
    fn drop(&mut self) {
        // SAFETY: puts back what GetUserIdAndSecContext returned before the switch.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs `body` (reads and writes of pg_cep's own tables, nothing else) as the extension's owner,
/// as Postgres's foreign-key triggers run their checks as the table's owner. So a writer of a
/// watched table needs no grant on `cep.alerts`, `cep.change_log` or the configuration to have its
/// rows scored and recorded, and a table owner configures pg_cep without grants on the
/// configuration tables (after [`require_owner`]): nobody is given a right to write those tables
/// directly, so nobody can forge another table's alerts, changes or matches. Only SQL over
/// pg_cep's tables, with bound values, may run inside: the writer's own table is read as the writer.
pub fn as_extension_owner<T>(body: impl FnOnce() -> T) -> T {
    run_as(extension_owner(), 0, body)
}

/// Runs `body` (a read of a watched table's history, for scoring) as the table's owner, as a
/// foreign-key check reads the referenced table as its owner: a writer allowed only to INSERT
/// gets its rows scored, and row security the owner set up does not hide history from the
/// monitor (`SECURITY_NOFORCE_RLS`). Only code of the owner's own table can run inside.
pub fn as_table_owner<T>(owner: pg_sys::Oid, body: impl FnOnce() -> T) -> T {
    if owner == pg_sys::InvalidOid {
        return body();
    }
    run_as(owner, pg_sys::SECURITY_NOFORCE_RLS as i32, body)
}

fn run_as<T>(role: pg_sys::Oid, flags: i32, body: impl FnOnce() -> T) -> T {
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: reads the backend's current user and security context into locals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    if user == role && flags & !context == 0 {
        return body();
    }
    let _restore = RestoreUser { user, context };
    // SAFETY: as ri_PerformCheck does; the guard switches back on every path (return or unwind),
    // and an abort of the (sub)transaction restores the user it started with.
    unsafe { pg_sys::SetUserIdAndSecContext(role, context | flags | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32) };
    body()
}
