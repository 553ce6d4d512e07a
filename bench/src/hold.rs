//! `spawn`: start uncorreo exactly as `--spawn` does, create the named
//! mailboxes, print how to reach it, and keep it running until SIGTERM/SIGINT.
//! bench/compare.sh drives postfix's smtp-source against it this way.

use anyhow::Context;

use crate::rest::Rest;
use crate::spawn::{Server, SpawnArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// Local parts of mailboxes to create (with the bench plan's quotas).
    #[arg(long = "mailbox")]
    pub mailboxes: Vec<String>,
    #[arg(long, default_value_t = 1440)]
    pub ttl_minutes: u64,
    #[command(flatten)]
    pub spawn_args: SpawnArgs,
}

pub async fn run(args: HoldArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.spawn_args).await?;
    let out = hold(&args, &server).await;
    server.stop(args.spawn_args.keep_data).await;
    out
}

async fn hold(args: &HoldArgs, server: &Server) -> anyhow::Result<()> {
    let mut created = Vec::new();
    println!("pid {}", server.pid);
    println!("smtp {}", server.smtp);
    println!("http {}", server.http);
    println!("key {}", server.api_key);
    println!("data {}", server.data_dir.display());
    let mut rest = Rest::new(&server.http, &server.api_key);
    for m in &args.mailboxes {
        let b = rest.create_mailbox(m, args.ttl_minutes).await?;
        println!("mailbox {} {}", b.address, b.token);
        created.push(b);
    }
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // What the server says it stored, so scripts can check every ack was kept.
    for b in &created {
        let mut rest = Rest::new(&server.http, &b.token);
        let path = format!("/api/v1/mailboxes/{}", b.address);
        let count = match rest.request(hyper::Method::GET, &path, None).await {
            Ok(r) if r.status == 200 => r
                .json()
                .ok()
                .and_then(|v| v.get("message_count").and_then(|c| c.as_u64()))
                .map_or("?".to_owned(), |c| c.to_string()),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => format!("{e:#}"),
        };
        println!("count {} {count}", b.address);
    }
    Ok(())
}
