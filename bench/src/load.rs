//! The SMTP load itself: N connections × M messages, each connection reused,
//! recording DATA→250 latency and the instant of every 250.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::smtp::{build_message, Client, Sent};
use crate::stats;
use crate::ws::Arrivals;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub smtp: String,
    pub connections: usize,
    pub per_connection: usize,
    pub size: usize,
    /// Recipient addresses; message `i` of connection `c` goes to `rcpts[(c + i) % len]`.
    pub rcpts: Arc<Vec<String>>,
    pub from: String,
    pub timeout: Duration,
}

/// What happened.
pub struct LoadResult {
    pub started: Instant,
    pub data_to_250: Histogram<u64>,
    /// For each message index, when its 250 was read (None if refused / not sent).
    pub acked_at: Vec<Option<Instant>>,
    /// Refusals by `STAGE CODE`.
    pub refused: BTreeMap<String, u64>,
    /// Connection-level failures (connect, timeouts, drops), with one sample text each.
    pub errors: BTreeMap<String, u64>,
    pub pipelining: bool,
}

impl LoadResult {
    pub fn acked(&self) -> usize {
        self.acked_at.iter().filter(|a| a.is_some()).count()
    }
    pub fn last_ack(&self) -> Option<Instant> {
        self.acked_at.iter().flatten().max().copied()
    }
    pub fn refused_4xx(&self) -> u64 {
        self.refused
            .iter()
            .filter(|(k, _)| k.contains(" 4"))
            .map(|(_, v)| v)
            .sum()
    }
    pub fn refused_5xx(&self) -> u64 {
        self.refused
            .iter()
            .filter(|(k, _)| k.contains(" 5"))
            .map(|(_, v)| v)
            .sum()
    }
}

struct ConnResult {
    hist: Histogram<u64>,
    acks: Vec<(usize, Instant)>,
    refused: BTreeMap<String, u64>,
    error: Option<String>,
    pipelining: bool,
}

/// Run the load; `arrivals` names each message's token (and run id).
pub async fn run(plan: LoadPlan, arrivals: Arc<Arrivals>) -> LoadResult {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.connections);
    for c in 0..plan.connections {
        let plan = plan.clone();
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            one_connection(c, &plan, &arrivals).await
        }));
    }
    let total = plan.connections * plan.per_connection;
    let mut result = LoadResult {
        started,
        data_to_250: stats::new_histogram(),
        acked_at: vec![None; total],
        refused: BTreeMap::new(),
        errors: BTreeMap::new(),
        pipelining: true,
    };
    for t in tasks {
        let r = match t.await {
            Ok(r) => r,
            Err(e) => {
                *result.errors.entry(format!("task: {e}")).or_default() += 1;
                continue;
            }
        };
        let _ = result.data_to_250.add(&r.hist);
        for (i, at) in r.acks {
            if let Some(slot) = result.acked_at.get_mut(i) {
                *slot = Some(at);
            }
        }
        for (k, v) in r.refused {
            *result.refused.entry(k).or_default() += v;
        }
        if let Some(e) = r.error {
            *result.errors.entry(e).or_default() += 1;
        }
        result.pipelining &= r.pipelining;
    }
    result
}

async fn one_connection(c: usize, plan: &LoadPlan, arrivals: &Arrivals) -> ConnResult {
    let mut r = ConnResult {
        hist: stats::new_histogram(),
        acks: Vec::with_capacity(plan.per_connection),
        refused: BTreeMap::new(),
        error: None,
        pipelining: false,
    };
    let mut client = match Client::connect(&plan.smtp, plan.timeout).await {
        Ok(cl) => cl,
        Err(e) => {
            r.error = Some(format!("connect: {e:#}"));
            return r;
        }
    };
    r.pipelining = client.pipelining();
    for j in 0..plan.per_connection {
        let idx = c * plan.per_connection + j;
        let rcpt = &plan.rcpts[(c + j) % plan.rcpts.len()];
        let token = arrivals.token(idx);
        let body = build_message(&plan.from, rcpt, &token, plan.size);
        match client.send(&plan.from, rcpt, &body).await {
            Ok(Sent::Accepted { latency, at }) => {
                stats::record(&mut r.hist, latency);
                r.acks.push((idx, at));
            }
            Ok(Sent::Refused { stage, reply }) => {
                *r.refused
                    .entry(format!("{stage} {}", reply.code))
                    .or_default() += 1;
            }
            Err(e) => {
                r.error = Some(format!("session: {e:#}"));
                return r;
            }
        }
    }
    client.quit().await;
    r
}
