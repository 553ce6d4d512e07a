//! A throwaway NATS server with JetStream for tests (feature `testing`):
//! Debian's `nats-server` on a free loopback port with its store in a
//! temporary directory, killed and removed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one and waits (up to 30 s) for it to listen.
    ///
    /// # Panics
    /// When `nats-server` is missing (`.ci/deps` installs it) or does not
    /// start: a test that needs it must fail, never skip.
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("nats-server did not start ({error}); .ci/deps installs it")
            });
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("nats-server has no stderr"));
        let (url_tx, url_rx) = mpsc::channel();
        // Reads the log to learn the port, then keeps draining it so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, address)) = line.split_once("Listening for client connections on ")
                {
                    let _ = url_tx.send(format!("nats://{}", address.trim()));
                }
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("nats-server did not listen within 30 s"));
        NatsServer {
            child,
            url,
            _store: store,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server now (a NATS outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
