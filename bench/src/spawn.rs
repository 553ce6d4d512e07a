//! `--spawn`: build (if needed) and start the `uncorreo` binary on a temporary
//! data dir with a generated config holding a `bench` plan with big quotas,
//! create a user with `uncorreo admin user create`, and stop it afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How to start the server.
#[derive(Debug, Clone, clap::Args)]
pub struct SpawnArgs {
    /// The `uncorreo` binary; by default `cargo build --release --bin uncorreo`
    /// is run in this workspace and target/release/uncorreo used.
    #[arg(long)]
    pub uncorreo_bin: Option<PathBuf>,
    /// `cores` for the spawned server (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub cores: usize,
    /// `[engine] durability`: `always` or `never_unsafe_for_load_tests`.
    #[arg(long, default_value = "always")]
    pub durability: String,
    /// Parent of the temporary data dir (its filesystem is what is measured).
    #[arg(long)]
    pub data_parent: Option<PathBuf>,
    /// Keep the data dir and server log after the run.
    #[arg(long)]
    pub keep_data: bool,
    /// Extra `KEY=VALUE` environment for the server (e.g. UNCORREO__ENGINE__SHARDS=2).
    #[arg(long = "server-env")]
    pub server_env: Vec<String>,
    /// Mail domain: the spawned server accepts it; without the API, recipients use it.
    #[arg(long, default_value = "bench.test")]
    pub domain: String,
}

/// A running spawned server.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub smtp: String,
    pub http: String,
    pub api_key: String,
    pub data_dir: PathBuf,
    dir: Option<tempfile::TempDir>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn locate_binary(args: &SpawnArgs) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.uncorreo_bin {
        return Ok(b.clone());
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building the server: cargo build --release --bin uncorreo");
    let status = std::process::Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "uncorreo", "--bin", "uncorreo"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --bin uncorreo failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("uncorreo"))
}

/// The generated configuration: loopback on port 0, durability as asked, a
/// `bench` plan large enough for every benchmark here.
pub fn config_text(data_dir: &Path, args: &SpawnArgs) -> String {
    format!(
        r#"cores = {cores}

[engine]
data_dir = "{data}"
domains = ["{domain}"]
durability = "{durability}"
# Benchmarks run on shared disks; the free-space floor is not what is measured.
min_free_bytes = 0
# 10k idle subscribers and 10k bursts must not be cut off as slow.
subscriber_queue = 65536
queue_depth = 65536

[smtp]
listen = "127.0.0.1:0"
# `fleet -n 1000` opens 1,000 SMTP sessions at once, all from 127.0.0.1.
max_connections_per_ip = 100000
max_connections = 100000

[http]
listen = "127.0.0.1:0"
# Every bench client is 127.0.0.1 (10k WebSockets in ws-idle).
max_connections_per_ip = 100000
max_connections = 100000

[plans.bench]
max_mailboxes = 1000000
max_messages_per_mailbox = 1000000
max_ttl_minutes = 1440
requests_per_minute = 4000000000

[limits]
# If `uncorreo admin` is unavailable the bench uses anonymous mailboxes; they
# get the bench plan too (loopback-only benchmark server).
anonymous_plan = "bench"
# Every bench client comes from 127.0.0.1 (10k WebSocket upgrades in ws-idle).
ip_requests_per_minute = 4000000000
# `read` lists a 1,000-message mailbox in one page.
max_page = 1000

[realtime]
# ws-idle holds 10k subscribers, 100+ per mailbox.
max_subscribers_per_mailbox = 100000
max_subscribers = 100000
"#,
        cores = args.cores,
        data = data_dir.display(),
        domain = args.domain,
        durability = args.durability,
    )
}

/// Find `uct_…` in the admin command's output.
pub fn parse_api_key(out: &str) -> Option<String> {
    let start = out.find("uct_")?;
    let key: String = out[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (key.len() > 4).then_some(key)
}

impl Server {
    pub async fn start(args: &SpawnArgs) -> anyhow::Result<Self> {
        let bin = locate_binary(args)?;
        let parent = args.data_parent.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("uncorreo-bench-")
            .tempdir_in(&parent)
            .with_context(|| format!("temp dir in {}", parent.display()))?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let config = dir.path().join("uncorreo.toml");
        std::fs::write(&config, config_text(&data_dir, args))?;
        let env: Vec<(String, String)> = args
            .server_env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();

        let out = Command::new(&bin)
            .args(["admin", "user", "create", "--plan", "bench", "--config"])
            .arg(&config)
            .envs(env.iter().cloned())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .with_context(|| format!("running {} admin user create", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let api_key = match (out.status.success(), parse_api_key(&stdout)) {
            (true, Some(k)) => k,
            _ => {
                // Without the admin command, fall back to anonymous mailboxes:
                // the generated config gives the anonymous plan the same quotas.
                eprintln!(
                    "warning: `uncorreo admin user create --plan bench` failed ({}): {}{}\n\
                     continuing with anonymous mailboxes (session tokens)",
                    out.status,
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                String::new()
            }
        };

        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .envs(env)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let pid = child.id().context("server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut smtp, mut http) = (None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while smtp.is_none() || http.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .context("server did not print its addresses within 60 s")??;
            let Some(line) = line else {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                bail!("server exited before printing its addresses:\n{log}");
            };
            if let Some(a) = line.strip_prefix("smtp ") {
                smtp = Some(a.trim().to_owned());
            } else if let Some(a) = line.strip_prefix("http ") {
                http = Some(a.trim().to_owned());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (Some(smtp), Some(http)) = (smtp, http) else {
            bail!("server addresses missing");
        };
        Ok(Self {
            child,
            pid,
            smtp,
            http,
            api_key,
            data_dir,
            dir: Some(dir),
        })
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL.
    pub async fn stop(mut self, keep: bool) {
        terminate(self.pid);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if keep {
            if let Some(d) = self.dir.take() {
                eprintln!("kept {}", d.keep().display());
            }
        }
    }
}

fn terminate(pid: u32) {
    // std can only SIGKILL a child; SIGTERM lets the server shut down cleanly,
    // and the `kill` command sends it without any unsafe code here.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// The resident set size of `pid` in KiB (VmRSS), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft open-files limit of `pid`, if readable.
pub fn nofile_limit(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_found_in_admin_output() {
        assert_eq!(
            parse_api_key("user 1 created\napi key: uct_AbC-_09xyz\n").as_deref(),
            Some("uct_AbC-_09xyz")
        );
        assert_eq!(parse_api_key("no key"), None);
    }
}
