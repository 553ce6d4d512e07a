//! The appliance's configuration: one TOML file, every key overridable from
//! the environment, embedded defaults that serve on localhost.
//!
//! Environment overrides use `UNCORREO__` + the key path in upper case joined
//! by `__`: `UNCORREO__SMTP__LISTEN=0.0.0.0:25` sets `[smtp] listen`. The value
//! is read as a TOML value when it parses as one (numbers, booleans, arrays)
//! and as a string otherwise.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uncorreo_api::{HttpConfig, LimitsConfig, Plans};
use uncorreo_engine::EngineConfig;
use uncorreo_ses::SnsConfig;
use uncorreo_smtpd::SmtpConfig;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "UNCORREO__";

/// Everything `uncorreo serve` needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Threads serving SMTP and HTTP, one per core; 0 means one per available core.
    pub cores: usize,
    /// `[engine]`: storage.
    pub engine: EngineConfig,
    /// `[smtp]`: the SMTP listener.
    pub smtp: SmtpConfig,
    /// `[http]`: the HTTP listener and API.
    pub http: HttpConfig,
    /// `[plans.NAME]`: what each plan allows (embedded `anonymous`, `free`, `pro`).
    pub plans: Plans,
    /// `[limits]`: API bounds that are not per plan, and which plans apply by default.
    pub limits: LimitsConfig,
    /// `[realtime]`: WebSocket / SSE / long-poll pings, timeouts and subscriber limits.
    pub realtime: uncorreo_api::realtime::RealtimeConfig,
    /// `[sns]`: the SES → SNS webhook (`POST /api/v1/ses/inbound`).
    pub sns: SnsConfig,
    /// `[webhooks]`: outbound webhooks (SSRF policy, retries, timeouts, limits).
    pub webhooks: uncorreo_api::webhooks::WebhooksConfig,
    /// `[mcp]`: the MCP endpoint (`/mcp`): sessions, waits, allowed hosts.
    pub mcp: uncorreo_mcp::McpConfig,
    /// `[admin]`: the operator socket `uncorreo admin …` talks to.
    pub admin: AdminConfig,
    /// `[memory]`: the budget of bytes in flight across every ingest path.
    pub memory: MemoryConfig,
    /// `[cluster]`: membership of a multi-host cluster (SCALE.md). Absent:
    /// one host, exactly as without it.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this host's membership and internal hop (SCALE.md): the host
/// claims partition homes, holds their leases, and with `listen` forwards
/// mail for other hosts' mailboxes to them and stores what they forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server with JetStream (`nats://host:4222`).
    pub nats_url: String,
    /// This host's stable, unique id; keep it with the data directory.
    pub node_id: String,
    /// Partitions in the cluster; only read when the cluster is created,
    /// and the same on every host.
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// Lease length in seconds: how long after a host stops others may see
    /// its partitions as unserved. The host renews every third of it.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Claim every partition nobody has claimed yet, at start.
    #[serde(default = "default_claim_free")]
    pub claim_free: bool,
    /// The internal hop's listener (`ip:port`): other hosts forward
    /// deliveries for this host's mailboxes here. Absent: this host joins
    /// the cluster but neither forwards nor takes forwarded mail.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where other hosts reach `listen` (`ip:port`); by default the bound
    /// address, which must then not be a wildcard.
    #[serde(default)]
    pub advertise: Option<String>,
    /// A file holding the cluster's shared secret (at least 32 bytes;
    /// surrounding whitespace ignored). Needed with `listen`.
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
    /// How long one hop request may take, in seconds; under the SMTP DATA
    /// timeout, so a silent owner becomes `451`, not a dropped session.
    #[serde(default = "default_hop_timeout_secs")]
    pub hop_timeout_secs: u64,
    /// Internal hop connections open at once; past it `503`, closed.
    #[serde(default = "default_hop_max_connections")]
    pub hop_max_connections: usize,
}

fn default_hop_timeout_secs() -> u64 {
    30
}

fn default_hop_max_connections() -> usize {
    1024
}

fn default_partitions() -> u16 {
    uncorreo_cluster::partition::PartitionCount::DEFAULT.get()
}

fn default_lease_seconds() -> u64 {
    10
}

