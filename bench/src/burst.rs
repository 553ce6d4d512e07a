//! `burst`: N SMTP connections × M messages to K mailboxes, each mailbox watched
//! by a WebSocket subscriber; throughput, DATA→250 and 250→event latency, and
//! every message acknowledged but never pushed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::load::{self, LoadPlan};
use crate::rest::{Mailbox, Rest};
use crate::spawn::{Server, SpawnArgs};
use crate::stats::{self, Summary};
use crate::ws::{self, Arrivals};

/// Where the server is: given addresses, or `--spawn`.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// SMTP address of a running server.
    #[arg(long)]
    pub smtp: Option<String>,
    /// HTTP address of a running server; without it no mailbox is created and no
    /// event is watched (SMTP-only, e.g. against smtp-sink).
    #[arg(long)]
    pub http: Option<String>,
    /// API key (`uct_…`) for the REST API and WebSocket.
    #[arg(long, env = "UNCORREO_API_KEY", default_value = "")]
    pub api_key: String,
    /// Start `uncorreo` itself on a temporary data dir.
    #[arg(long, conflicts_with_all = ["smtp", "http"])]
    pub spawn: bool,
    #[command(flatten)]
    pub spawn_args: SpawnArgs,
}

/// A resolved target, owning the spawned server if any.
pub struct Resolved {
    pub smtp: String,
    pub http: Option<String>,
    pub api_key: String,
    pub server: Option<Server>,
}

impl Target {
    pub async fn resolve(&self) -> anyhow::Result<Resolved> {
        if self.spawn {
            let s = Server::start(&self.spawn_args).await?;
            eprintln!(
                "spawned uncorreo pid {} smtp {} http {} data {}",
                s.pid,
                s.smtp,
                s.http,
                s.data_dir.display()
            );
            return Ok(Resolved {
                smtp: s.smtp.clone(),
                http: Some(s.http.clone()),
                api_key: s.api_key.clone(),
                server: Some(s),
            });
        }
        let Some(smtp) = self.smtp.clone() else {
            bail!("give --smtp ADDR (and --http ADDR --api-key KEY) or --spawn");
        };
        Ok(Resolved {
            smtp,
            http: self.http.clone(),
            api_key: self.api_key.clone(),
            server: None,
        })
    }
}

impl Target {
    /// Resolve the target, run `f` on it, then stop a spawned server whatever
    /// `f` returned (so a failed run never leaves a server behind).
    pub async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&Resolved) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let target = self.resolve().await?;
        let out = f(&target).await;
        target.finish(self.spawn_args.keep_data).await;
        out
    }
}

