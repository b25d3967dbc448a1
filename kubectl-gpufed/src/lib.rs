//! `kubectl gpufed`, the kubectl plugin of gpufed: what a platform team or a pool admin wants to
//! see on the hub without reading YAML — capacity and prices ([`view::top`]), jobs
//! ([`view::jobs`]), member clusters ([`view::members`]), why a job waits or where it went
//! ([`view::explain`]), how a cluster owner connects a joined member ([`view::join`]) and what
//! each attempt locked and paid ([`view::payments`]); and, for a payer, [`authorise`] signs the
//! EIP-712 permit that lets the hub lock its deposit, and for a provider, [`claim`] submits the
//! hub's signed usage receipts itself; [`logs`] reads a job's container log through the hub.
//!
//! Layers: [`cli`] parses kubectl-style flags; [`connect`] loads the kubeconfig; [`fetch`] makes
//! the API calls and turns failures into one-line [`error::Error`]s with the fix; [`commands`]
//! glue fetch to the pure [`view`]s, which render tables with [`table`] and [`format`], or the
//! objects as JSON/YAML with [`output`].

pub mod authorise;
pub mod claim;
pub mod cli;
pub mod commands;
pub mod connect;
pub mod error;
pub mod fetch;
pub mod format;
pub mod logs;
pub mod open_join;
pub mod output;
pub mod table;
pub mod view;

#[cfg(test)]
mod fixtures;

pub use error::{Error, Result};

/// Makes ring the process's TLS crypto provider (kube uses rustls). Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the command of `cli` against the hub and returns what to print.
pub async fn run(cli: cli::Cli) -> Result<String> {
    use cli::Command;
    // Open joining talks to the hub's registration endpoint only: a stranger has no kubeconfig.
    if let Command::Join(args) = &cli.command
        && args.registration_url.is_some()
    {
        return open_join::run(args).await;
    }
    if let Command::Leave(args) = &cli.command {
        return open_join::leave(args).await;
    }
    let hub = connect::connect(&cli.global).await?;
    let flags = &cli.global;
    match &cli.command {
        Command::Top(args) => commands::top(&hub, flags, args).await,
        Command::Market(args) => commands::market(&hub, flags, args).await,
        Command::Jobs(args) => commands::jobs(&hub, flags, args).await,
        Command::Members(args) => commands::members(&hub, flags, args).await,
        Command::Explain(args) => commands::explain(&hub, flags, args).await,
        Command::Join(args) => commands::join(&hub, flags, args).await,
        Command::Payments(args) => commands::payments(&hub, flags, args).await,
        Command::Leave(args) => open_join::leave(args).await,
        Command::Authorise(args) => authorise::run(&hub, args).await,
        Command::Claim(args) => claim::run(&hub, args).await,
        Command::Logs(args) => logs::run(&hub, args).await,
    }
}
