//! `read`: REST read latency — list a mailbox holding 1,000 messages and get
//! single messages — while an SMTP burst runs against other mailboxes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::Method;
use serde::Serialize;
use serde_json::Value;

use crate::burst::{mailboxes, run_id, Target};
use crate::load::{self, LoadPlan};
use crate::rest::Rest;
use crate::stats::{self, Summary};
use crate::ws::{self, Arrivals};

#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// Messages stored in the mailbox that is listed.
    #[arg(long, default_value_t = 1000)]
    pub fill: usize,
    /// Requests of each kind (list, get).
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Parallel HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Listing path; `{address}` is replaced.
    #[arg(
        long,
        default_value = "/api/v1/mailboxes/{address}/messages?limit=1000"
    )]
    pub list_path: String,
    /// Single-message path; `{address}` and `{id}` are replaced.
    #[arg(long, default_value = "/api/v1/mailboxes/{address}/messages/{id}")]
    pub get_path: String,
    /// Background burst: connections x messages of --size bytes to --burst-mailboxes.
    #[arg(long, default_value_t = 50)]
    pub burst_connections: usize,
    #[arg(long, default_value_t = 400)]
    pub burst_messages: usize,
    #[arg(long, default_value_t = 50)]
    pub burst_mailboxes: usize,
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Measure reads on a quiet server instead.
    #[arg(long)]
    pub no_burst: bool,
    /// Don't watch the burst's mailboxes over WebSocket (by default each has
    /// one subscriber, as in `burst`, so the server pushes while it serves reads).
    #[arg(long)]
    pub burst_no_ws: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Serialize)]
pub struct ReadReport {
    pub filled: usize,
    pub listed: usize,
    pub list_bytes: usize,
    pub list: Summary,
    pub get: Summary,
    pub http_errors: u64,
    pub first_http_error: Option<String>,
    pub reads_wall_s: f64,
    pub burst_acked: Option<usize>,
    pub burst_wall_s: Option<f64>,
    /// Whether the burst was still running when the last read finished.
    pub burst_covered_reads: Option<bool>,
}

pub async fn run(args: ReadArgs) -> anyhow::Result<()> {
    let r = args.target.with(async |t| read(&args, t).await).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "read: mailbox with {} messages (listing returned {} in {} bytes), {} errors{}",
            r.filled,
            r.listed,
            r.list_bytes,
            r.http_errors,
            r.first_http_error
                .as_deref()
                .map(|e| format!(" first: {e}"))
                .unwrap_or_default()
        );
        println!("{}", r.list.line("list 1000"));
        println!("{}", r.get.line("get message"));
        if let (Some(a), Some(w)) = (r.burst_acked, r.burst_wall_s) {
            println!(
                "background burst: {a} acked in {w:.2} s; still running when reads ended: {:?}",
                r.burst_covered_reads
            );
        }
    }
    Ok(())
}

