//! The dispatcher: one thread with its own current-thread runtime, one task
//! per endpoint, each delivering its events in order, one at a time.
//!
//! An endpoint's task finds its next event by reading the index past its
//! cursor (so the queue is the log itself, bounded by
//! `queue_limit` per mailbox), sends it with retries and exponential
//! backoff, and only then moves the cursor durably. It sleeps on its
//! mailboxes' fan-out subscriptions (woken after each commit) or, at most,
//! `rescan_interval_ms`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uncorreo_engine::{Engine, ListEntry, MailboxInfo, MessageMeta};

use super::client::{AttemptError, Client, Target};
use super::{cursor, endpoints, remove, save_cursor, scope_mailboxes, sign, Endpoint, Scope};
use super::{Webhooks, WebhooksConfig};
use crate::realtime::EventView;
use uncorreo_metric_names::WEBHOOK_DELIVERIES_TOTAL;

struct Ctx {
    engine: Engine,
    config: WebhooksConfig,
    client: Client,
}

/// Start the dispatcher thread; it stops when `shutdown` is cancelled.
/// Returns `None` when `[webhooks] enabled = false`.
pub fn spawn(
    engine: Engine,
    webhooks: &Webhooks,
    shutdown: CancellationToken,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let config = webhooks.config().clone();
    if !config.enabled {
        return Ok(None);
    }
    let changed = Arc::clone(&webhooks.changed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = std::thread::Builder::new()
        .name("webhooks".to_owned())
        .spawn(move || {
            let client = Client::new(
                config.allow_private,
                Duration::from_millis(config.connect_timeout_ms.max(1)),
                Duration::from_millis(config.timeout_ms.max(1)),
            );
            let ctx = Arc::new(Ctx {
                engine,
                config,
                client,
            });
            runtime.block_on(run(ctx, changed, shutdown));
        })?;
    Ok(Some(handle))
}

async fn run(ctx: Arc<Ctx>, changed: Arc<Notify>, shutdown: CancellationToken) {
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let rescan = Duration::from_millis(ctx.config.rescan_interval_ms.max(1));
    loop {
        let mut live = HashSet::new();
        for endpoint in endpoints(&ctx.engine) {
            // A per-mailbox endpoint goes with its mailbox (expired or
            // deleted), so disposable mailboxes leave no endpoints behind.
            if let Scope::Mailbox { mailbox, .. } = &endpoint.scope {
                if ctx
                    .engine
                    .mailbox_by_id(uncorreo_engine::MailboxId(*mailbox))
                    .is_none()
                {
                    if let Err(e) = remove(&ctx.engine, &endpoint.id).await {
                        tracing::warn!(%e, id = %endpoint.id, "could not remove the webhook of a gone mailbox");
                    }
                    continue;
                }
            }
            live.insert(endpoint.id.clone());
            if !running.contains_key(&endpoint.id) {
                let cancel = shutdown.child_token();
                running.insert(endpoint.id.clone(), cancel.clone());
                tokio::spawn(run_endpoint(Arc::clone(&ctx), endpoint, cancel));
            }
        }
        running.retain(|id, cancel| {
            let keep = live.contains(id);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => {}
            () = tokio::time::sleep(rescan) => {}
        }
    }
}

/// Delay before attempt `attempt + 1` (attempt counts from 1).
fn backoff(config: &WebhooksConfig, attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(32);
    Duration::from_millis(
        config
            .backoff_initial_ms
            .saturating_mul(factor)
            .min(config.backoff_max_ms),
    )
}

async fn run_endpoint(ctx: Arc<Ctx>, endpoint: Endpoint, cancel: CancellationToken) {
    let Ok(target) = Target::parse(&endpoint.url) else {
        tracing::warn!(id = %endpoint.id, "webhook URL no longer parses; not delivering");
        return;
    };
    let engine = &ctx.engine;
    let rescan = Duration::from_millis(ctx.config.rescan_interval_ms.max(1));
    let wake = Arc::new(Notify::new());
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<u64>();
    let mut watched: HashSet<u64> = HashSet::new();
    let mut cursor = cursor(engine, &endpoint.id);
    loop {
        if cancel.is_cancelled() {
            return;
        }
        while let Ok(id) = ended_rx.try_recv() {
            watched.remove(&id);
        }
        let boxes = scope_mailboxes(engine, &endpoint.scope);
        for mb in &boxes {
            if watched.insert(mb.id.0) {
                watch(engine, mb, &wake, &cancel, &ended_tx);
            }
        }
        let mut dirty = false;
        let before = cursor.len();
        cursor.retain(|id, _| boxes.iter().any(|m| m.id.0 == *id));
        dirty |= cursor.len() != before;
        let mut next: Option<(&MailboxInfo, MessageMeta)> = None;
        for mb in &boxes {
            let from = cursor.get(&mb.id.0).copied().unwrap_or(0);
            let pending = mb.last_seq.saturating_sub(from);
            let from = if pending > ctx.config.queue_limit {
                let skip_to = mb.last_seq - ctx.config.queue_limit;
                counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => "dropped")
                    .increment(skip_to - from);
                cursor.insert(mb.id.0, skip_to);
                dirty = true;
                skip_to
            } else {
                from
            };
            if let Some(meta) = next_message(engine, mb, from, &mut cursor, &mut dirty) {
                next = Some((mb, meta));
                break;
            }
        }
        if dirty {
            if let Err(e) = save_cursor(engine, &endpoint.id, &cursor).await {
                tracing::warn!(%e, id = %endpoint.id, "could not save a webhook cursor");
            }
        }
        let Some((mb, meta)) = next else {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(rescan) => {}
            }
            continue;
        };
        let seq = meta.id.seq;
        let mailbox = mb.id.0;
        let view = EventView::from_meta(&mb.address.to_string(), &meta);
        if !deliver(&ctx, &endpoint, &target, &view, &cancel).await {
            return;
        }
        cursor.insert(mailbox, seq);
        // Not saved → delivered again after a restart (at-least-once).
        if let Err(e) = save_cursor(engine, &endpoint.id, &cursor).await {
            tracing::warn!(%e, id = %endpoint.id, "could not save a webhook cursor");
        }
    }
}