fn default_claim_free() -> bool {
    true
}

impl ClusterConfig {
    /// The membership settings, checked.
    pub fn member_config(&self) -> Result<uncorreo_cluster::member::MemberConfig, String> {
        let partitions = uncorreo_cluster::partition::PartitionCount::new(self.partitions)
            .ok_or_else(|| "[cluster] partitions must be at least 1".to_owned())?;
        if partitions.get() > uncorreo_engine::MAX_MAILBOX_ID_PREFIX + 1 {
            // A mailbox id carries its partition in 10 bits (FORMAT.md).
            return Err(format!(
                "[cluster] partitions = {} is more than {}",
                partitions.get(),
                uncorreo_engine::MAX_MAILBOX_ID_PREFIX + 1
            ));
        }
        let terms =
            uncorreo_cluster::member::terms_from_seconds(self.lease_seconds).map_err(|error| {
                format!("[cluster] lease_seconds = {}: {error}", self.lease_seconds)
            })?;
        if self.node_id.is_empty() {
            return Err("[cluster] node_id must not be empty".to_owned());
        }
        if self.listen.is_some() && self.secret_file.is_none() {
            return Err("[cluster] listen needs secret_file".to_owned());
        }
        if self.hop_timeout_secs == 0 || self.hop_max_connections == 0 {
            return Err(
                "[cluster] hop_timeout_secs and hop_max_connections must be at least 1".to_owned(),
            );
        }
        Ok(uncorreo_cluster::member::MemberConfig {
            nats_url: self.nats_url.clone(),
            node_id: self.node_id.clone(),
            partitions,
            terms,
            claim_free: self.claim_free,
            advertise: self.advertise.clone(),
        })
    }
}

/// `[memory]`: bounds on what requests in flight may hold in memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Bytes that message bodies being received (SMTP DATA/BDAT, SES
    /// webhook posts, HTTP sends) may hold at once, across all sessions.
    /// Past it a new body gets `452 4.3.1` (SMTP) or `503` with
    /// `Retry-After` (HTTP). 0 = a quarter of the machine's memory, between
    /// [`MIN_AUTO_IN_FLIGHT_BYTES`] and [`MAX_AUTO_IN_FLIGHT_BYTES`]
    /// ([`FALLBACK_IN_FLIGHT_BYTES`] when the memory size cannot be read).
    pub in_flight_bytes: u64,
}

/// Least budget chosen from the machine's memory (64 MiB).
pub const MIN_AUTO_IN_FLIGHT_BYTES: u64 = 64 << 20;
/// Most budget chosen from the machine's memory (16 GiB).
pub const MAX_AUTO_IN_FLIGHT_BYTES: u64 = 16 << 30;
/// The budget when `/proc/meminfo` cannot be read (512 MiB).
pub const FALLBACK_IN_FLIGHT_BYTES: u64 = 512 << 20;

impl MemoryConfig {
    /// The budget in bytes: the configured one, or one sized from
    /// `/proc/meminfo` (see [`MemoryConfig::in_flight_bytes`]).
    pub fn resolved_in_flight_bytes(&self) -> u64 {
        if self.in_flight_bytes > 0 {
            return self.in_flight_bytes;
        }
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total_bytes(&text));
        auto_in_flight_bytes(total)
    }
}

/// A quarter of `mem_total`, clamped; the fallback when it is unknown.
pub fn auto_in_flight_bytes(mem_total: Option<u64>) -> u64 {
    match mem_total {
        Some(total) => (total / 4).clamp(MIN_AUTO_IN_FLIGHT_BYTES, MAX_AUTO_IN_FLIGHT_BYTES),
        None => FALLBACK_IN_FLIGHT_BYTES,
    }
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The operator socket's file name inside the data directory, by default.
pub const ADMIN_SOCKET_NAME: &str = "admin.sock";

/// `[admin]`: the operator channel of a running server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Path of the operator socket (a Unix-domain socket, mode 0600). Empty
    /// means `admin.sock` inside `engine.data_dir`: the one directory the
    /// hardened systemd unit lets the service write, already owner-only,
    /// and found by the CLI from the same configuration.
    pub socket: PathBuf,
}

