//! `ws-idle`: hold N idle WebSocket subscribers spread over K mailboxes and
//! report the server's resident memory before and after, then prove they are
//! all alive by sending one message per mailbox and counting the events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::burst::{mailboxes, run_id, Target};
use crate::load::{self, LoadPlan};
use crate::spawn::{nofile_limit, rss_kib};
use crate::ws::{self, Arrivals};

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// WebSocket subscribers to hold.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub subscribers: usize,
    /// Mailboxes they are spread over.
    #[arg(long, short = 'k', default_value_t = 100)]
    pub mailboxes: usize,
    /// Seconds to hold them idle before measuring.
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub parallel_connects: usize,
    /// Server pid to read VmRSS from when not spawned.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Skip the final one-message-per-mailbox liveness check.
    #[arg(long)]
    pub no_verify: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub subscribers: usize,
    pub connected: usize,
    pub connect_errors: usize,
    pub first_connect_error: Option<String>,
    pub connect_wall_s: f64,
    pub server_pid: Option<u32>,
    pub server_nofile: Option<String>,
    pub client_nofile: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub bytes_per_subscriber: Option<f64>,
    /// Events received after one message per mailbox (expect = connected).
    pub verify_events: Option<u64>,
    pub verify_expected: Option<usize>,
}

pub async fn run(args: IdleArgs, client_nofile: u64) -> anyhow::Result<()> {
    let r = args
        .target
        .with(async |t| {
            let pid = t.server.as_ref().map(|s| s.pid).or(args.pid);
            idle(&args, t, pid, client_nofile).await
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "ws-idle: {}/{} subscribers connected in {:.2} s ({} errors{})",
            r.connected,
            r.subscribers,
            r.connect_wall_s,
            r.connect_errors,
            r.first_connect_error
                .as_deref()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default()
        );
        println!(
            "server pid {:?}  RSS before {:?} KiB  after {:?} KiB  => {:?} bytes/subscriber",
            r.server_pid,
            r.rss_before_kib,
            r.rss_after_kib,
            r.bytes_per_subscriber.map(|b| b.round())
        );
        println!(
            "open-files limit: client {}  server {:?}",
            r.client_nofile, r.server_nofile
        );
        if let (Some(got), Some(want)) = (r.verify_events, r.verify_expected) {
            println!("liveness: one message per mailbox -> {got} events of {want} expected");
        }
    }
    Ok(())
}

async fn idle(
    args: &IdleArgs,
    target: &crate::burst::Resolved,
    pid: Option<u32>,
    client_nofile: u64,
) -> anyhow::Result<IdleReport> {
    let Some(http) = target.http.clone() else {
        bail!("ws-idle needs --http (or --spawn)");
    };
    let run = run_id();
    let boxes = mailboxes(
        Some(&http),
        &target.api_key,
        &run,
        "i",
        args.mailboxes.max(1),
        &args.target.spawn_args.domain,
        60,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = pid.and_then(rss_kib);
    let rcpts: Vec<String> = boxes.iter().map(|b| b.address.clone()).collect();
    let arrivals = Arc::new(Arrivals::new(Instant::now(), &run, rcpts.len()));
    let gate = Arc::new(Semaphore::new(args.parallel_connects.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let (http, key, addr) = (
            http.clone(),
            boxes[i % boxes.len()].token.clone(),
            boxes[i % boxes.len()].address.clone(),
        );
        let (gate, arrivals) = (gate.clone(), arrivals.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.context("gate")?;
            let sock = ws::connect(&http, &key, &addr).await?;
            drop(permit);
            Ok::<_, anyhow::Error>(tokio::spawn(ws::watch(sock, arrivals)))
        }));
    }
    let mut watchers = Vec::new();
    let mut first_err = None;
    let mut errors = 0;
    for t in tasks {
        match t.await.context("connect task")? {
            Ok(w) => watchers.push(w),
            Err(e) => {
                errors += 1;
                first_err.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let connect_wall_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let rss_after = pid.and_then(rss_kib);
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) if !watchers.is_empty() => {
            Some((a as f64 - b as f64) * 1024.0 / watchers.len() as f64)
        }
        _ => None,
    };

    let mut verify = None;
    if !args.no_verify && !watchers.is_empty() {
        let plan = LoadPlan {
            smtp: target.smtp.clone(),
            connections: 1,
            per_connection: rcpts.len(),
            size: 1024,
            rcpts: Arc::new(rcpts.clone()),
            from: "sender@example.com".to_owned(),
            timeout: Duration::from_secs(30),
        };
        let sent = load::run(plan, arrivals.clone()).await;
        // Each mailbox has ~subscribers/k watchers; every one must see its message.
        let expected = (0..rcpts.len())
            .filter(|i| sent.acked_at.get(*i).is_some_and(|a| a.is_some()))
            .map(|i| (0..watchers.len()).filter(|w| w % rcpts.len() == i).count())
            .sum::<usize>();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (arrivals.total.load(Ordering::Relaxed) as usize) < expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        verify = Some((arrivals.total.load(Ordering::Relaxed), expected));
    }
    for w in &watchers {
        w.abort();
    }
    Ok(IdleReport {
        subscribers: args.subscribers,
        connected: watchers.len(),
        connect_errors: errors,
        first_connect_error: first_err,
        connect_wall_s,
        server_pid: pid,
        server_nofile: pid.and_then(nofile_limit),
        client_nofile,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_subscriber: per,
        verify_events: verify.map(|v| v.0),
        verify_expected: verify.map(|v| v.1),
    })
}
