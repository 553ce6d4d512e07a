//! Real-time measurements against a spawned release server (not a test):
//!
//! - `idle N K`: hold N idle WebSocket subscribers over K anonymous
//!   mailboxes; print the server's RSS before and after, then send one
//!   message per mailbox over SMTP and count the events (expect N).
//! - `latency K M C`: K mailboxes, one WebSocket each; C SMTP connections
//!   send M messages of 4 KiB in total; per message, the time from reading
//!   the `250` (sent after commit) to the event arriving, and from the end of
//!   DATA to the event; then the same burst shape through Redis: PUBLISH of
//!   a 300-byte payload to K channels over C connections, PUBLISH→receive.
//!
//! `cargo build --release --bin uncorreo && cargo run --release --example
//! realtime_bench -- idle 10000 100` (redis-server on PATH for `latency`).
//! Uses the uncorreo binary at `UNCORREO_BIN` (default target/release/uncorreo).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Server {
    child: std::process::Child,
    http: String,
    smtp: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server() -> Res<Server> {
    let bin = std::env::var("UNCORREO_BIN").unwrap_or_else(|_| "target/release/uncorreo".into());
    let data = tempfile::tempdir()?;
    let big = "100000000";
    let mut child = std::process::Command::new(bin)
        .env("UNCORREO__ENGINE__DATA_DIR", data.path())
        .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
        .env("UNCORREO__HTTP__LISTEN", "127.0.0.1:0")
        .env("UNCORREO__SMTP__LISTEN", "127.0.0.1:0")
        .env("UNCORREO__LIMITS__IP_REQUESTS_PER_MINUTE", big)
        .env("UNCORREO__PLANS__ANONYMOUS__REQUESTS_PER_MINUTE", big)
        .env("UNCORREO__PLANS__ANONYMOUS__MAX_MAILBOXES", "1000000")
        .env(
            "UNCORREO__PLANS__ANONYMOUS__MAX_MESSAGES_PER_MAILBOX",
            "1000000",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let (mut http, mut smtp) = (String::new(), String::new());
    while http.is_empty() || smtp.is_empty() {
        let line = lines.next().ok_or("server exited")??;
        if let Some(a) = line.strip_prefix("http ") {
            http = a.to_owned();
        } else if let Some(a) = line.strip_prefix("smtp ") {
            smtp = a.to_owned();
        }
    }
    Ok(Server {
        child,
        http,
        smtp,
        _data: data,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// K anonymous mailboxes: (address, session token).
async fn mailboxes(http: &str, k: usize) -> Res<Vec<(String, String)>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut out = Vec::new();
    for _ in 0..k {
        let v: serde_json::Value = client
            .post(format!("http://{http}/api/v1/mailboxes"))
            .json(&serde_json::json!({}))
            .send()
            .await?
            .json()
            .await?;
        let addr = v["address"].as_str().ok_or("no address")?.to_owned();
        let tok = v["session_token"].as_str().ok_or("no token")?.to_owned();
        out.push((addr, tok));
    }
    Ok(out)
}

/// Open a WebSocket and count events into `arrivals[index from subject]`.
async fn subscribe(
    http: &str,
    addr: &str,
    tok: &str,
    base: Instant,
    arrivals: Arc<Vec<AtomicU64>>,
    total: Arc<AtomicU64>,
) -> Res<()> {
    let mut req = format!("ws://{http}/ws/inbox/{addr}?since=0").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {tok}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let now = base.elapsed().as_nanos() as u64 + 1;
                total.fetch_add(1, Ordering::Relaxed);
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                let i = v["subject"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("bench-"))
                    .and_then(|s| s.parse::<usize>().ok());
                if let Some(slot) = i.and_then(|i| arrivals.get(i)) {
                    let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
        }
    });
    Ok(())
}

async fn reply(r: &mut BufReader<TcpStream>) -> Res<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err("smtp closed".into());
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(all);
        }
    }
}

