//! `kubectl-gpufed`: found on PATH by kubectl and run as `kubectl gpufed …`. Parses the command
//! line, runs it, prints the result or one line `error: …` and exits non-zero on failure.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use kubectl_gpufed::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    kubectl_gpufed::install_crypto();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(kubectl_gpufed::Error::Runtime)
        .and_then(|rt| rt.block_on(kubectl_gpufed::run(cli)));
    match result {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}
