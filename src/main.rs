//! `uncorreo`: the appliance's command line. `uncorreo` alone (or `uncorreo
//! serve`) runs the server with embedded defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use uncorreo::{Appliance, Config};

#[derive(Parser)]
#[command(
    version,
    about = "Disposable inboxes: SMTP and SES in, REST/WebSocket/MCP out"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance (the default).
    Serve {
        /// TOML configuration file; environment variables UNCORREO__SECTION__KEY override it.
        #[arg(long, env = "UNCORREO_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
    }
}

fn serve(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let config =
        Config::load(config_file.as_deref(), std::env::vars()).context("loading configuration")?;
    let appliance = Appliance::start(config).context("starting uncorreo")?;
    // Print the bound addresses on stdout so scripts (and the kill tests) can
    // find ports chosen by the kernel.
    println!("smtp {}", appliance.smtp_addr);
    println!("http {}", appliance.http_addr);
    let token = appliance.shutdown_token();
    let signals = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || wait_for_signal(token))
        .context("spawning the signal thread")?;
    appliance.wait();
    drop(signals);
    tracing::info!("uncorreo stopped");
    Ok(())
}

fn wait_for_signal(token: tokio_util::sync::CancellationToken) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: no new connections, finishing open ones");
        token.cancel();
    });
}
