//! The `pg_cep-bridge` binary: reads its configuration and runs the bridge until Ctrl-C.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match pg_cep_bridge::Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match pg_cep_bridge::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_cep-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
