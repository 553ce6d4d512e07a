//! Every metric uncorreo exports, in one place: its name, kind, unit and
//! help text. Crates emit through the `metrics` facade with these constants
//! (never a name written as a string: `tests/it/tidy.rs` refuses one), and
//! [`describe_all`] gives `/metrics` a HELP line for each, which
//! `promtool check metrics` requires.
//!
//! Naming follows Prometheus: an `uncorreo_` prefix, snake case, counters
//! end in `_total`, a unit suffix (`_seconds`, `_bytes`) where there is a
//! unit; the unit tests below check every entry.

#![forbid(unsafe_code)]

use metrics::Unit;

/// What a metric counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The exposition name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The base unit, when it has one.
    pub unit: Option<Unit>,
    /// The HELP text.
    pub help: &'static str,
}

/// Partitions this host may serve now (`[cluster]` only).
pub const CLUSTER_PARTITIONS_SERVED: &str = "uncorreo_cluster_partitions_served";
/// Event notices this owner published on NATS ([cluster] only).
pub const CLUSTER_EVENTS_PUBLISHED_TOTAL: &str = "uncorreo_cluster_events_published_total";
/// Event notices this owner dropped instead of publishing ([cluster] only).
pub const CLUSTER_EVENTS_DROPPED_TOTAL: &str = "uncorreo_cluster_events_dropped_total";
/// Waiters on this host for mailboxes other hosts own ([cluster] only).
pub const CLUSTER_REMOTE_WAITERS: &str = "uncorreo_cluster_remote_waiters";
/// Internal hop requests refused for their signature ([cluster] only).
pub const HOP_REFUSED_TOTAL: &str = "uncorreo_hop_refused_total";
/// Requests this host forwarded to another host's hop, by kind and outcome ([cluster] only).
pub const HOP_FORWARDED_TOTAL: &str = "uncorreo_hop_forwarded_total";
/// Hop requests sent once more on a fresh connection after a kept-alive one failed ([cluster] only).
pub const HOP_REPLAYED_TOTAL: &str = "uncorreo_hop_replayed_total";
/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS_TOTAL: &str = "uncorreo_http_requests_total";
/// Time from request to response head, by route template and method.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "uncorreo_http_request_duration_seconds";
/// HTTP requests refused with 429 by a rate limit.
pub const HTTP_RATE_LIMITED_TOTAL: &str = "uncorreo_http_rate_limited_total";
/// HTTP connections open now (all cores).
pub const HTTP_CONNECTIONS_OPEN: &str = "uncorreo_http_connections_open";
/// HTTP connections answered 503 and closed at accept, by the bound that was full (total, per_ip).
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "uncorreo_http_connections_refused_total";
/// HTTP connections closed by us, by reason (header_timeout, idle, write_timeout).
pub const HTTP_CONNECTIONS_CUT_TOTAL: &str = "uncorreo_http_connections_cut_total";
/// Messages stored through HTTP send (native and Mailpit-compatible), one per mailbox copy.
pub const HTTP_SEND_MESSAGES_TOTAL: &str = "uncorreo_http_send_messages_total";
/// Mailboxes created over HTTP, by owner kind.
pub const MAILBOXES_CREATED_TOTAL: &str = "uncorreo_mailboxes_created_total";
/// Stored messages the parsed view could not be built for (too large, unparseable, parser panic).
pub const MESSAGE_PARSE_FAILURES_TOTAL: &str = "uncorreo_message_parse_failures_total";
/// Outbound webhook attempts and events, by outcome (delivered, failed, refused, exhausted, dropped, quarantined).
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "uncorreo_webhook_deliveries_total";
/// Events handed to the fan-out after commit (one per stored message).
pub const EVENTS_PUBLISHED_TOTAL: &str = "uncorreo_events_published_total";
/// Subscribers cut off because their bounded queue overflowed.
pub const SUBSCRIBERS_LAGGED_TOTAL: &str = "uncorreo_subscribers_lagged_total";
/// WebSocket connections ended, by close reason.
pub const WS_CONNECTIONS_TOTAL: &str = "uncorreo_ws_connections_total";
/// SSE streams ended, by reason.
pub const SSE_STREAMS_TOTAL: &str = "uncorreo_sse_streams_total";
/// Messages a live load campaign accepted (one per recipient copy), by campaign.
pub const CAMPAIGN_MESSAGES_TOTAL: &str = "uncorreo_campaign_messages_total";
/// Refusals counted in a live load campaign's report (fault plans, limits), by campaign and reply code.
pub const CAMPAIGN_REFUSED_TOTAL: &str = "uncorreo_campaign_refused_total";
/// Bytes of the messages a live load campaign accepted, as received, by campaign.
pub const CAMPAIGN_BYTES_TOTAL: &str = "uncorreo_campaign_bytes_total";
/// Long-poll waits answered, by outcome.
pub const WAITS_TOTAL: &str = "uncorreo_waits_total";
/// Events (replayed or live) written to WebSocket and SSE clients, by transport.
pub const REALTIME_EVENTS_SENT_TOTAL: &str = "uncorreo_realtime_events_sent_total";
/// Live mailboxes.
pub const MAILBOXES: &str = "uncorreo_mailboxes";
/// Live stored messages.
pub const MESSAGES: &str = "uncorreo_messages";
/// Log segment files on disk.
pub const SEGMENTS: &str = "uncorreo_segments";
/// Bytes of log segment files on disk.
pub const DISK_BYTES: &str = "uncorreo_disk_bytes";
/// Live event subscribers (WebSocket, SSE, long-poll).
pub const SUBSCRIBERS: &str = "uncorreo_subscribers";
/// Appends waiting for a log writer, summed over shards.
pub const QUEUE_DEPTH: &str = "uncorreo_queue_depth";
/// 1 once a write or sync failed; storage refuses writes until restart.
pub const ENGINE_POISONED: &str = "uncorreo_engine_poisoned";
/// Records per committed log batch (one write and one fdatasync).
pub const BATCH_RECORDS: &str = "uncorreo_batch_records";
/// Time from an append being queued to it being durable and acknowledged.
pub const COMMIT_SECONDS: &str = "uncorreo_commit_seconds";
/// Duration of one fdatasync of a log segment.
pub const FSYNC_SECONDS: &str = "uncorreo_fsync_seconds";
/// Compaction passes run.
pub const COMPACTION_RUNS_TOTAL: &str = "uncorreo_compaction_runs_total";
/// Bytes of log segments reclaimed by compaction.
pub const COMPACTION_RECLAIMED_BYTES_TOTAL: &str = "uncorreo_compaction_reclaimed_bytes_total";
/// Stored records found corrupt (bad checksum) and quarantined.
pub const CORRUPT_RECORDS_TOTAL: &str = "uncorreo_corrupt_records_total";
/// Open SMTP sessions.
pub const SMTP_ACTIVE_SESSIONS: &str = "uncorreo_smtp_active_sessions";
/// SMTP sessions ended, by outcome.
pub const SMTP_SESSIONS_TOTAL: &str = "uncorreo_smtp_sessions_total";
/// SMTP messages answered at the end of DATA/BDAT, by outcome.
pub const SMTP_MESSAGES_TOTAL: &str = "uncorreo_smtp_messages_total";
/// Message bytes received over SMTP.
pub const SMTP_BYTES_TOTAL: &str = "uncorreo_smtp_bytes_total";
/// Time from the end of DATA/BDAT to the durable 250 reply.
pub const SMTP_DATA_TO_ACK_SECONDS: &str = "uncorreo_smtp_data_to_ack_seconds";
/// SMTP AUTH attempts, by outcome (ok, failed).
pub const SMTP_AUTH_TOTAL: &str = "uncorreo_smtp_auth_total";
/// Messages whose bare LF line ends were stored as CRLF.
pub const SMTP_BARE_LF_NORMALIZED_TOTAL: &str = "uncorreo_smtp_bare_lf_normalized_total";
/// SES notifications received over SNS, by outcome.
pub const SES_NOTIFICATIONS_TOTAL: &str = "uncorreo_ses_notifications_total";
/// MCP tool calls answered, by tool and outcome (ok, refused, invalid).
pub const MCP_TOOL_CALLS_TOTAL: &str = "uncorreo_mcp_tool_calls_total";
/// MCP sessions refused with 503 because max_sessions were open.
pub const MCP_SESSIONS_REFUSED_TOTAL: &str = "uncorreo_mcp_sessions_refused_total";
/// Operator actions over the admin socket, by action and outcome.
pub const ADMIN_ACTIONS_TOTAL: &str = "uncorreo_admin_actions_total";