/// The first message of `mb` past `from`. A quarantined (corrupt) message
/// is never sent: the cursor moves past it, so it does not stop the
/// messages behind it.
fn next_message(
    engine: &Engine,
    mb: &MailboxInfo,
    mut from: u64,
    cursor: &mut super::Cursor,
    dirty: &mut bool,
) -> Option<MessageMeta> {
    loop {
        match engine
            .list_entries(mb.id, from, 1)
            .ok()?
            .into_iter()
            .next()?
        {
            ListEntry::Message(meta) => return Some(meta),
            ListEntry::Gap { seq } => {
                counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => "quarantined").increment(1);
                cursor.insert(mb.id.0, seq);
                *dirty = true;
                from = seq;
            }
        }
    }
}

/// Forward `mb`'s fan-out events as wake-ups until it ends (mailbox gone,
/// lagged, shutdown); then report it so the next pass subscribes again.
fn watch(
    engine: &Engine,
    mb: &MailboxInfo,
    wake: &Arc<Notify>,
    cancel: &CancellationToken,
    ended: &mpsc::UnboundedSender<u64>,
) {
    let id = mb.id.0;
    let Ok(mut sub) = engine.subscribe(mb.id) else {
        let _ = ended.send(id);
        return;
    };
    let (wake, cancel, ended) = (Arc::clone(wake), cancel.clone(), ended.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                r = sub.recv_shared() => {
                    wake.notify_one();
                    if r.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ended.send(id);
    });
}

/// Send one event until a 2xx or the retry budget is spent. False only when
/// cancelled (the cursor must then stay where it is).
async fn deliver(
    ctx: &Ctx,
    endpoint: &Endpoint,
    target: &Target,
    view: &EventView,
    cancel: &CancellationToken,
) -> bool {
    let body = bytes::Bytes::from(serde_json::to_vec(view).unwrap_or_default());
    // The same id on every attempt and after a restart: receivers dedupe on it.
    let id = format!("msg_{}_{}", endpoint.id, view.message_id);
    let max = ctx.config.max_attempts.max(1);
    for attempt in 1..=max {
        let timestamp = ctx.engine.now_ms() / 1000;
        let Some(signature) = sign::signature(&endpoint.secret, &id, timestamp, &body) else {
            tracing::warn!(id = %endpoint.id, "webhook secret unreadable; event dropped");
            counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => "exhausted").increment(1);
            return true;
        };
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        let result = tokio::select! {
            () = cancel.cancelled() => return false,
            r = ctx.client.post(target, &headers, body.clone()) => r,
        };
        match result {
            Ok(_) => {
                counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => "delivered").increment(1);
                return true;
            }
            Err(e) => {
                let outcome = match e {
                    AttemptError::Address(_) => "refused",
                    _ => "failed",
                };
                counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
                tracing::debug!(%e, id = %endpoint.id, attempt, "webhook attempt failed");
            }
        }
        if attempt == max {
            break;
        }
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(backoff(&ctx.config, attempt)) => {}
        }
    }
    tracing::warn!(id = %endpoint.id, event = %id, attempts = max, "webhook retry budget spent; event dropped");
    counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => "exhausted").increment(1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = WebhooksConfig {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..WebhooksConfig::default()
        };
        let ms: Vec<u128> = (1..=6).map(|a| backoff(&config, a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&config, u32::MAX).as_millis(), 1000);
    }
}