/// One SMTP connection sending `msgs` (index, recipient); returns (index, DATA-end ns, 250 ns).
async fn smtp_send(
    smtp: String,
    msgs: Vec<(usize, String)>,
    size: usize,
    base: Instant,
) -> Res<Vec<(usize, u64, u64)>> {
    let mut r = BufReader::new(TcpStream::connect(&smtp).await?);
    reply(&mut r).await?;
    r.get_mut().write_all(b"EHLO bench\r\n").await?;
    reply(&mut r).await?;
    let mut out = Vec::new();
    for (i, to) in msgs {
        let cmd = format!("MAIL FROM:<b@bench.example>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        r.get_mut().write_all(cmd.as_bytes()).await?;
        for _ in 0..3 {
            reply(&mut r).await?;
        }
        let mut body = format!("From: b@bench.example\r\nTo: {to}\r\nSubject: bench-{i}\r\n\r\n");
        while body.len() < size {
            body.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n");
        }
        body.push_str(".\r\n");
        r.get_mut().write_all(body.as_bytes()).await?;
        let sent = base.elapsed().as_nanos() as u64;
        let rep = reply(&mut r).await?;
        let acked = base.elapsed().as_nanos() as u64;
        if !rep.starts_with("250") {
            return Err(format!("message {i}: {rep}").into());
        }
        out.push((i, sent, acked));
    }
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    Ok(out)
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

async fn idle(n: usize, k: usize) -> Res<()> {
    let server = spawn_server()?;
    let pid = server.child.id();
    let boxes = mailboxes(&server.http, k).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let base = Instant::now();
    let arrivals = Arc::new(Vec::new());
    let total = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    for j in 0..n {
        let (a, t) = &boxes[j % k];
        subscribe(&server.http, a, t, base, arrivals.clone(), total.clone()).await?;
    }
    let connect = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid);
    println!(
        "idle: {n} WebSocket subscribers over {k} mailboxes connected in {:.2} s; server RSS {} KiB before, {} KiB after (+{} KiB, {:.0} bytes/subscriber)",
        connect.as_secs_f64(),
        before,
        after,
        after.saturating_sub(before),
        (after.saturating_sub(before) * 1024) as f64 / n as f64
    );
    // Liveness: one message per mailbox must reach every subscriber.
    let msgs: Vec<(usize, String)> = boxes
        .iter()
        .enumerate()
        .map(|(i, (a, _))| (i, a.clone()))
        .collect();
    smtp_send(server.smtp.clone(), msgs, 512, base).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "idle: liveness {} events of {n} expected; server RSS now {} KiB",
        total.load(Ordering::Relaxed),
        rss_kib(pid)
    );
    Ok(())
}

async fn latency(k: usize, m: usize, c: usize) -> Res<()> {
    let server = spawn_server()?;
    let boxes = mailboxes(&server.http, k).await?;
    let base = Instant::now();
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..m).map(|_| AtomicU64::new(0)).collect());
    let total = Arc::new(AtomicU64::new(0));
    for (a, t) in &boxes {
        subscribe(&server.http, a, t, base, arrivals.clone(), total.clone()).await?;
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..c {
        let msgs: Vec<(usize, String)> = (conn..m)
            .step_by(c)
            .map(|i| (i, boxes[(conn + i) % k].0.clone()))
            .collect();
        tasks.push(tokio::spawn(smtp_send(
            server.smtp.clone(),
            msgs,
            4096,
            base,
        )));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await?.map_err(|e| e.to_string())?);
    }
    let acked_wall = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::Relaxed) < m as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events_wall = t0.elapsed();
    let (mut after_250, mut after_data) = (Vec::new(), Vec::new());
    let (mut lost, mut early) = (0, 0);
    for (i, sent, acked) in &acks {
        match arrivals[*i].load(Ordering::Relaxed) {
            0 => lost += 1,
            ev => {
                let ev = ev - 1;
                if ev < *acked {
                    early += 1;
                }
                after_250.push(ev.saturating_sub(*acked) / 1000 * 1000);
                after_data.push(ev.saturating_sub(*sent));
            }
        }
    }
    println!(
        "uncorreo: {m} msgs x 4 KiB over {c} SMTP connections to {k} watched mailboxes: all 250 in {:.3} s, all events in {:.3} s; lost {lost}",
        acked_wall.as_secs_f64(),
        events_wall.as_secs_f64()
    );
    println!(
        "uncorreo: 250-read -> event p50 {:.0} us p99 {:.0} us max {:.0} us ({early} events arrived before the client read the 250, counted 0)",
        pct(&mut after_250, 0.5),
        pct(&mut after_250, 0.99),
        pct(&mut after_250, 1.0)
    );
    println!(
        "uncorreo: DATA-end -> event (includes group commit + fdatasync) p50 {:.0} us p99 {:.0} us",
        pct(&mut after_data, 0.5),
        pct(&mut after_data, 0.99)
    );
    drop(server);
    redis(k, m, c).await
}

