//! pg_cep's triggers on users' tables, dropped quietly.

use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use crate::error::CepResult;

/// Drops those of the named triggers of `relid` that exist. `DROP TRIGGER IF EXISTS` would send
/// the user a NOTICE for each one that does not, about pg_cep's internals.
pub fn drop_triggers(client: &mut SpiClient<'_>, relid: pg_sys::Oid, names: &[&str]) -> CepResult<()> {
    let ddl: Option<String> = client
        .select(
            "SELECT string_agg(format('DROP TRIGGER %I ON %s', t.tgname, $1::regclass), '; ' ORDER BY t.tgname)
             FROM pg_catalog.pg_trigger t WHERE t.tgrelid = $1 AND t.tgname = ANY ($2) AND NOT t.tgisinternal",
            None,
            &[relid.into(), names.to_vec().into()],
        )?
        .first()
        .get_one()?;
    if let Some(ddl) = ddl {
        client.update(ddl.as_str(), None, &[])?;
    }
    Ok(())
}