impl Resolved {
    pub async fn finish(self, keep: bool) {
        if let Some(s) = self.server {
            s.stop(keep).await;
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BurstArgs {
    /// SMTP connections, all at once.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: usize,
    /// Messages per connection (the connection is reused).
    #[arg(long, short = 'm', default_value_t = 100)]
    pub messages: usize,
    /// Bytes per message.
    #[arg(long, short = 's', default_value_t = 4096)]
    pub size: usize,
    /// Mailboxes (each with one WebSocket subscriber).
    #[arg(long, short = 'k', default_value_t = 100)]
    pub mailboxes: usize,
    /// How long to wait after the last 250 for outstanding events.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
    /// Don't subscribe over WebSocket (SMTP only).
    #[arg(long)]
    pub no_ws: bool,
    /// Mailbox TTL asked for at creation.
    #[arg(long, default_value_t = 60)]
    pub ttl_minutes: u64,
    /// Per-reply timeout.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Serialize)]
pub struct BurstReport {
    pub connections: usize,
    pub messages_per_connection: usize,
    pub message_bytes: usize,
    pub mailboxes: usize,
    pub subscribers: usize,
    pub pipelining: bool,
    pub sent: usize,
    pub acked: usize,
    pub refused_4xx: u64,
    pub refused_5xx: u64,
    pub refused: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// From the first connect to the last 250.
    pub wall_to_last_ack_s: f64,
    /// From the first connect to the last event of an acknowledged message.
    pub wall_to_last_event_s: Option<f64>,
    pub acked_per_s: f64,
    pub data_to_250: Summary,
    pub ack_to_event: Option<Summary>,
    /// Events that arrived before the client had read the 250 (counted as 0 latency).
    pub events_before_ack: u64,
    /// Acknowledged messages never seen as an event within the grace period. Must be 0.
    pub lost: Option<usize>,
    pub duplicate_events: u64,
    pub unmatched_events: u64,
    pub events_for_refused: usize,
}

pub async fn run(args: BurstArgs) -> anyhow::Result<()> {
    let report = args.target.with(async |t| burst(&args, t).await).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// A fresh run id so events of earlier runs never match.
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Create `k` mailboxes through the API (8 in parallel), or just name them.
pub async fn mailboxes(
    http: Option<&str>,
    key: &str,
    run: &str,
    prefix: &str,
    k: usize,
    domain: &str,
    ttl_minutes: u64,
) -> anyhow::Result<Vec<Mailbox>> {
    let locals: Vec<String> = (0..k).map(|i| format!("{prefix}{run}x{i}")).collect();
    let Some(http) = http else {
        return Ok(locals
            .iter()
            .map(|l| Mailbox {
                address: format!("{l}@{domain}"),
                token: key.to_owned(),
            })
            .collect());
    };
    let mut out = vec![
        Mailbox {
            address: String::new(),
            token: String::new()
        };
        k
    ];
    let lanes = 8.min(k.max(1));
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let mut rest = Rest::new(http, key);
        let mine: Vec<(usize, String)> = locals
            .iter()
            .enumerate()
            .filter(|(i, _)| i % lanes == lane)
            .map(|(i, l)| (i, l.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for (i, l) in mine {
                got.push((i, rest.create_mailbox(&l, ttl_minutes).await?));
            }
            anyhow::Ok(got)
        }));
    }
    for t in tasks {
        for (i, a) in t.await.context("mailbox task")?? {
            out[i] = a;
        }
    }
    Ok(out)
}

/// Run one burst against a resolved target.
pub async fn burst(args: &BurstArgs, target: &Resolved) -> anyhow::Result<BurstReport> {
    if args.connections == 0 || args.mailboxes == 0 {
        bail!("need at least one connection and one mailbox");
    }
    let run = run_id();
    let boxes = mailboxes(
        target.http.as_deref(),
        &target.api_key,
        &run,
        "b",
        args.mailboxes,
        &args.target.spawn_args.domain,
        args.ttl_minutes,
    )
    .await?;
    let total = args.connections * args.messages;
    let arrivals = Arc::new(Arrivals::new(Instant::now(), &run, total));
    let mut watchers = Vec::new();
    if let (Some(http), false) = (target.http.as_deref(), args.no_ws) {
        let mut conns = Vec::new();
        for b in &boxes {
            let (http, b) = (http.to_owned(), b.clone());
            conns.push(tokio::spawn(async move {
                ws::connect(&http, &b.token, &b.address).await
            }));
        }
        for c in conns {
            let sock = c.await.context("ws task")??;
            watchers.push(tokio::spawn(ws::watch(sock, arrivals.clone())));
        }
    }
    let plan = LoadPlan {
        smtp: target.smtp.clone(),
        connections: args.connections,
        per_connection: args.messages,
        size: args.size,
        rcpts: Arc::new(boxes.into_iter().map(|b| b.address).collect()),
        from: "sender@example.com".to_owned(),
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let result = load::run(plan, arrivals.clone()).await;

    let watching = !watchers.is_empty();
    if watching {
        let deadline = Instant::now() + Duration::from_secs(args.grace_secs);
        loop {
            let missing = result
                .acked_at
                .iter()
                .enumerate()
                .filter(|(i, a)| a.is_some() && arrivals.get(*i).is_none())
                .count();
            if missing == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for w in &watchers {
        w.abort();
    }

    let base = arrivals.base;
    let ns = |t: Instant| {
        u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
    };
    let mut ack_to_event = stats::new_histogram();
    let (mut lost, mut before, mut for_refused) = (0usize, 0u64, 0usize);
    let mut last_event: Option<u64> = None;
    for (i, acked) in result.acked_at.iter().enumerate() {
        let ev = arrivals.get(i);
        match (acked, ev) {
            (Some(a), Some(e)) => {
                let a = ns(*a);
                if e < a {
                    before += 1;
                }
                stats::record(&mut ack_to_event, Duration::from_nanos(e.saturating_sub(a)));
                last_event = Some(last_event.map_or(e, |l| l.max(e)));
            }
            (Some(_), None) => lost += 1,
            (None, Some(_)) => for_refused += 1,
            (None, None) => {}
        }
    }
    let started_ns = ns(result.started);
    let wall_ack = result
        .last_ack()
        .map(|l| l.saturating_duration_since(result.started).as_secs_f64())
        .unwrap_or(0.0);
    let acked = result.acked();
    Ok(BurstReport {
        connections: args.connections,
        messages_per_connection: args.messages,
        message_bytes: args.size,
        mailboxes: args.mailboxes,
        subscribers: watchers.len(),
        pipelining: result.pipelining,
        sent: total,
        acked,
        refused_4xx: result.refused_4xx(),
        refused_5xx: result.refused_5xx(),
        refused: result.refused.clone(),
        errors: result.errors.clone(),
        wall_to_last_ack_s: wall_ack,
        wall_to_last_event_s: last_event.map(|e| e.saturating_sub(started_ns) as f64 / 1e9),
        acked_per_s: if wall_ack > 0.0 {
            acked as f64 / wall_ack
        } else {
            0.0
        },
        data_to_250: Summary::of(&result.data_to_250),
        ack_to_event: watching.then(|| Summary::of(&ack_to_event)),
        events_before_ack: before,
        lost: watching.then_some(lost),
        duplicate_events: arrivals.duplicates.load(Ordering::Relaxed),
        unmatched_events: arrivals.unmatched.load(Ordering::Relaxed),
        events_for_refused: for_refused,
    })
}

fn print_report(r: &BurstReport) {
    println!(
        "burst: {} connections x {} messages x {} B -> {} mailboxes, {} WebSocket subscribers, pipelining {}",
        r.connections, r.messages_per_connection, r.message_bytes, r.mailboxes, r.subscribers, r.pipelining
    );
    println!(
        "sent {}  acked(250) {}  4xx {}  5xx {}  connection errors {}",
        r.sent,
        r.acked,
        r.refused_4xx,
        r.refused_5xx,
        r.errors.values().sum::<u64>()
    );
    for (k, v) in &r.refused {
        println!("  refused {k}: {v}");
    }
    for (k, v) in &r.errors {
        println!("  error x{v}: {k}");
    }
    println!(
        "wall: first connect -> last 250 {:.3} s ({:.0} msg/s)",
        r.wall_to_last_ack_s, r.acked_per_s
    );
    if let Some(w) = r.wall_to_last_event_s {
        println!("wall: first connect -> last event {w:.3} s");
    }
    println!("{}", r.data_to_250.line("DATA->250"));
    if let Some(s) = &r.ack_to_event {
        println!("{}", s.line("250->event"));
        println!(
            "events before the client read the 250: {} (counted as 0 ms)",
            r.events_before_ack
        );
    }
    if let Some(l) = r.lost {
        println!(
            "LOST (acked, never pushed): {l}   duplicates {}  unmatched {}  events for refused {}",
            r.duplicate_events, r.unmatched_events, r.events_for_refused
        );
    }
}