/// Bytes reserved right now by message bodies being received (SMTP, SES webhook, HTTP send).
pub const IN_FLIGHT_BYTES: &str = "uncorreo_in_flight_bytes";
/// The budget of bytes in flight ([memory] in_flight_bytes).
pub const IN_FLIGHT_LIMIT_BYTES: &str = "uncorreo_in_flight_limit_bytes";
/// Bodies refused because the budget of bytes in flight was spent, by front end (smtp, ses, http_send, mailpit_send, routed).
pub const IN_FLIGHT_REFUSED_TOTAL: &str = "uncorreo_in_flight_refused_total";

/// Every metric, in the order `/metrics` describes them.
pub const ALL: &[Metric] = &[
    Metric {
        name: CLUSTER_PARTITIONS_SERVED,
        kind: Kind::Gauge,
        unit: None,
        help: "Partitions this host holds the lease of and may serve now ([cluster] only).",
    },
    Metric {
        name: CLUSTER_EVENTS_PUBLISHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Event notices (mailbox and sequence) published on uncorreo.ev.<partition> ([cluster] only).",
    },
    Metric {
        name: CLUSTER_EVENTS_DROPPED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Event notices dropped because the publish queue was full or NATS refused them; waiters elsewhere fill the gap from the owner ([cluster] only).",
    },
    Metric {
        name: CLUSTER_REMOTE_WAITERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Real-time waiters (WebSocket, SSE, wait) on this host for mailboxes another host owns ([cluster] only).",
    },
    Metric {
        name: HOP_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Internal hop requests refused for a missing, stale or wrong signature ([cluster] only).",
    },
    Metric {
        name: HOP_FORWARDED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Requests forwarded to another host's internal hop, by kind (resolve, deliver, http, member) and outcome ([cluster] only).",
    },
    Metric {
        name: HOP_REPLAYED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Hop requests sent once more on a fresh connection after a kept-alive one failed before answering ([cluster] only).",
    },
    Metric {
        name: HTTP_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP requests answered, by route template, method and status.",
    },
    Metric {
        name: HTTP_REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from request to response head, by route template and method.",
    },
    Metric {
        name: HTTP_RATE_LIMITED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP requests refused with 429 by a rate limit.",
    },
    Metric {
        name: HTTP_CONNECTIONS_OPEN,
        kind: Kind::Gauge,
        unit: None,
        help: "HTTP connections open now (all cores).",
    },
    Metric {
        name: HTTP_CONNECTIONS_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP connections answered 503 and closed at accept, by the bound that was full (total, per_ip).",
    },
    Metric {
        name: HTTP_CONNECTIONS_CUT_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "HTTP connections closed by us, by reason (header_timeout, idle, write_timeout).",
    },
    Metric {
        name: HTTP_SEND_MESSAGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Messages stored through HTTP send (native and Mailpit-compatible), one per mailbox copy.",
    },
    Metric {
        name: MAILBOXES_CREATED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Mailboxes created over HTTP, by owner kind.",
    },
    Metric {
        name: MESSAGE_PARSE_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Stored messages the parsed view could not be built for (too large, unparseable, parser panic).",
    },
    Metric {
        name: WEBHOOK_DELIVERIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Outbound webhook attempts and events, by outcome (delivered, failed, refused, exhausted, dropped, quarantined).",
    },
    Metric {
        name: EVENTS_PUBLISHED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Events handed to the fan-out after commit (one per stored message).",
    },
    Metric {
        name: SUBSCRIBERS_LAGGED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Subscribers cut off because their bounded queue overflowed.",
    },
    Metric {
        name: WS_CONNECTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "WebSocket connections ended, by close reason.",
    },
    Metric {
        name: SSE_STREAMS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SSE streams ended, by reason.",
    },
    Metric {
        name: CAMPAIGN_MESSAGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Messages a live load campaign accepted (one per recipient copy), by campaign; the series ends with the campaign.",
    },
    Metric {
        name: CAMPAIGN_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Refusals counted in a live load campaign's report (fault plans, limits), by campaign and reply code; since the server started.",
    },
    Metric {
        name: CAMPAIGN_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes of the messages a live load campaign accepted, as received, by campaign.",
    },
    Metric {
        name: WAITS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Long-poll waits answered, by outcome.",
    },
    Metric {
        name: REALTIME_EVENTS_SENT_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Events (replayed or live) written to WebSocket and SSE clients, by transport.",
    },
    Metric {
        name: MAILBOXES,
        kind: Kind::Gauge,
        unit: None,
        help: "Live mailboxes.",
    },
    Metric {
        name: MESSAGES,
        kind: Kind::Gauge,
        unit: None,
        help: "Live stored messages.",
    },
    Metric {
        name: SEGMENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Log segment files on disk.",
    },
    Metric {
        name: DISK_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes of log segment files on disk.",
    },
    Metric {
        name: SUBSCRIBERS,
        kind: Kind::Gauge,
        unit: None,
        help: "Live event subscribers (WebSocket, SSE, long-poll).",
    },
    Metric {
        name: QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: None,
        help: "Appends waiting for a log writer, summed over shards.",
    },
    Metric {
        name: ENGINE_POISONED,
        kind: Kind::Gauge,
        unit: None,
        help: "1 once a write or sync failed; storage refuses writes until restart.",
    },
    Metric {
        name: BATCH_RECORDS,
        kind: Kind::Histogram,
        unit: None,
        help: "Records per committed log batch (one write and one fdatasync).",
    },
    Metric {
        name: COMMIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from an append being queued to it being durable and acknowledged.",
    },
    Metric {
        name: FSYNC_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Duration of one fdatasync of a log segment.",
    },
    Metric {
        name: COMPACTION_RUNS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Compaction passes run.",
    },
    Metric {
        name: COMPACTION_RECLAIMED_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes of log segments reclaimed by compaction.",
    },
    Metric {
        name: CORRUPT_RECORDS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Stored records found corrupt (bad checksum) and quarantined.",
    },
    Metric {
        name: SMTP_ACTIVE_SESSIONS,
        kind: Kind::Gauge,
        unit: None,
        help: "Open SMTP sessions.",
    },
    Metric {
        name: SMTP_SESSIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SMTP sessions ended, by outcome.",
    },
    Metric {
        name: SMTP_MESSAGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SMTP messages answered at the end of DATA/BDAT, by outcome.",
    },
    Metric {
        name: SMTP_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Message bytes received over SMTP.",
    },
    Metric {
        name: SMTP_DATA_TO_ACK_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from the end of DATA/BDAT to the durable 250 reply.",
    },
    Metric {
        name: SMTP_AUTH_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SMTP AUTH attempts, by outcome (ok, failed).",
    },
    Metric {
        name: SMTP_BARE_LF_NORMALIZED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Messages whose bare LF line ends were stored as CRLF.",
    },
    Metric {
        name: SES_NOTIFICATIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "SES notifications received over SNS, by outcome.",
    },
    Metric {
        name: MCP_TOOL_CALLS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "MCP tool calls answered, by tool and outcome (ok, refused, invalid).",
    },
    Metric {
        name: MCP_SESSIONS_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "MCP sessions refused with 503 because max_sessions were open.",
    },
    Metric {
        name: ADMIN_ACTIONS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Operator actions over the admin socket, by action and outcome.",
    },
    Metric {
        name: IN_FLIGHT_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Bytes reserved right now by message bodies being received (SMTP, SES webhook, HTTP send).",
    },
    Metric {
        name: IN_FLIGHT_LIMIT_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "The budget of bytes in flight ([memory] in_flight_bytes).",
    },
    Metric {
        name: IN_FLIGHT_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        help: "Bodies refused because the budget of bytes in flight was spent, by front end (smtp, ses, http_send, mailpit_send, routed).",
    },
];

