//! `uncorreo-bench`: load generators for uncorreo — an SMTP burst watched over
//! WebSocket, idle WebSocket subscribers vs server memory, REST reads under load.
//! `bench/compare.sh` runs the side-by-side comparison with postfix's
//! smtp-sink and an fsyncing aiosmtpd.

use clap::{Parser, Subcommand};
use uncorreo_bench::{burst, fleet, hold, idle, read};

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks for uncorreo (client side; the server is spawned or given)"
)]
struct Cli {
    /// Client worker threads (0 = one per core).
    #[arg(long, global = true, default_value_t = 0)]
    client_threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N SMTP connections x M pipelined messages to K mailboxes, each watched over WebSocket.
    Burst(burst::BurstArgs),
    /// Hold N idle WebSocket subscribers and report the server's RSS.
    WsIdle(idle::IdleArgs),
    /// REST read latency (list a 1,000-message mailbox, get a message) during a burst.
    Read(read::ReadArgs),
    /// Start uncorreo with the bench config, create mailboxes, print its
    /// addresses and API key, and hold it until SIGTERM (for bench/compare.sh).
    Spawn(hold::HoldArgs),
    /// CI fleet: N tests at once, each create → send → wait → read code → delete.
    Fleet(fleet::FleetArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Thousands of sockets: lift the soft open-files limit to the hard one.
    // A server started by --spawn inherits it.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cli.client_threads > 0 {
        rt.worker_threads(cli.client_threads);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Burst(a) => burst::run(a).await,
            Command::WsIdle(a) => idle::run(a, nofile).await,
            Command::Read(a) => read::run(a).await,
            Command::Spawn(a) => hold::run(a).await,
            Command::Fleet(a) => fleet::run(a).await,
        }
    })
}