async fn redis(k: usize, m: usize, c: usize) -> Res<()> {
    let port = 6399;
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    let mut tries = 0;
    while TcpStream::connect(&addr).await.is_err() {
        tries += 1;
        if tries > 200 {
            return Err("redis did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let base = Instant::now();
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..m).map(|_| AtomicU64::new(0)).collect());
    let total = Arc::new(AtomicU64::new(0));
    for ch in 0..k {
        let mut s = BufReader::new(TcpStream::connect(&addr).await?);
        let name = format!("box{ch}");
        let cmd = format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{name}\r\n", name.len());
        s.get_mut().write_all(cmd.as_bytes()).await?;
        // The subscribe confirmation: *3, $9 subscribe, $N name, :1.
        for _ in 0..6 {
            let mut l = String::new();
            s.read_line(&mut l).await?;
        }
        let (arrivals, total) = (arrivals.clone(), total.clone());
        tokio::spawn(async move {
            // Each push: *3 / $7 / message / $N / chan / $L / payload.
            loop {
                let mut hdr = String::new();
                for _ in 0..6 {
                    hdr.clear();
                    if s.read_line(&mut hdr).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let len: usize = hdr.trim().trim_start_matches('$').parse().unwrap_or(0);
                let mut payload = vec![0u8; len + 2];
                if s.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let now = base.elapsed().as_nanos() as u64 + 1;
                total.fetch_add(1, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&payload);
                if let Some(i) = text.split('|').next().and_then(|s| s.parse::<usize>().ok()) {
                    if let Some(slot) = arrivals.get(i) {
                        let _ = slot.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..c {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = BufReader::new(TcpStream::connect(&addr).await.map_err(|e| e.to_string())?);
            let mut sent = Vec::new();
            for i in (conn..m).step_by(c) {
                let chan = format!("box{}", (conn + i) % k);
                let payload = format!("{i}|{}", "x".repeat(300));
                let cmd = format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{chan}\r\n${}\r\n{payload}\r\n",
                    chan.len(),
                    payload.len()
                );
                let at = base.elapsed().as_nanos() as u64;
                s.get_mut()
                    .write_all(cmd.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut l = String::new();
                s.read_line(&mut l).await.map_err(|e| e.to_string())?;
                sent.push((i, at));
            }
            Ok::<_, String>(sent)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::Relaxed) < m as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed();
    let mut lat = Vec::new();
    let mut lost = 0;
    for (i, at) in sent {
        match arrivals[i].load(Ordering::Relaxed) {
            0 => lost += 1,
            ev => lat.push((ev - 1).saturating_sub(at)),
        }
    }
    println!(
        "redis: {m} PUBLISH (300 B) over {c} connections to {k} subscribed channels: all received in {:.3} s; lost {lost}; PUBLISH-write -> receive p50 {:.0} us p99 {:.0} us max {:.0} us",
        wall.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("idle") => rt.block_on(idle(num(1, 10_000), num(2, 100))),
        Some("latency") => rt.block_on(latency(num(1, 100), num(2, 10_000), num(3, 100))),
        Some("redis") => rt.block_on(redis(num(1, 100), num(2, 10_000), num(3, 100))),
        _ => Err("usage: realtime_bench idle [N K] | latency [K M C] | redis [K M C]".into()),
    }
}
