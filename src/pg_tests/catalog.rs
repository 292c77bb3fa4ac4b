//! The catalog pg_cep installs: every function has a comment.

#[pgrx::pg_schema]
mod tests {
    use super::super::helpers::*;
    use pgrx::prelude::*;

    /// `\df+` explains every function: each one in schema cep has a comment.
    #[pg_test]
    fn every_function_has_a_comment() {
        let missing = one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p \
             WHERE p.pronamespace = 'cep'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL",
        );
        assert_eq!(missing, None, "functions without a comment");
        assert!(one::<String>("SELECT obj_description('cep.watch'::regproc, 'pg_proc')").unwrap().starts_with("Watches a table"));
    }
}
