//! SMTP AUTH as `swaks` (a client nobody here wrote) does it: `--auth PLAIN`
//! and `--auth LOGIN`, over STARTTLS (`--tls`) and over implicit TLS on
//! `smtp.tls_listen` (`--tlsc`), in each AUTH mode. Credentials for `keys`
//! mode come from the REST API, as a user would get them: an API key, and
//! an anonymous mailbox's session token.

use super::*;
use crate::api::{Api, Auth};
use uncorreo_engine::Address;

/// How swaks reaches the server.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// The plain port, upgraded with STARTTLS (`--tls`).
    StartTls,
    /// The implicit-TLS port, TLS from the first byte (`--tlsc`).
    Implicit,
    /// The plain port, never encrypted.
    Plain,
}

const TRANSPORTS: [Transport; 2] = [Transport::StartTls, Transport::Implicit];
const MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

/// A TLS test server with the implicit-TLS listener on and `mode`, plus
/// an HTTP client for its API.
pub(super) struct AuthServer {
    pub(super) api: Api,
    /// The server's certificate, for clients to verify against.
    pub(super) cert_path: std::path::PathBuf,
    _cert_dir: tempfile::TempDir,
}

pub(super) fn auth_server(mode: &str) -> AuthServer {
    let mode: uncorreo_smtpd::config::AuthMode =
        serde_json::from_value(serde_json::Value::from(mode)).unwrap();
    let TlsServer {
        server,
        cert_path,
        _dir,
        ..
    } = tls_server_with(&["127.0.0.1", "localhost"], |c| {
        c.smtp.tls_listen = Some("127.0.0.1:0".to_owned());
        c.smtp.auth = mode;
        // Every wrong password of the matrix comes from 127.0.0.1; the
        // per-IP lockout has its own test in the smtpd crate.
        c.smtp.max_auth_failures = 1000;
    });
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    AuthServer {
        api: Api { server, client },
        cert_path,
        _cert_dir: _dir,
    }
}

impl AuthServer {
    /// The implicit-TLS (SMTPS) port.
    pub(super) fn smtps_port(&self) -> u16 {
        self.api
            .server
            .appliance
            .as_ref()
            .and_then(|a| a.smtps_addr)
            .expect("tls_listen is set")
            .port()
    }

    /// swaks with `--auth mechanism` as `user` / `password` (no AUTH when
    /// `mechanism` is empty), sending one message to `to` over `transport`. Returns (exit status, transcript).
    fn swaks(
        &self,
        transport: Transport,
        mechanism: &str,
        user: &str,
        password: &str,
        to: &str,
    ) -> (i32, String) {
        let server = &self.api.server;
        let port = match transport {
            Transport::Implicit => self.smtps_port(),
            Transport::StartTls | Transport::Plain => server.smtp.port(),
        };
        let ca = self.cert_path.to_str().unwrap().to_owned();
        let port = port.to_string();
        let subject = format!("Subject: auth {mechanism} {transport:?}");
        let mut args = vec![
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--helo",
            "swaks.example",
            "--from",
            "app@sender.example",
            "--to",
            to,
            "--timeout",
            "30",
            "--header",
            &subject,
        ];
        // An empty mechanism: send without AUTH.
        if !mechanism.is_empty() {
            args.extend([
                "--auth",
                mechanism,
                "--auth-user",
                user,
                "--auth-password",
                password,
            ]);
        }
        match transport {
            Transport::StartTls => args.push("--tls"),
            Transport::Implicit => args.push("--tlsc"),
            Transport::Plain => {}
        }
        if !matches!(transport, Transport::Plain) {
            args.extend(["--tls-verify", "--tls-ca-path", &ca]);
        }
        let (status, transcript) = swaks(&args);
        // The transport is the one asked for: STARTTLS on the plain port,
        // the greeting already inside TLS on the implicit one.
        match transport {
            Transport::StartTls => assert!(
                transcript.contains(" -> STARTTLS") && transcript.contains("<-  220 "),
                "{transcript}"
            ),
            Transport::Implicit => assert!(
                !transcript.contains("STARTTLS") && transcript.contains("<~  220 "),
                "{transcript}"
            ),
            Transport::Plain => assert!(!transcript.contains(" ~> "), "{transcript}"),
        }
        (status, transcript)
    }

    fn stored(&self, address: &str) -> Vec<Vec<u8>> {
        let engine = &self.api.server.engine;
        let mailbox = engine.mailbox(&Address::parse(address).unwrap()).unwrap();
        stored(engine, &mailbox)
    }
}

/// Assert swaks used `mechanism` inside TLS (swaks marks encrypted lines
/// `~>` / `<~`), got `235`, and the message was stored (`250 … stored as`).
fn assert_sent(case: &str, mechanism: &str, (status, transcript): &(i32, String)) {
    assert_eq!(*status, 0, "{case}: {transcript}");
    assert!(
        transcript.contains(&format!(" ~> AUTH {mechanism}")),
        "{case}: {transcript}"
    );
    assert!(
        transcript.contains("<~  235 2.7.0 Authentication successful"),
        "{case}: {transcript}"
    );
    assert!(
        transcript.contains("250 2.0.0 Ok: stored as"),
        "{case}: {transcript}"
    );
}