impl Config {
    /// Check what serde cannot: that values agree with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.memory.resolved_in_flight_bytes();
        let largest = self.engine.max_message_bytes as u64;
        if budget < largest {
            return Err(ConfigError::Invalid(format!(
                "[memory] in_flight_bytes = {budget} is below [engine] max_message_bytes = {largest}: \
                 a message of the largest size would be refused forever"
            )));
        }
        if let Some(cluster) = &self.cluster {
            cluster.member_config().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// Where the operator socket is (see [`AdminConfig::socket`]).
    pub fn admin_socket(&self) -> PathBuf {
        if !self.admin.socket.as_os_str().is_empty() {
            return self.admin.socket.clone();
        }
        self.engine.data_dir.join(ADMIN_SOCKET_NAME)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file or an override is not valid TOML / not a known key.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file (if any), then environment overrides from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            tree = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        }
        for (key, value) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut tree, &parts, parse_env_value(&value))
                .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
        }
        let config: Self = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of `v = …`; fall back to a plain string.
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".to_owned()),
        [leaf] => {
            table.insert(leaf.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{head} is not a table")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_on_localhost_with_data_under_dot_data() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.smtp.listen, "127.0.0.1:2525");
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.engine.data_dir, std::path::PathBuf::from("./data"));
        assert_eq!(c.engine.durability, uncorreo_engine::Durability::Always);
        assert!(
            c.sns.allowed_topic_arns.is_empty(),
            "no topic trusted by default"
        );
        assert_eq!(c.sns.trusted_cert_dir, None);
    }

    #[test]
    fn sns_section_reads_topics_and_limits() {
        let c = Config::load(
            None,
            [
                (
                    "UNCORREO__SNS__ALLOWED_TOPIC_ARNS".to_owned(),
                    "[\"arn:aws:sns:us-east-1:1:t\"]".to_owned(),
                ),
                ("UNCORREO__SNS__MAX_AGE_SECS".to_owned(), "600".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.sns.allowed_topic_arns, vec!["arn:aws:sns:us-east-1:1:t"]);
        assert_eq!(c.sns.max_age_secs, 600);
    }

    #[test]
    fn env_overrides_file_and_parses_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "cores = 3\n[smtp]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let c = Config::load(
            Some(&f),
            [
                (
                    "UNCORREO__SMTP__LISTEN".to_owned(),
                    "127.0.0.1:2".to_owned(),
                ),
                ("UNCORREO__ENGINE__SHARDS".to_owned(), "4".to_owned()),
                (
                    "UNCORREO__ENGINE__DOMAINS".to_owned(),
                    "[\"a.test\", \"b.test\"]".to_owned(),
                ),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(c.cores, 3);
        assert_eq!(c.smtp.listen, "127.0.0.1:2");
        assert_eq!(c.engine.shards, 4);
        assert_eq!(c.engine.domains, vec!["a.test", "b.test"]);
    }

    #[test]
    fn plans_and_limits_come_from_defaults_file_and_env() {
        let c = Config::load(None, []).unwrap();
        assert!(c.plans.0.contains_key("anonymous"));
        assert_eq!(c.limits.default_plan, "free");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[plans.team]\nmax_mailboxes = 9\nmax_messages_per_mailbox = 8\nmax_ttl_minutes = 7\nrequests_per_minute = 6\n[limits]\ndefault_plan = \"team\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            [(
                "UNCORREO__PLANS__FREE__MAX_MAILBOXES".to_owned(),
                "3".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(c.plans.0["team"].max_ttl_minutes, 7);
        assert_eq!(c.plans.0["free"].max_mailboxes, 3);
        assert_eq!(c.plans.0["free"].max_messages_per_mailbox, 200);
        assert_eq!(c.limits.default_plan, "team");
    }

    #[test]
    fn admin_socket_sits_beside_the_data_dir_unless_configured() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.admin_socket(), PathBuf::from("./data/admin.sock"));
        let c = Config::load(
            None,
            [(
                "UNCORREO__ADMIN__SOCKET".to_owned(),
                "/run/uncorreo/admin.sock".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(c.admin_socket(), PathBuf::from("/run/uncorreo/admin.sock"));
    }

    #[test]
    fn the_in_flight_budget_is_a_quarter_of_memory_clamped_and_validated() {
        let meminfo = "MemTotal:        8039424 kB\nMemFree:          123 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(8_039_424 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 12 MB\n"), None);
        assert_eq!(auto_in_flight_bytes(Some(8 << 30)), 2 << 30);
        assert_eq!(
            auto_in_flight_bytes(Some(128 << 20)),
            MIN_AUTO_IN_FLIGHT_BYTES
        );
        assert_eq!(
            auto_in_flight_bytes(Some(1 << 40)),
            MAX_AUTO_IN_FLIGHT_BYTES
        );
        assert_eq!(auto_in_flight_bytes(None), FALLBACK_IN_FLIGHT_BYTES);
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.memory.in_flight_bytes, 0, "sized from memory by default");
        let auto = c.memory.resolved_in_flight_bytes();
        assert!((MIN_AUTO_IN_FLIGHT_BYTES..=MAX_AUTO_IN_FLIGHT_BYTES).contains(&auto));
        let c = Config::load(
            None,
            [(
                "UNCORREO__MEMORY__IN_FLIGHT_BYTES".to_owned(),
                "1073741824".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(c.memory.resolved_in_flight_bytes(), 1 << 30);
        let err = Config::load(
            None,
            [(
                "UNCORREO__MEMORY__IN_FLIGHT_BYTES".to_owned(),
                "1048576".to_owned(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("in_flight_bytes") && err.contains("max_message_bytes"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::load(None, [("UNCORREO__SMTP__LISTN".to_owned(), "x".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The operator's example must stay loadable as the code changes: an
    /// unknown or renamed key fails here, naming the key.
    #[test]
    fn ops_example_config_parses_and_keeps_durability_always() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/uncorreo.example.toml");
        let c = Config::load(Some(&path), []).unwrap();
        assert_eq!(c.engine.durability, uncorreo_engine::Durability::Always);
        assert_eq!(
            c.engine.data_dir,
            std::path::PathBuf::from("/var/lib/uncorreo")
        );
    }

    /// The config Terraform writes at first boot must load too, and behind
    /// the ALB it must take the client IP from X-Forwarded-For.
    #[test]
    fn terraform_first_boot_config_parses_and_trusts_the_alb() {
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/user_data.sh.tftpl"),
        )
        .unwrap();
        let start = template.find("<<'TOML'\n").unwrap() + "<<'TOML'\n".len();
        let end = start + template[start..].find("\nTOML\n").unwrap();
        let rendered = template[start..end]
            .replace("${mail_domain}", "mail.example.com")
            .replace("${smtp_hostname}", "mx.example.com")
            .replace(
                "${sns_topic_arn}",
                "arn:aws:sns:us-east-1:123456789012:inbound",
            );
        assert!(
            !rendered.contains("${"),
            "an unrendered variable: {rendered}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("first-boot.toml");
        std::fs::write(&f, rendered).unwrap();
        let c = Config::load(Some(&f), []).unwrap();
        assert!(c.limits.trust_forwarded_for);
        assert_eq!(c.engine.domains, vec!["mail.example.com".to_owned()]);
    }

    /// `[cluster]` needs only the NATS URL and the node id; the rest has
    /// defaults, and lease terms that leave no time to serve are refused.
    #[test]
    fn cluster_section_defaults_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\nnode_id = \"a\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), []).unwrap();
        let cluster = c.cluster.clone().unwrap();
        assert_eq!(
            (
                cluster.partitions,
                cluster.lease_seconds,
                cluster.claim_free
            ),
            (1024, 10, true)
        );
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.cluster.as_mut().unwrap().lease_seconds = 0;
        assert!(bad.validate().is_err());
        bad.cluster.as_mut().unwrap().lease_seconds = 10;
        bad.cluster.as_mut().unwrap().partitions = 0;
        assert!(bad.validate().is_err());
        assert!(Config::default().cluster.is_none());
    }

    /// `uncorreo config defaults` prints TOML that loads back to the defaults.
    #[test]
    fn rendered_defaults_load_back() {
        let text = toml::to_string_pretty(&Config::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.toml");
        std::fs::write(&f, text).unwrap();
        let c = Config::load(Some(&f), []).unwrap();
        assert_eq!(
            toml::to_string(&c).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
    }
}
