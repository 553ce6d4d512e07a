//! The HTTP API through real sockets (one submodule per concern), and what
//! those tests share: a blocking HTTP client, credentials, delivery through
//! the engine, and a multipart test message.

mod admin;
mod authz;
mod campaigns;
mod connections;
mod contract;
mod credentials;
mod e2e;
mod errors;
mod health;
mod ops;
mod quotas;
mod send;

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::Value;

use crate::support::{block_on, code, Raw, TestServer};

/// A credential to send.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Nothing.
    None,
    /// `Authorization: Bearer <s>` (API key or session token).
    Bearer(String),
    /// `X-Session-Token: <s>`.
    Session(String),
}

/// An answer, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    /// Read `r` whole.
    pub fn read(r: reqwest::blocking::Response) -> Self {
        Self {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().unwrap().to_vec(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The problem `type` slug, asserting the body is problem+json.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "status {} body {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let j = self.json();
        assert_eq!(j["status"].as_u64(), Some(u64::from(self.status)), "{j}");
        assert!(j["title"].is_string() && j["detail"].is_string(), "{j}");
        j["type"]
            .as_str()
            .unwrap()
            .strip_prefix("urn:uncorreo:problem:")
            .unwrap()
            .to_owned()
    }
}

/// A test appliance plus an HTTP client for it.
pub struct Api {
    pub server: TestServer,
    pub client: Client,
}

impl Api {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Start with rate limits out of the way (tests of limits set their own).
    pub fn start_with(tweak: impl FnOnce(&mut uncorreo::Config)) -> Self {
        let server = TestServer::start_with(|c| {
            for p in c.plans.0.values_mut() {
                p.requests_per_minute = 1_000_000;
            }
            c.limits.ip_requests_per_minute = 1_000_000;
            tweak(c);
        });
        let client = Client::builder().no_proxy().build().unwrap();
        Self { server, client }
    }

    /// Send `method path` with `auth` and an optional JSON body.
    pub fn call(&self, method: &str, path: &str, auth: &Auth, body: Option<Value>) -> Resp {
        let mut req = self.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            self.server.url(path),
        );
        req = match auth {
            Auth::None => req,
            Auth::Bearer(s) => req.bearer_auth(s),
            Auth::Session(s) => req.header("x-session-token", s),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::read(req.send().unwrap())
    }

    pub fn get(&self, path: &str, auth: &Auth) -> Resp {
        self.call("GET", path, auth, None)
    }

    /// Create a user on `plan` straight in the engine; returns their API key.
    pub fn user(&self, plan: &str) -> String {
        let plans = uncorreo::Config::default().plans;
        let plans = if plans.0.contains_key(plan) {
            plans
        } else {
            // Plans only the test config defines: admin only checks the name.
            let mut p = plans;
            p.0.insert(plan.to_owned(), p.0["free"]);
            p
        };
        block_on(uncorreo_api::admin::create_user(
            &uncorreo_api::accounts::EngineAccounts(self.server.engine.clone()),
            self.server.engine.now_ms(),
            &plans,
            "test user",
            plan,
        ))
        .unwrap()
        .key
    }

    /// Create a mailbox over HTTP; returns (address, session token if anonymous).
    pub fn mailbox(&self, auth: &Auth, body: Value) -> (String, Option<String>) {
        let r = self.call("POST", "/api/v1/mailboxes", auth, Some(body));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        (
            j["address"].as_str().unwrap().to_owned(),
            j["session_token"].as_str().map(str::to_owned),
        )
    }
}

/// A mailbox listing's `(created_at, address)` pairs, in its order.
pub fn created_and_address(listing: &Value) -> Vec<(String, String)> {
    listing["mailboxes"]
        .as_array()
        .expect("mailboxes")
        .iter()
        .map(|m| {
            (
                m["created_at"].as_str().expect("created_at").to_owned(),
                m["address"].as_str().expect("address").to_owned(),
            )
        })
        .collect()
}

/// Deliver `raw` to `address` through the engine (the one delivery entry point).
pub fn deliver(server: &TestServer, address: &str, raw: &[u8]) -> uncorreo_engine::MessageId {
    let rcpt = server.engine.resolve(address).unwrap();
    let out = block_on(server.engine.deliver(uncorreo_engine::Delivery {
        raw: bytes::Bytes::copy_from_slice(raw),
        envelope_from: "sender@example.com".to_owned(),
        recipients: vec![rcpt],
        dedupe_key: None,
    }))
    .unwrap();
    match out {
        uncorreo_engine::DeliveryOutcome::Delivered { stored, refused } => {
            assert!(refused.is_empty(), "{refused:?}");
            stored[0]
        }
        other => panic!("{other:?}"),
    }
}

/// Attachment 1: binary bytes (every byte value), sent base64-encoded.
pub fn attachment_binary() -> Vec<u8> {
    (0..=255u8).cycle().take(3000).collect()
}

/// Attachment 2: a small UTF-8 CSV.
pub const ATTACHMENT_CSV: &[u8] = b"id,name\r\n1,Ana\r\n2,Jos\xc3\xa9\r\n";

fn base64_lines(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A sign-up mail: text + HTML alternatives and two attachments, CRLF line ends.
pub fn signup_message(to: &str) -> Vec<u8> {
    let mut m = String::new();
    m.push_str("From: Shop <noreply@shop.example>\r\n");
    m.push_str(&format!("To: Ana <{to}>\r\n"));
    m.push_str("Cc: audit@shop.example\r\n");
    m.push_str("Subject: Your verification code\r\n");
    m.push_str("Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n");
    m.push_str("Message-ID: <t1@shop.example>\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n");
    m.push_str("--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n");
    m.push_str("--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str("Your code is 482913.\r\nConfirm: https://shop.example/verify?token=abc123\r\n");
    m.push_str("--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n");
    m.push_str("<p>Your code is <b>482913</b>.</p><a href=\"https://shop.example/verify?token=abc123\">Confirm</a>\r\n");
    m.push_str("--alt--\r\n");
    m.push_str("--outer\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&base64_lines(&attachment_binary()));
    m.push_str("\r\n--outer\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Disposition: attachment; filename=\"people.csv\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&base64_lines(ATTACHMENT_CSV));
    m.push_str("\r\n--outer--\r\n");
    m.into_bytes()
}

/// Everything a mailbox-scoped or key-scoped route needs in its path.
pub fn fill(template: &str, address: &str, message_id: &str, key_id: &str) -> String {
    let id = if template.starts_with("/api/v1/keys/") {
        key_id
    } else {
        message_id
    };
    template
        .replace("{address}", address)
        .replace("{id}", id)
        .replace("{n}", "0")
}

/// A plain SMTP client dialogue (RFC 5321), DATA with dot-stuffing.
pub fn smtp_send(addr: std::net::SocketAddr, from: &str, to: &str, msg: &[u8]) {
    let (mut c, greeting) = Raw::connect(addr);
    let expect = |reply: String, want: &str| assert_eq!(code(&reply), want, "{reply}");
    expect(greeting, "220");
    expect(c.cmd("EHLO client.test"), "250");
    expect(c.cmd(&format!("MAIL FROM:<{from}>")), "250");
    expect(c.cmd(&format!("RCPT TO:<{to}>")), "250");
    expect(c.cmd("DATA"), "354");
    // Dot-stuffing done here, not with smtpd's own `dot_stuff`: the client
    // must not share code with the server it tests.
    let mut data = Vec::new();
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    c.send(&data);
    expect(c.reply(), "250");
    expect(c.cmd("QUIT"), "221");
}
