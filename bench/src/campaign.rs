//! `uncorreo-bench campaign`: drive a load campaign end to end. Create a
//! campaign (or use one), send N messages over M SMTP connections to its
//! catch-all domain (one recipient each, every K-th reusing the previous
//! Message-ID on purpose), then fetch the report and check it against what
//! was sent: accepted, unique and duplicated Message-IDs, distinct
//! recipients. Prints one JSON line; exits non-zero on any mismatch.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::rest::Rest;
use crate::smtp::{Client, Sent};

#[derive(Args, Debug, Clone)]
pub struct CampaignArgs {
    /// SMTP address of the server (host:port).
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub smtp: String,
    /// HTTP address of the server (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// API key of the campaign's owner.
    #[arg(long, env = "UNCORREO_KEY")]
    pub key: String,
    /// An existing campaign id; when absent one is created.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Store mode of a created campaign: full, headers or count.
    #[arg(long, default_value = "count")]
    pub store: String,
    /// Messages to send.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Parallel SMTP connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Every K-th message reuses the previous Message-ID (0: none).
    #[arg(long, default_value_t = 100)]
    pub duplicate_every: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
}

/// The Message-ID number message `i` carries.
fn message_id_of(i: usize, every: usize) -> usize {
    if every > 0 && i % every == every - 1 && i > 0 {
        i - 1
    } else {
        i
    }
}

fn message(i: usize, id: usize, to: &str, size: usize) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut m = format!(
        "From: <bench@bench.test>\r\nTo: <{to}>\r\nSubject: campaign {i}\r\nMessage-ID: <m{id}@bench.test>\r\nX-Sent-At: {now_ms}\r\n\r\n"
    )
    .into_bytes();
    while m.len() + 80 <= size {
        m.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvw\r\n",
        );
    }
    m.extend_from_slice(b".\r\n");
    m
}

pub async fn run(a: CampaignArgs) -> anyhow::Result<()> {
    let mut rest = Rest::new(&a.http, &a.key);
    let id = match &a.campaign {
        Some(id) => id.clone(),
        None => {
            let body = json!({"name": "uncorreo-bench campaign", "store": a.store, "sent_at_header": "X-Sent-At"});
            let r = rest
                .request(Method::POST, "/api/v1/campaigns", Some(body))
                .await?;
            if r.status != 201 {
                bail!(
                    "creating the campaign: HTTP {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            r.json()?["id"].as_str().context("no id")?.to_owned()
        }
    };
    let r = rest
        .request(Method::GET, &format!("/api/v1/campaigns/{id}"), None)
        .await?;
    let domain = r.json()?["domains"][0]
        .as_str()
        .with_context(|| format!("campaign {id}: HTTP {}", r.status))?
        .to_owned();
    let before = report(&mut rest, &id).await?;
    let conns = a.connections.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    let domain = Arc::new(domain);
    for w in 0..conns {
        let (smtp, domain, a) = (a.smtp.clone(), Arc::clone(&domain), a.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&smtp, Duration::from_secs(60)).await?;
            let (mut ok, mut refused) = (0u64, 0u64);
            for i in (w..a.messages).step_by(conns) {
                let to = format!("u{i}@{domain}");
                let body = message(i, message_id_of(i, a.duplicate_every), &to, a.size);
                match client.send("bench@bench.test", &to, &body).await? {
                    Sent::Accepted { .. } => ok += 1,
                    Sent::Refused { .. } => refused += 1,
                }
            }
            client.quit().await;
            anyhow::Ok((ok, refused))
        }));
    }
    let (mut accepted, mut refused) = (0u64, 0u64);
    for t in tasks {
        let (ok, no) = t.await??;
        accepted += ok;
        refused += no;
    }
    let elapsed = started.elapsed();
    let after = report(&mut rest, &id).await?;
    let n = a.messages;
    let duplicates = (0..n)
        .filter(|i| message_id_of(*i, a.duplicate_every) != *i)
        .count() as u64;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let mut mismatches = Vec::new();
    for (what, want, got) in [
        ("accepted", accepted, delta("accepted")),
        (
            "unique_message_ids",
            n as u64 - duplicates,
            delta("unique_message_ids"),
        ),
        (
            "duplicate_messages",
            duplicates,
            delta("duplicate_messages"),
        ),
        (
            "distinct_recipients",
            n as u64,
            delta("distinct_recipients"),
        ),
    ] {
        if want != got {
            mismatches.push(json!({"field": what, "sent": want, "report": got}));
        }
    }
    if refused > 0 {
        mismatches.push(json!({"field": "refused", "sent": 0, "report": refused}));
    }
    let out = json!({
        "campaign": id,
        "messages": n,
        "connections": conns,
        "accepted": accepted,
        "seconds": elapsed.as_secs_f64(),
        "msg_per_s": accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        "latency": after["latency"].clone(),
        "bytes": delta("bytes"),
        "mismatches": mismatches,
    });
    println!("{out}");
    if !out["mismatches"].as_array().is_some_and(Vec::is_empty) {
        bail!("the report does not match what was sent");
    }
    Ok(())
}

async fn report(rest: &mut Rest, id: &str) -> anyhow::Result<Value> {
    let r = rest
        .request(Method::GET, &format!("/api/v1/campaigns/{id}/report"), None)
        .await?;
    if r.status != 200 {
        bail!(
            "report: HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    r.json()
}
