//! Shared harness for the integration tests: a real appliance on 127.0.0.1
//! port 0 with its own temporary data directory, and a raw SMTP client that
//! tests of every area use. Area-specific helpers live in their area's
//! `mod.rs`, not here, so this file stays small and stable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use uncorreo::{Appliance, Config};
use uncorreo_engine::{Address, Engine, MailboxInfo, NewMailbox, Owner};

/// Domain every test appliance accepts mail for.
pub const DOMAIN: &str = "uncorreo.test";

/// Directories to remove when the test process exits.
static REMOVE_AT_EXIT: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

extern "C" fn remove_registered_dirs() {
    let dirs = std::mem::take(
        &mut *REMOVE_AT_EXIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `dir` when the test process exits. For what statics own: the
/// test harness never drops them, so a shared server's `TempDir` alone would
/// leave its log in /tmp after every run.
pub fn remove_at_exit(dir: &std::path::Path) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `remove_registered_dirs` is a plain `extern "C"` function
        // that never unwinds (it ignores every error) and touches only a
        // static; atexit may run it on the exiting thread at any point after
        // main returns, which is all it needs.
        let registered = unsafe { libc::atexit(remove_registered_dirs) };
        assert_eq!(registered, 0, "atexit refused the cleanup handler");
    });
    REMOVE_AT_EXIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(dir.to_path_buf());
}

/// A running appliance plus the temporary directory holding its log.
pub struct TestServer {
    pub appliance: Option<Appliance>,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    pub engine: Engine,
    pub data: tempfile::TempDir,
}

/// Test defaults: loopback, port 0, two cores, a fresh data dir.
pub fn test_config(data: &std::path::Path) -> Config {
    let mut c = Config {
        cores: 2,
        ..Config::default()
    };
    c.smtp.listen = "127.0.0.1:0".to_owned();
    c.http.listen = "127.0.0.1:0".to_owned();
    c.engine.data_dir = data.to_path_buf();
    c.engine.domains = vec![DOMAIN.to_owned()];
    // Tests run on small disks too; the free-space floor is tested on its own.
    c.engine.min_free_bytes = 0;
    c
}

impl TestServer {
    /// Start with the test defaults.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Start with the test defaults changed by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(data.path());
        tweak(&mut config);
        let appliance = Appliance::start(config).expect("appliance starts");
        Self {
            smtp: appliance.smtp_addr,
            http: appliance.http_addr,
            engine: appliance.engine.clone(),
            appliance: Some(appliance),
            data,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Create a mailbox straight in the engine (owned by an anonymous token
    /// nobody knows), valid for an hour, with room for `max_messages`.
    pub fn mailbox(&self, local: &str, max_messages: u32) -> MailboxInfo {
        let engine = self.engine.clone();
        let new = NewMailbox {
            address: Address::from_parts(local, DOMAIN).expect("valid address"),
            owner: Owner::Anonymous {
                token_hash: [0u8; 32],
            },
            expires_at_ms: engine.now_ms() + 3_600_000,
            max_messages,
        };
        block_on(engine.create_mailbox(new)).expect("mailbox created")
    }

    /// Stop the appliance and keep the data dir (for restart tests).
    pub fn stop(&mut self) {
        if let Some(a) = self.appliance.take() {
            a.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real binary's `serve` on `data`, listening where asked, with the
/// test defaults (two cores, the test domain, no free-space floor).
pub fn serve_command(data: &std::path::Path, smtp: &str, http: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_uncorreo"));
    command
        .arg("serve")
        .env("UNCORREO__SMTP__LISTEN", smtp)
        .env("UNCORREO__HTTP__LISTEN", http)
        .env("UNCORREO__ENGINE__DATA_DIR", data)
        .env("UNCORREO__ENGINE__DOMAINS", format!("[\"{DOMAIN}\"]"))
        .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
        .env("UNCORREO__CORES", "2")
        .env("RUST_LOG", "warn");
    command
}

/// Run a future to completion on a throwaway current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A minimal line-oriented SMTP client for raw protocol tests.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    /// Connect and read the greeting (returned).
    pub fn connect(addr: SocketAddr) -> (Self, String) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut raw = Raw {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    /// Send bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Read one (possibly multi-line) reply; returns all its lines joined by "\n".
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; so far: {all:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) == Some(&b'-') {
                all.push('\n');
                continue;
            }
            return all;
        }
    }

    /// Send a command line (CRLF added) and return its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True when the server has closed the connection (after reading any rest).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// The code (first three characters) of a reply.
pub fn code(reply: &str) -> &str {
    &reply[..3]
}