/// Message ids in a listing: `[..]`, `{"messages": [..]}`, `{"items": [..]}` or `{"data": [..]}`.
fn ids_in(v: &Value) -> Vec<String> {
    let list = v.as_array().or_else(|| {
        ["messages", "items", "data"]
            .iter()
            .find_map(|k| v.get(k)?.as_array())
    });
    list.map(|l| {
        l.iter()
            .filter_map(|m| match m.get("id")? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

async fn read(args: &ReadArgs, target: &crate::burst::Resolved) -> anyhow::Result<ReadReport> {
    let Some(http) = target.http.clone() else {
        bail!("read needs --http (or --spawn)");
    };
    let run = run_id();
    let boxes = mailboxes(
        Some(&http),
        &target.api_key,
        &run,
        "r",
        1,
        &args.target.spawn_args.domain,
        60,
    )
    .await?;
    let mb = boxes.first().context("no mailbox")?.clone();
    let address = mb.address.clone();
    let fill_conns = 10.min(args.fill.max(1));
    let per = args.fill.div_ceil(fill_conns);
    let fill = load::run(
        LoadPlan {
            smtp: target.smtp.clone(),
            connections: fill_conns,
            per_connection: per,
            size: args.size,
            rcpts: Arc::new(vec![address.clone()]),
            from: "sender@example.com".to_owned(),
            timeout: Duration::from_secs(60),
        },
        Arc::new(Arrivals::new(
            Instant::now(),
            &format!("{run}f"),
            fill_conns * per,
        )),
    )
    .await;
    let mut rest = Rest::new(&http, &mb.token);
    let list_path = args.list_path.replace("{address}", &address);
    let first = rest.request(Method::GET, &list_path, None).await?;
    if first.status != 200 {
        bail!(
            "GET {list_path}: HTTP {} {}",
            first.status,
            String::from_utf8_lossy(&first.body)
        );
    }
    let ids = ids_in(&first.json()?);
    if ids.is_empty() {
        bail!("no message ids in GET {list_path}");
    }

    let burst = (!args.no_burst).then(|| {
        let smtp = target.smtp.clone();
        let http = http.clone();
        let key = target.api_key.clone();
        let (k, c, m, size, domain) = (
            args.burst_mailboxes,
            args.burst_connections,
            args.burst_messages,
            args.size,
            args.target.spawn_args.domain.clone(),
        );
        let run = format!("{run}b");
        let watch = !args.burst_no_ws;
        tokio::spawn(async move {
            let rcpts = mailboxes(Some(&http), &key, &run, "rb", k, &domain, 60).await?;
            let arrivals = Arc::new(Arrivals::new(Instant::now(), &run, c * m));
            let mut watchers = Vec::new();
            for b in rcpts.iter().filter(|_| watch) {
                let sock = ws::connect(&http, &b.token, &b.address).await?;
                watchers.push(tokio::spawn(ws::watch(sock, arrivals.clone())));
            }
            let r = load::run(
                LoadPlan {
                    smtp,
                    connections: c,
                    per_connection: m,
                    size,
                    rcpts: Arc::new(rcpts.into_iter().map(|b| b.address).collect()),
                    from: "sender@example.com".to_owned(),
                    timeout: Duration::from_secs(60),
                },
                arrivals,
            )
            .await;
            for w in &watchers {
                w.abort();
            }
            anyhow::Ok((r.acked(), r.last_ack().map(|l| (l, l - r.started))))
        })
    });
    if burst.is_some() {
        // Let the burst's connections get going before measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let ids = Arc::new(ids);
    let started = Instant::now();
    let clients = args.clients.max(1);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, key, ids) = (http.clone(), mb.token.clone(), ids.clone());
        let (list_path, get_path, address) =
            (list_path.clone(), args.get_path.clone(), address.clone());
        let n = args.requests / clients + usize::from(c < args.requests % clients);
        tasks.push(tokio::spawn(async move {
            let mut rest = Rest::new(&http, &key);
            let (mut lh, mut gh) = (stats::new_histogram(), stats::new_histogram());
            let (mut errors, mut first_err) = (0u64, None::<String>);
            for i in 0..n {
                let id = &ids[(c * 7919 + i * 31) % ids.len()];
                let get = get_path.replace("{address}", &address).replace("{id}", id);
                for (path, h) in [(&list_path, &mut lh), (&get, &mut gh)] {
                    let t = Instant::now();
                    match rest.request(Method::GET, path, None).await {
                        Ok(r) if r.status == 200 => stats::record(h, t.elapsed()),
                        Ok(r) => {
                            errors += 1;
                            first_err
                                .get_or_insert_with(|| format!("GET {path}: HTTP {}", r.status));
                        }
                        Err(e) => {
                            errors += 1;
                            first_err.get_or_insert_with(|| format!("GET {path}: {e:#}"));
                        }
                    }
                }
            }
            (lh, gh, errors, first_err)
        }));
    }
    let (mut lh, mut gh) = (stats::new_histogram(), stats::new_histogram());
    let (mut errors, mut first_err) = (0, None);
    for t in tasks {
        let (l, g, e, f) = t.await.context("read task")?;
        let _ = lh.add(&l);
        let _ = gh.add(&g);
        errors += e;
        if first_err.is_none() {
            first_err = f;
        }
    }
    let reads_end = Instant::now();
    let (mut burst_acked, mut burst_wall, mut covered) = (None, None, None);
    if let Some(b) = burst {
        let (acked, last) = b.await.context("burst task")??;
        burst_acked = Some(acked);
        burst_wall = last.map(|(_, w)| w.as_secs_f64());
        covered = last.map(|(l, _)| l >= reads_end);
    }
    Ok(ReadReport {
        filled: fill.acked(),
        listed: ids.len(),
        list_bytes: first.body.len(),
        list: Summary::of(&lh),
        get: Summary::of(&gh),
        http_errors: errors,
        first_http_error: first_err,
        reads_wall_s: started.elapsed().as_secs_f64(),
        burst_acked,
        burst_wall_s: burst_wall,
        burst_covered_reads: covered,
    })
}
