//! `uncorreo`: the appliance's command line. `uncorreo` alone (or `uncorreo
//! serve`) runs the server with embedded defaults; `uncorreo admin …` asks
//! a running server over its operator socket, or opens the data directory
//! itself when no server runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Operator actions: sent to the running server over its operator socket
    /// (no downtime); with no server running, done on the data directory.
    Admin {
        /// TOML configuration file; environment variables UNCORREO__SECTION__KEY override it.
        #[arg(long, env = "UNCORREO_CONFIG", global = true)]
        config: Option<PathBuf>,
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
    /// Users.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// Mailboxes.
    Mailbox {
        #[command(subcommand)]
        action: MailboxCommand,
    },
    /// Storage and fan-out numbers.
    Stats,
    /// The newest operator actions (who, what, when).
    Audit,
    /// Write a consistent snapshot of the log into DEST (new or empty), while
    /// the server keeps serving. Restore = start a server on the copy.
    Backup {
        /// Destination directory; the server writes it, so it must be
        /// writable by the service user.
        dest: PathBuf,
    },
    /// With `[cluster]`: this host's place in the cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterCommand,
    },
    /// Check a data directory or a backup offline: every checksum, every
    /// hint, and the index rebuilt from the records. Exits non-zero on any problem.
    Verify {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Hand every partition homed on this host over to another live host
    /// (its mailboxes copied with their ids, then served there), one
    /// partition at a time; mail for a partition gets 451 while it moves.
    /// Needs the running server. Homes are sticky: a plain stop or restart
    /// never moves them.
    Leave {
        /// The destination's node id; by default the first other live host
        /// (by node id) that answers on its hop.
        #[arg(long)]
        to: Option<String>,
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
    },
    /// Every user.
    List,
    /// One user: plan, subscriptions, keys, mailboxes.
    Show {
        /// User id.
        user: u64,
    },
    /// Put a user on PLAN from now on (earlier subscriptions end now).
    SetPlan {
        /// User id.
        user: u64,
        /// Plan name.
        plan: String,
    },
    /// Disable a user: every key revoked, no new ones.
    Disable {
        /// User id.
        user: u64,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Mint another API key for a user (printed once).
    Create {
        /// User id.
        #[arg(long)]
        user: u64,
    },
    /// A user's keys (display prefixes, never the keys).
    List {
        /// User id.
        #[arg(long)]
        user: u64,
    },
    /// Revoke a key; the next request with it gets 401.
    Revoke {
        /// Key id (from `key list`).
        key: u64,
    },
}

#[derive(Subcommand)]
enum MailboxCommand {
    /// Live mailboxes, all or one user's.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<u64>,
    },
    /// One mailbox.
    Show {
        /// Its address.
        address: String,
    },
    /// Delete a mailbox by address, or every mailbox of --user.
    Delete {
        /// Its address.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        address: Option<String>,
        /// Every mailbox of this user.
        #[arg(long)]
        user: Option<u64>,
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
        Command::Admin { config, action } => admin(config, action),
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

fn admin(config_file: Option<PathBuf>, action: AdminCommand) -> anyhow::Result<()> {
    use uncorreo_api::admin::AdminRequest as R;
    let config =
        Config::load(config_file.as_deref(), std::env::vars()).context("loading configuration")?;
    uncorreo_api::plans::validate(&config.plans, &config.limits).context("checking [plans]")?;
    let request = match action {
        AdminCommand::Verify { dir } => return admin_verify(&dir),
        AdminCommand::User { action } => match action {
            UserCommand::Create { plan, name } => R::UserCreate { plan, name },
            UserCommand::List => R::UserList,
            UserCommand::Show { user } => R::UserShow { user },
            UserCommand::SetPlan { user, plan } => R::UserSetPlan { user, plan },
            UserCommand::Disable { user } => R::UserDisable { user },
        },
        AdminCommand::Key { action } => match action {
            KeyCommand::Create { user } => R::KeyCreate { user },
            KeyCommand::List { user } => R::KeyList { user },
            KeyCommand::Revoke { key } => R::KeyRevoke { key },
        },
        AdminCommand::Mailbox { action } => match action {
            MailboxCommand::List { user } => R::MailboxList { user },
            MailboxCommand::Show { address } => R::MailboxShow { address },
            MailboxCommand::Delete { address, user } => R::MailboxDelete { address, user },
        },
        AdminCommand::Cluster { action } => match action {
            ClusterCommand::Leave { to } => R::ClusterLeave { to },
        },
        AdminCommand::Stats => R::Stats,
        AdminCommand::Audit => R::Audit,
        AdminCommand::Backup { dest } => R::Backup {
            // The server resolves nothing relative to our working directory.
            dest: std::path::absolute(&dest)
                .with_context(|| format!("resolving {}", dest.display()))?,
        },
    };
    let shows_key = matches!(request, R::UserCreate { .. } | R::KeyCreate { .. });
    let envelope = uncorreo_api::operator::Envelope {
        operator: operator_name(),
        request,
    };
    let socket = config.admin_socket();
    let answer = match uncorreo_api::operator::call(&socket, &envelope) {
        Ok(answer) => answer,
        Err(uncorreo_api::operator::CallError::NoServer(_)) => admin_offline(&config, envelope)?,
        Err(e) => return Err(e.into()),
    };
    match answer {
        uncorreo_api::operator::Answer::Ok { result } => print_admin_result(&result, shows_key),
        uncorreo_api::operator::Answer::Error { code, message } => {
            anyhow::bail!("{message} ({code})")
        }
    }
}

/// Who runs the CLI, as the audit trail shows it next to the uid.
fn operator_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_default()
}

/// No server answers: do the action on the data directory ourselves.
fn admin_offline(
    config: &Config,
    envelope: uncorreo_api::operator::Envelope,
) -> anyhow::Result<uncorreo_api::operator::Answer> {
    use std::os::unix::fs::MetadataExt;
    let data_dir = config.engine.data_dir.clone();
    let engine = match uncorreo_engine::Engine::open(config.engine.clone()) {
        Ok(e) => e,
        Err(uncorreo_engine::OpenError::Locked(dir)) => anyhow::bail!(
            "data directory {} is locked by a running server, but nothing answers on its \
             operator socket {}; give `uncorreo admin` the server's configuration ([admin] socket)",
            dir.display(),
            config.admin_socket().display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("opening storage in {}", data_dir.display()))
        }
    };
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "unknown".to_owned());
    let actor = match envelope.operator.as_str() {
        "" => format!("uid {uid} (offline)"),
        who => format!("uid {uid} ({who}, offline)"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    // In a cluster, users and keys live in its accounts bucket, not on
    // this disk: read and change them there (NATS must answer).
    let stop = tokio_util::sync::CancellationToken::new();
    let (accounts, follower): (Arc<dyn uncorreo_api::accounts::Accounts>, _) = match &config.cluster
    {
        Some(cluster) => {
            let (accounts, thread) = uncorreo::accounts::start(
                &cluster.nats_url,
                &cluster.node_id,
                std::time::Duration::from_secs(cluster.hop_timeout_secs),
                engine.clone(),
                stop.clone(),
            )
            .context("reading the cluster's accounts")?;
            (accounts, Some(thread))
        }
        None => (
            Arc::new(uncorreo_api::accounts::EngineAccounts(engine.clone())),
            None,
        ),
    };
    let ctx = uncorreo_api::admin::AdminContext {
        engine: &engine,
        accounts: accounts.as_ref(),
        plans: &config.plans,
        limits: &config.limits,
        actor,
        cluster: None,
    };
    let done = rt.block_on(uncorreo_api::admin::execute(&ctx, envelope.request));
    stop.cancel();
    if let Some(follower) = follower {
        let _ = follower.join();
    }
    engine.shutdown();
    Ok(match done {
        Ok(result) => uncorreo_api::operator::Answer::Ok { result },
        Err(e) => uncorreo_api::operator::Answer::Error {
            code: e.code().to_owned(),
            message: e.to_string(),
        },
    })
}

/// JSON on stdout; a freshly minted key alone on the last line, so scripts
/// can take it with `tail -n1`.
fn print_admin_result(result: &serde_json::Value, shows_key: bool) -> anyhow::Result<()> {
    let key = result
        .get("key")
        .and_then(|k| k.as_str())
        .filter(|_| shows_key);
    if let Some(key) = key {
        let mut shown = result.clone();
        if let Some(o) = shown.as_object_mut() {
            o.remove("key");
        }
        eprintln!(
            "{}\nthe key below is shown only now",
            serde_json::to_string_pretty(&shown)?
        );
        println!("{key}");
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(result)?);
    Ok(())
}

fn admin_verify(dir: &Path) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let r = uncorreo_engine::verify(dir, now)
        .with_context(|| format!("verifying {}", dir.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "dir": dir.display().to_string(),
            "shards": r.shards,
            "segments": r.segments,
            "records": r.records,
            "batches": r.batches,
            "hints_ok": r.hints_ok,
            "mailboxes": r.mailboxes,
            "messages": r.messages,
            "users": r.users,
            "api_keys": r.api_keys,
            "problems": r.problems,
        }))?
    );
    if !r.ok() {
        anyhow::bail!("{} problem(s) in {}", r.problems.len(), dir.display());
    }
    eprintln!("ok: every checksum matches and the index rebuilds");
    Ok(())
}

/// Blocks from this size up (message bodies) are mapped and unmapped on
/// their own, so memory freed after a delivery goes back to the system
/// (`uncorreo_engine::set_mmap_threshold`). Measured with 32 sessions ×
/// 3 MiB against an 8 MiB budget
/// (`the_binary_stays_within_the_budget_plus_a_fixed_margin_under_many_large_bodies`):
/// peak RSS 37 MiB above idle with glibc's default, 16-18 MiB with this.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

fn serve(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    if !uncorreo_engine::set_mmap_threshold(MMAP_THRESHOLD_BYTES) {
        tracing::warn!("could not set the malloc mmap threshold; freed bodies may stay resident");
    }
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
