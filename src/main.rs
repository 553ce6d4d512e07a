//! `uncorreo`: the appliance's command line. `uncorreo` alone (or `uncorreo
//! serve`) runs the server with embedded defaults; `uncorreo admin …` acts
//! on a stopped server's data directory.

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
    /// Operator actions on the data directory (the server must be stopped:
    /// they open storage themselves and refuse a directory a server holds).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users and their API keys.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user subscribed to a plan, with one API key (printed once).
    Create {
        /// Plan name, as in `[plans.NAME]`.
        #[arg(long)]
        plan: String,
        /// Display name or e-mail.
        #[arg(long, default_value = "")]
        name: String,
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
        Command::Admin {
            action:
                AdminCommand::User {
                    action: UserCommand::Create { plan, name, config },
                },
        } => admin_user_create(config, &plan, &name),
    }
}

fn admin_user_create(config_file: Option<PathBuf>, plan: &str, name: &str) -> anyhow::Result<()> {
    let config =
        Config::load(config_file.as_deref(), std::env::vars()).context("loading configuration")?;
    uncorreo_api::plans::validate(&config.plans, &config.limits).context("checking [plans]")?;
    let data_dir = config.engine.data_dir.clone();
    let engine = match uncorreo_engine::Engine::open(config.engine.clone()) {
        Ok(e) => e,
        Err(uncorreo_engine::OpenError::Locked(dir)) => anyhow::bail!(
            "data directory {} is locked by a running server; stop it first \
             (or create keys over HTTP with POST /api/v1/keys)",
            dir.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("opening storage in {}", data_dir.display()))
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let created = rt.block_on(uncorreo_api::admin::create_user(
        &engine,
        &config.plans,
        name,
        plan,
    ));
    engine.shutdown();
    let created = created?;
    eprintln!(
        "created user {} ({:?}) on plan {plan:?}; the key below is shown only now",
        created.user.id.0, created.user.name
    );
    println!("{}", created.key);
    Ok(())
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