/// Give the installed recorder the HELP text (and unit) of every metric.
pub fn describe_all() {
    for m in ALL {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(m.name, unit, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(m.name, unit, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The entry for `name`, if it is one of ours.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        for m in ALL {
            let n = m.name;
            assert!(n.starts_with("uncorreo_"), "{n}: prefix");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}: snake case"
            );
            assert!(!n.contains("__") && !n.ends_with('_'), "{n}: underscores");
            assert_eq!(
                m.kind == Kind::Counter,
                n.ends_with("_total"),
                "{n}: _total is for counters only"
            );
            match m.unit {
                Some(Unit::Seconds) => assert!(n.contains("_seconds"), "{n}: unit in the name"),
                Some(Unit::Bytes) => assert!(n.contains("_bytes"), "{n}: unit in the name"),
                Some(other) => panic!("{n}: unit {other:?} not expected"),
                None => assert!(
                    !n.contains("_seconds") && !n.ends_with("_bytes") && !n.contains("_bytes_"),
                    "{n}: a unit suffix needs its unit"
                ),
            }
            assert!(m.help.ends_with('.') && m.help.len() > 10, "{n}: help text");
        }
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
        }
        assert_eq!(find(SMTP_BYTES_TOTAL).map(|m| m.kind), Some(Kind::Counter));
        assert_eq!(find("uncorreo_nothing"), None);
    }
}
