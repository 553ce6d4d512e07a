//! `uncorreo`: the appliance's command line. `uncorreo` alone (or `uncorreo
//! serve`) runs the server with embedded defaults.

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
    /// SES → SNS webhook tools.
    Sns {
        #[command(subcommand)]
        command: SnsCommand,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::Sns {
            command: SnsCommand::Verify { cert, message },
        } => sns_verify(&cert, &message),
    }
}

/// Largest SNS message file `sns verify` reads (SNS messages are ≤ 256 KiB).
const MAX_SNS_MESSAGE_FILE: u64 = 1024 * 1024;

fn sns_verify(cert: &Path, message: &Path) -> anyhow::Result<()> {
    use uncorreo_api::sns::{self, verify::SigningCert, SnsMessage};
    let pem = read_capped(cert, sns::verify::MAX_CERT_PEM_BYTES as u64)?;
    let body = read_capped(message, MAX_SNS_MESSAGE_FILE)?;
    let msg = SnsMessage::from_json(&body).map_err(|e| {
        anyhow::anyhow!(
            "{}: malformed JSON, not an SNS message: {e}",
            message.display()
        )
    })?;
    sns::verify(&msg, &pem).map_err(|e| anyhow::anyhow!("invalid SNS message: {e}"))?;
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
