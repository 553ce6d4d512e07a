//! `uncorreo-bench campaign`: drive a load campaign end to end. Create a
//! campaign (or use one), send N messages over M SMTP connections to its
//! catch-all domain (one recipient each, every K-th reusing the previous
//! Message-ID on purpose), then fetch the report and check it against what
//! was sent: accepted, unique and duplicated Message-IDs, distinct
//! recipients. Prints one JSON line; exits non-zero on any mismatch.
//!
//! With `--domain` it sends the same load to that domain without the API (no
//! campaign, no report), so a server that stores nothing (postfix's
//! smtp-sink, in bench/campaign.sh) can be driven by the identical client.

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
    #[arg(long, env = "UNCORREO_KEY", required_unless_present = "domain")]
    pub key: Option<String>,
    /// Send to `uN@DOMAIN` over SMTP only: no campaign, no report, no check
    /// beyond every message being accepted (e.g. against smtp-sink).
    #[arg(long, conflicts_with = "campaign")]
    pub domain: Option<String>,
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

/// Messages among the first `messages` that reuse an earlier Message-ID.
pub fn duplicates_sent(messages: usize, every: usize) -> u64 {
    (0..messages)
        .filter(|i| message_id_of(*i, every) != *i)
        .count() as u64
}

/// The counts of the report that this run added: `after - before` per field
/// (the campaign may already hold mail).
pub fn counted(before: &Value, after: &Value) -> Value {
    let fields = [
        "accepted",
        "unique_message_ids",
        "duplicate_messages",
        "distinct_recipients",
        "bytes",
    ];
    let delta = |k: &str| {
        after[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before[k].as_u64().unwrap_or(0))
    };
    fields
        .iter()
        .map(|k| (k.to_string(), json!(delta(k))))
        .collect()
}

/// Where the report's `counted` (see [`counted`]) disagrees with what was
/// sent: one `{field, sent, report}` per disagreement.
pub fn mismatches(
    messages: usize,
    duplicate_every: usize,
    accepted: u64,
    refused: u64,
    counted: &Value,
) -> Vec<Value> {
    let duplicates = duplicates_sent(messages, duplicate_every);
    let mut out = Vec::new();
    for (what, want) in [
        ("accepted", accepted),
        ("unique_message_ids", messages as u64 - duplicates),
        ("duplicate_messages", duplicates),
        ("distinct_recipients", messages as u64),
    ] {
        let got = counted[what].as_u64().unwrap_or(0);
        if want != got {
            out.push(json!({"field": what, "sent": want, "report": got}));
        }
    }
    out.extend(refusal(refused));
    out
}

/// Every message was meant to be accepted: refusals are a mismatch.
fn refusal(refused: u64) -> Option<Value> {
    (refused > 0).then(|| json!({"field": "refused", "sent": 0, "report": refused}))
}

/// What one load run did, seen from the client.
struct Outcome {
    accepted: u64,
    refused: u64,
    elapsed: Duration,
}

/// Send `a.messages` to `uN@domain` over `a.connections` connections.
async fn send_all(a: &CampaignArgs, domain: &str) -> anyhow::Result<Outcome> {
    let conns = a.connections.max(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    let domain = Arc::new(domain.to_owned());
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
    Ok(Outcome {
        accepted,
        refused,
        elapsed: started.elapsed(),
    })
}

pub async fn run(a: CampaignArgs) -> anyhow::Result<()> {
    let (id, sent, latency, counted, mismatches) = match (&a.domain, &a.key) {
        (Some(domain), _) => {
            let sent = send_all(&a, domain).await?;
            let m = refusal(sent.refused).into_iter().collect();
            (None, sent, Value::Null, Value::Null, m)
        }
        (None, Some(key)) => {
            let mut rest = Rest::new(&a.http, key);
            let id = match &a.campaign {
                Some(id) => id.clone(),
                None => create(&mut rest, &a.store).await?,
            };
            let r = rest
                .request(Method::GET, &format!("/api/v1/campaigns/{id}"), None)
                .await?;
            let domain = r.json()?["domains"][0]
                .as_str()
                .with_context(|| format!("campaign {id}: HTTP {}", r.status))?
                .to_owned();
            let before = report(&mut rest, &id).await?;
            let sent = send_all(&a, &domain).await?;
            let after = report(&mut rest, &id).await?;
            let counted = counted(&before, &after);
            let m = mismatches(
                a.messages,
                a.duplicate_every,
                sent.accepted,
                sent.refused,
                &counted,
            );
            (Some(id), sent, after["latency"].clone(), counted, m)
        }
        (None, None) => bail!("--key (or UNCORREO_KEY) is needed unless --domain is given"),
    };
    let out = json!({
        "campaign": id,
        "messages": a.messages,
        "connections": a.connections.max(1),
        "accepted": sent.accepted,
        "seconds": sent.elapsed.as_secs_f64(),
        "msg_per_s": sent.accepted as f64 / sent.elapsed.as_secs_f64().max(1e-9),
        "latency": latency,
        "report": counted,
        "mismatches": mismatches,
    });
    println!("{out}");
    if !mismatches.is_empty() {
        bail!("the report does not match what was sent");
    }
    Ok(())
}

async fn create(rest: &mut Rest, store: &str) -> anyhow::Result<String> {
    let body =
        json!({"name": "uncorreo-bench campaign", "store": store, "sent_at_header": "X-Sent-At"});
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
    Ok(r.json()?["id"].as_str().context("no id")?.to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kth_message_repeats_the_previous_message_id() {
        let ids: Vec<usize> = (0..7).map(|i| message_id_of(i, 3)).collect();
        assert_eq!(ids, [0, 1, 1, 3, 4, 4, 6]);
        assert_eq!(duplicates_sent(100_000, 100), 1_000);
        assert_eq!(duplicates_sent(100_000, 0), 0);
    }

    fn report(accepted: u64, unique: u64, duplicates: u64, recipients: u64) -> Value {
        json!({"accepted": accepted, "unique_message_ids": unique,
               "duplicate_messages": duplicates, "distinct_recipients": recipients})
    }

    #[test]
    fn a_report_that_counts_what_was_sent_on_top_of_earlier_mail_matches() {
        let before = report(5, 5, 0, 5);
        let after = report(1_005, 995, 10, 1_005);
        let counted = counted(&before, &after);
        assert_eq!(counted["duplicate_messages"], 10);
        assert!(mismatches(1_000, 100, 1_000, 0, &counted).is_empty());
    }

    #[test]
    fn each_disagreeing_count_and_any_refusal_is_named() {
        let counted = counted(&json!({}), &report(1_000, 991, 9, 1_000));
        let m = mismatches(1_000, 100, 1_000, 2, &counted);
        let fields: Vec<&str> = m.iter().filter_map(|m| m["field"].as_str()).collect();
        assert_eq!(
            fields,
            ["unique_message_ids", "duplicate_messages", "refused"]
        );
        assert_eq!(
            m[1],
            json!({"field": "duplicate_messages", "sent": 10, "report": 9})
        );
    }
}
