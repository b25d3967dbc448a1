//! `gpufed-operator`: parse the command line, set up logging, run the chosen mode.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = gpufed_operator::cli::Cli::parse();
    gpufed_operator::telemetry::init(cli.log_format)?;
    gpufed_operator::run(cli).await?;
    Ok(())
}
