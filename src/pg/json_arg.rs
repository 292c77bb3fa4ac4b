//! A `jsonb` argument parsed by pg_cep rather than while it is decoded.
//!
//! pgrx's `JsonB` parses the document as it decodes the argument, and a document nested deeper
//! than the parser's 128 levels fails there, inside pgrx, with SQLSTATE XX000. pg_cep accepts
//! conditions at most 32 levels deep, so such a document is refused anyway: `JsonArg` is the same
//! `jsonb` in SQL, and [`JsonArg::parse`] answers it with 54001 naming the parameter.

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::prelude::*;

use crate::error::{CepError, CepResult};

#[derive(Clone, Debug)]
pub struct JsonArg(String);

impl JsonArg {
    /// The document; 54001 naming `parameter` when it is nested deeper than anything pg_cep takes.
    pub fn parse(&self, parameter: &str) -> CepResult<serde_json::Value> {
        serde_json::from_str(&self.0).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                CepError::TooDeep(format!("{parameter}: nested deeper than 128 levels (conditions may nest at most 32 deep)"))
            } else {
                CepError::InvalidArgument(format!("{parameter}: {e}"))
            }
        })
    }
}

impl FromDatum for JsonArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _typoid: pg_sys::Oid) -> Option<JsonArg> {
        if is_null {
            return None;
        }
        // SAFETY: a jsonb datum, detoasted and printed by Postgres's own output function.
        unsafe {
            let detoasted = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let text = pgrx::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(pg_sys::Datum::from(detoasted))])?;
            let owned = text.to_string_lossy().into_owned();
            pg_sys::pfree(text.as_ptr() as *mut std::ffi::c_void);
            Some(JsonArg(owned))
        }
    }
}

// SAFETY: decoded as pgrx decodes its own argument types (`argue_from_datum!`).
unsafe impl<'fcx> ArgAbi<'fcx> for JsonArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: this call's own argument, given by pgrx; its SQL type is jsonb, which `from_datum` reads.
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: this call's own argument, given by pgrx; its SQL type is jsonb, which `from_datum` reads.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

pgrx::impl_sql_translatable!(JsonArg, "jsonb");
