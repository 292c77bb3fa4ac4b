//! Domain errors, turned into `ereport` with a SQLSTATE only at the SQL boundary.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::engine::pattern::PatternErrorKind;
use crate::engine::rules::{RuleError, RuleErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum CepError {
    #[error("invalid rule: {0}")]
    Rule(#[from] RuleError),
    #[error("invalid pattern: {0}")]
    Pattern(#[from] crate::engine::pattern::PatternError),
    /// The table is not registered with `cep.watch`.
    #[error("{0}")]
    NotWatched(String),
    /// More than one table is watched and the call did not say which.
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    UndefinedColumn(String),
    #[error("{0}")]
    WrongColumnType(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// Not the kind of relation the function works on, such as a table that is not partitioned.
    #[error("{0}")]
    WrongObjectType(String),
    /// A partitioned table pg_cep cannot manage: not by range on one time column.
    #[error("{0}")]
    InvalidTableDefinition(String),
    /// A partition would overlap one with other bounds.
    #[error("{0}")]
    Overlap(String),
    #[error(transparent)]
    NameTooLong(#[from] crate::engine::partition::NameTooLong),
    #[error("{0}")]
    DuplicateTable(String),
    #[error("{0}")]
    DuplicateObject(String),
    /// A lock maintenance needs stayed busy for `cep.maintenance_lock_timeout`.
    #[error("{0}")]
    LockNotAvailable(String),
    /// A change log row with no value where its column requires one.
    #[error("{0}")]
    NotNull(String),
    /// An argument that would make the call allocate or work without bound; `hint` says what to
    /// ask for instead.
    #[error("{message}")]
    TooMany { message: String, hint: String },
    /// The caller may not configure this table: it is not its owner (nor a member of the owner's role).
    #[error("{0}")]
    NotOwner(String),
    /// A document nested deeper than pg_cep takes; the message names the parameter.
    #[error("{0}")]
    TooDeep(String),
    /// A table passed by OID that does not exist (any more); the message names the parameter.
    #[error("{0}")]
    UndefinedTable(String),
    /// A required argument was NULL; the message names the parameter.
    #[error("{0}")]
    NullArgument(String),
    /// Something pg_cep cannot do (a virtual generated column in a trigger's role, say).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Spi(#[from] pgrx::spi::SpiError),
    /// The monitor refused a row; `detail` holds the fired rules' evidence.
    #[error("{message}")]
    Blocked { message: String, detail: String },
}

pub type CepResult<T> = Result<T, CepError>;

impl CepError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            CepError::Rule(e) => match e.kind {
                RuleErrorKind::UnknownName => ERRCODE_INVALID_PARAMETER_VALUE,
                RuleErrorKind::Missing => ERRCODE_NULL_VALUE_NOT_ALLOWED,
                RuleErrorKind::NotANumber => ERRCODE_INVALID_TEXT_REPRESENTATION,
                RuleErrorKind::BadInterval => ERRCODE_INVALID_DATETIME_FORMAT,
                RuleErrorKind::BadTime => ERRCODE_DATETIME_FIELD_OVERFLOW,
                RuleErrorKind::BadTimeZone => ERRCODE_INVALID_TIME_ZONE_DISPLACEMENT_VALUE,
                RuleErrorKind::OutOfRange => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                RuleErrorKind::WrongShape => ERRCODE_DATATYPE_MISMATCH,
            },
            CepError::Pattern(e) => match e.kind {
                PatternErrorKind::Syntax => ERRCODE_SYNTAX_ERROR,
                PatternErrorKind::UnknownSymbol => ERRCODE_INVALID_NAME,
                PatternErrorKind::UnusedDefine => ERRCODE_UNDEFINED_OBJECT,
                PatternErrorKind::BadPredicate => ERRCODE_DATATYPE_MISMATCH,
                PatternErrorKind::BadOption => ERRCODE_INVALID_PARAMETER_VALUE,
                PatternErrorKind::TooComplex => ERRCODE_STATEMENT_TOO_COMPLEX,
                PatternErrorKind::Unsupported => ERRCODE_FEATURE_NOT_SUPPORTED,
                PatternErrorKind::SkipFailed => ERRCODE_DATA_EXCEPTION,
            },
            CepError::DuplicateObject(_) => ERRCODE_DUPLICATE_OBJECT,
            CepError::NotWatched(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            CepError::Ambiguous(_) => ERRCODE_AMBIGUOUS_PARAMETER,
            CepError::UndefinedColumn(_) => ERRCODE_UNDEFINED_COLUMN,
            CepError::WrongColumnType(_) => ERRCODE_DATATYPE_MISMATCH,
            CepError::InvalidArgument(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            CepError::WrongObjectType(_) => ERRCODE_WRONG_OBJECT_TYPE,
            CepError::InvalidTableDefinition(_) => ERRCODE_INVALID_TABLE_DEFINITION,
            CepError::Overlap(_) => ERRCODE_INVALID_OBJECT_DEFINITION,
            CepError::NameTooLong(_) => ERRCODE_NAME_TOO_LONG,
            CepError::DuplicateTable(_) => ERRCODE_DUPLICATE_TABLE,
            CepError::LockNotAvailable(_) => ERRCODE_LOCK_NOT_AVAILABLE,
            CepError::NotNull(_) => ERRCODE_NOT_NULL_VIOLATION,
            CepError::TooMany { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            CepError::NotOwner(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            CepError::UndefinedTable(_) => ERRCODE_UNDEFINED_TABLE,
            CepError::TooDeep(_) => ERRCODE_STATEMENT_TOO_COMPLEX,
            CepError::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            CepError::Unsupported(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            CepError::Spi(_) => ERRCODE_INTERNAL_ERROR,
            CepError::Blocked { .. } => ERRCODE_TRIGGERED_ACTION_EXCEPTION,
        }
    }

    /// Raises the error as a Postgres ERROR; never returns.
    pub fn report(self) -> ! {
        let message = crate::engine::bounded_message(self.to_string());
        let mut report = ErrorReport::new(self.sqlstate(), message, "pg_cep");
        if let CepError::TooMany { hint, .. } = &self {
            report = report.set_hint(hint.clone());
        }
        if let CepError::Blocked { detail, .. } = &self {
            report = report.set_detail(detail.clone()).set_hint(
                "The row was not stored; the attempt is recorded in cep.alerts (action blocked). Raise block_at with cep.alter_watch, or use on_block => 'skip' to drop such rows without failing the statement.",
            );
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// Unwraps a result at the SQL boundary, raising the error with its SQLSTATE.
pub trait OrReport<T> {
    fn or_report(self) -> T;
}

impl<T, E: Into<CepError>> OrReport<T> for Result<T, E> {
    fn or_report(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.into().report(),
        }
    }
}

/// A parameter that was SQL NULL where the function needs a value: SQLSTATE 22004, naming it.
/// Functions that take optional parameters cannot be STRICT, so they read their required ones
/// through this instead of letting pgrx refuse "argument 0" with an internal error.
pub fn required<T>(parameter: &str, value: Option<T>) -> T {
    value.unwrap_or_else(|| CepError::NullArgument(format!("{parameter} must not be NULL")).report())
}
