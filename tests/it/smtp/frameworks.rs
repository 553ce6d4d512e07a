//! The README's "Point your app at it" configurations, run by the
//! frameworks themselves: Django's SMTP `EmailBackend` with the `EMAIL_*`
//! settings as written there, and the Nodemailer transport as written
//! there, each over STARTTLS and over implicit TLS, logging in with an API
//! key in `keys` mode. If the README's snippet stops working, this fails.

use std::process::Command;

use super::auth::auth_server;
use super::*;
use crate::api::Auth;

/// The README's Django settings (host, port and credentials from the
/// arguments), then `send_mail`. Prints the number of messages sent.
const DJANGO_PY: &str = r#"
import sys
from django.conf import settings
host, port, tls, user, password, to = sys.argv[1:7]
settings.configure(
    EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
    EMAIL_HOST=host,
    EMAIL_PORT=int(port),
    EMAIL_USE_TLS=tls == "starttls",
    EMAIL_USE_SSL=tls == "implicit",
    EMAIL_HOST_USER=user,
    EMAIL_HOST_PASSWORD=password,
)
import django
django.setup()
from django.core.mail import send_mail
print(send_mail("Django says hi", "Your code is 482913.", "app@sender.example", [to]))
"#;

#[test]
fn readme_django_and_nodemailer_configs_send_over_starttls_and_implicit_tls() {
    let s = auth_server("keys");
    let key = s.api.user("free");
    let (address, _) = s.api.mailbox(
        &Auth::Bearer(key.clone()),
        serde_json::json!({"local_part": "ci-run-1"}),
    );
    let host = "127.0.0.1";
    let ports = [
        ("starttls", s.api.server.smtp.port()),
        ("implicit", s.smtps_port()),
    ];
    let cert = s.cert_path.to_str().unwrap();

    for (tls, port) in ports {
        // Django >= 4 verifies against the default CAs: the README says to
        // point SSL_CERT_FILE at a self-signed certificate.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("send.py");
        std::fs::write(&script, DJANGO_PY).unwrap();
        let out = Command::new("python3")
            .arg(&script)
            .args([host, &port.to_string(), tls, &address, &key, &address])
            .env("SSL_CERT_FILE", cert)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1",
            "Django over {tls}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let mailpit_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailpit");
        assert!(
            mailpit_dir.join("node_modules/nodemailer").is_dir(),
            "tests/mailpit/node_modules is missing: run .ci/deps (npm ci in tests/mailpit)"
        );
        let secure = if tls == "implicit" { "true" } else { "false" };
        let out = Command::new("node")
            .arg("readme_smtp.mjs")
            .args([host, &port.to_string(), secure, cert, &address, &address])
            .current_dir(&mailpit_dir)
            .env("UNCORREO_KEY", &key)
            .output()
            .expect("node runs (Node 20 is on the machine)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("250 2.0.0 Ok: stored as"),
            "Nodemailer over {tls}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let engine = &s.api.server.engine;
    let mailbox = engine
        .mailbox(&uncorreo_engine::Address::parse(&address).unwrap())
        .unwrap();
    let got = stored(engine, &mailbox);
    assert_eq!(got.len(), 4);
    for raw in &got {
        let (received, rest) = split_received(raw);
        assert!(received.contains("with ESMTPSA id "), "{received}");
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains("Subject: Django says hi")
                || rest.contains("Subject: Nodemailer says hi"),
            "{rest}"
        );
    }
}