/// Assert the EHLO reply swaks printed offers no AUTH and swaks gave up.
fn assert_not_offered(case: &str, (status, transcript): &(i32, String)) {
    assert_ne!(*status, 0, "{case}: {transcript}");
    assert!(!transcript.contains("250-AUTH"), "{case}: {transcript}");
    assert!(
        transcript.contains("Host did not advertise authentication"),
        "{case}: {transcript}"
    );
    assert!(!transcript.contains("stored as"), "{case}: {transcript}");
}

#[test]
fn swaks_auth_off_is_not_advertised_over_either_tls() {
    let s = auth_server("off");
    let (address, _) = s.api.mailbox(&Auth::None, serde_json::json!({}));
    for transport in TRANSPORTS {
        for mechanism in MECHANISMS {
            let case = format!("off {mechanism} {transport:?}");
            let out = s.swaks(transport, mechanism, "user", "password", &address);
            assert_not_offered(&case, &out);
        }
    }
    assert!(s.stored(&address).is_empty());
}

#[test]
fn swaks_auth_accept_any_takes_any_credentials_over_tls_only() {
    let s = auth_server("accept_any");
    let (address, _) = s.api.mailbox(&Auth::None, serde_json::json!({}));
    for transport in TRANSPORTS {
        for mechanism in MECHANISMS {
            let case = format!("accept_any {mechanism} {transport:?}");
            let out = s.swaks(transport, mechanism, "anyone", "anything", &address);
            assert_sent(&case, mechanism, &out);
        }
    }
    let stored = s.stored(&address);
    assert_eq!(stored.len(), 4);
    for raw in &stored {
        let (received, _) = split_received(raw);
        // RFC 3848: TLS and authenticated.
        assert!(received.contains("with ESMTPSA id "), "{received}");
    }
    // Without TLS (and without `auth_allow_plaintext`) AUTH is not offered.
    let out = s.swaks(Transport::Plain, "PLAIN", "anyone", "anything", &address);
    assert_not_offered("accept_any PLAIN without TLS", &out);
    assert_eq!(s.stored(&address).len(), 4);
}

#[test]
fn swaks_auth_keys_takes_api_keys_and_session_tokens_for_their_own_mailboxes() {
    let s = auth_server("keys");
    let key = s.api.user("free");
    let (owned, _) = s.api.mailbox(
        &Auth::Bearer(key.clone()),
        serde_json::json!({"local_part": "owned"}),
    );
    let (anon, token) = s
        .api
        .mailbox(&Auth::None, serde_json::json!({"local_part": "anon"}));
    let token = token.unwrap();
    let (stranger, _) = s
        .api
        .mailbox(&Auth::None, serde_json::json!({"local_part": "stranger"}));
    for transport in TRANSPORTS {
        for mechanism in MECHANISMS {
            let case = |what: &str| format!("keys {mechanism} {transport:?}: {what}");

            // An API key, any user name: the user's own mailbox.
            let out = s.swaks(transport, mechanism, "ci", &key, &owned);
            assert_sent(&case("API key"), mechanism, &out);

            // A session token, with its mailbox as the user name.
            let out = s.swaks(transport, mechanism, &anon, &token, &anon);
            assert_sent(&case("session token"), mechanism, &out);

            // Wrong: a guessed key, and a real token under another mailbox.
            for (user, password) in [
                ("ci", "uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                (&stranger, &token),
            ] {
                let (status, transcript) = s.swaks(transport, mechanism, user, password, &owned);
                assert_ne!(status, 0, "{}: {transcript}", case("wrong"));
                assert!(
                    transcript.contains("535 5.7.8 Authentication credentials invalid"),
                    "{}: {transcript}",
                    case("wrong")
                );
            }

            // Authenticated, but to a mailbox the credential does not own.
            for (user, password, to) in [
                ("ci", key.as_str(), stranger.as_str()),
                (anon.as_str(), token.as_str(), owned.as_str()),
            ] {
                let (status, transcript) = s.swaks(transport, mechanism, user, password, to);
                assert_ne!(status, 0, "{}: {transcript}", case("not owned"));
                assert!(
                    transcript.contains("235 2.7.0") && transcript.contains("550 5.7.1"),
                    "{}: {transcript}",
                    case("not owned")
                );
            }
        }
    }
    assert_eq!(s.stored(&owned).len(), 4);
    assert_eq!(s.stored(&anon).len(), 4);
    assert!(s.stored(&stranger).is_empty());
    // Without AUTH the port is still the MX: mail for any existing mailbox.
    let (status, transcript) = s.swaks(Transport::StartTls, "", "", "", &stranger);
    assert_eq!(status, 0, "{transcript}");
    assert!(!transcript.contains(" ~> AUTH"), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: stored as"),
        "{transcript}"
    );
    assert_eq!(s.stored(&stranger).len(), 1);
}
