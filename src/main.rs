//! `uncorreo`: the appliance's command line. `uncorreo` alone (or `uncorreo
//! serve`) runs the server with embedded defaults; `uncorreo admin …` acts
//! on a stopped server's data directory.

use std::path::{Path, PathBuf};

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
    /// SES → SNS webhook tools.
    Sns {
        #[command(subcommand)]
        command: SnsCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Speak MCP on stdin/stdout for an agent host, bridged to a running
    /// appliance's `/mcp` (logs go to stderr).
    Mcp {
        /// The appliance's base URL.
        #[arg(long, env = "UNCORREO_URL", default_value = uncorreo_mcp::bridge::DEFAULT_URL)]
        url: String,
        /// Act as this user (`uct_…`); anonymous when unset.
        #[arg(long, env = "UNCORREO_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the embedded defaults as TOML (a complete starting file).
    Defaults,
    /// Load a file (plus UNCORREO__ environment overrides) and print the
    /// effective configuration, or the first error, naming the key.
    Check {
        /// TOML configuration file.
        file: PathBuf,
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

#[derive(Subcommand)]
enum SnsCommand {
    /// Check an SNS message offline: prints "valid" and exits 0, or exits
    /// non-zero with the reason (bad signature, unsupported version, bad
    /// certificate URL host, malformed JSON, expired certificate, ...).
    Verify {
        /// The signing certificate (PEM) that the message's SigningCertURL serves.
        #[arg(long)]
        cert: PathBuf,
        /// The SNS message: the JSON body SNS posts.
        message: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Some(Command::Mcp { .. }) = &cli.command {
        // stdout carries the protocol; nothing else may be written there.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::Mcp { url, api_key } => mcp_bridge(&url, api_key),
        Command::Admin {
            action:
                AdminCommand::User {
                    action: UserCommand::Create { plan, name, config },
                },
        } => admin_user_create(config, &plan, &name),
        Command::Config {
            command: ConfigCommand::Defaults,
        } => print_config(&Config::default()),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::load(Some(&file), std::env::vars())
                .with_context(|| format!("checking {}", file.display()))?;
            print_config(&config)
        }
        Command::Sns {
            command: SnsCommand::Verify { cert, message },
        } => sns_verify(&cert, &message),
    }
}

/// Largest SNS message file `sns verify` reads (SNS messages are ≤ 256 KiB).
const MAX_SNS_MESSAGE_FILE: u64 = 1024 * 1024;

fn sns_verify(cert: &Path, message: &Path) -> anyhow::Result<()> {
    use uncorreo_ses::{verify::SigningCert, SnsMessage};
    let pem = read_capped(cert, uncorreo_ses::verify::MAX_CERT_PEM_BYTES as u64)?;
    let body = read_capped(message, MAX_SNS_MESSAGE_FILE)?;
    let msg = SnsMessage::from_json(&body).map_err(|e| {
        anyhow::anyhow!(
            "{}: malformed JSON, not an SNS message: {e}",
            message.display()
        )
    })?;
    uncorreo_ses::verify(&msg, &pem).map_err(|e| anyhow::anyhow!("invalid SNS message: {e}"))?;
    // `verify` is clock-free; a person checking a message also wants to know
    // whether the webhook would accept the certificate today.
    let parsed =
        SigningCert::from_pem(&pem).map_err(|e| anyhow::anyhow!("invalid SNS message: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if !parsed.valid_at(now) {
        anyhow::bail!(
            "invalid SNS message: the certificate is expired or not yet valid (valid from {} to {} unix time)",
            parsed.not_before_secs,
            parsed.not_after_secs
        );
    }
    println!("valid");
    Ok(())
}

fn read_capped(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > max {
        anyhow::bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(buf)
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

fn mcp_bridge(url: &str, api_key: Option<String>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime
        .block_on(uncorreo_mcp::bridge::run(url, api_key))
        .context("MCP bridge")
}

fn print_config(config: &Config) -> anyhow::Result<()> {
    print!(
        "{}",
        toml::to_string_pretty(config).context("rendering the configuration")?
    );
    Ok(())
}
