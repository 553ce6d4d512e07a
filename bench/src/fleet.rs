//! `fleet`: the CI-fleet workload. N "tests" run at once; each creates a
//! mailbox over REST, has one sign-up mail with a fresh code sent to it over
//! SMTP, waits for it, reads the code, checks it, and deletes the mailbox.
//! Reports flows/s and the flow latency. Against uncorreo the wait is one
//! long-poll (`/wait`, whose answer carries the extracted codes); against
//! the seed architecture reproduction (`bench/seed/seed.py`, `--api seed`)
//! the test polls the listing, as the seed's clients must, then fetches the
//! message and finds the code in its text itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::Method;
use serde::Serialize;
use serde_json::Value;

use crate::burst::{run_id, Resolved, Target};
use crate::rest::Rest;
use crate::smtp::{Client, Sent};
use crate::stats::{self, Summary};

/// Which REST API the flows speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// uncorreo: long-poll `wait`, codes extracted by the server.
    Uncorreo,
    /// bench/seed/seed.py: poll the listing, fetch the text, find the code.
    Seed,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Tests running at once (one flow each).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub tests: usize,
    /// The API the flows speak.
    #[arg(long, value_enum, default_value = "uncorreo")]
    pub api: Api,
    /// `--api seed`: interval between two polls of the listing.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Give up on a flow after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub tests: usize,
    pub ok: usize,
    pub failed: usize,
    /// The first failure's reason, if any.
    pub first_failure: Option<String>,
    /// From starting the first flow to the end of the last.
    pub wall_s: f64,
    /// Flows completed per second of wall time.
    pub flows_per_s: f64,
    /// Latency of the completed flows (create → delete).
    pub flow: Summary,
}

/// The report of `tests` flows that took `wall` in all; each result is a
/// completed flow's latency or why it failed.
pub fn summarize(
    tests: usize,
    wall: Duration,
    results: &[Result<Duration, String>],
) -> FleetReport {
    let mut h = stats::new_histogram();
    let mut first_failure = None;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(d) => stats::record(&mut h, *d),
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert_with(|| e.clone());
            }
        }
    }
    let ok = results.len() - failed;
    let wall_s = wall.as_secs_f64();
    FleetReport {
        tests,
        ok,
        failed: failed + tests.saturating_sub(results.len()),
        first_failure,
        wall_s,
        flows_per_s: if wall_s > 0.0 {
            ok as f64 / wall_s
        } else {
            0.0
        },
        flow: Summary::of(&h),
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let r = args.target.with(async |t| fleet(&args, t).await).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "fleet ({:?}): {} tests at once, {} ok, {} failed{}",
            args.api,
            r.tests,
            r.ok,
            r.failed,
            r.first_failure
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        println!("wall {:.3} s = {:.1} flows/s", r.wall_s, r.flows_per_s);
        println!("{}", r.flow.line("flow"));
    }
    if r.failed > 0 {
        bail!("{} of {} flows failed", r.failed, r.tests);
    }
    Ok(())
}

async fn fleet(args: &FleetArgs, target: &Resolved) -> anyhow::Result<FleetReport> {
    let Some(http) = target.http.clone() else {
        bail!("fleet needs --http (or --spawn)");
    };
    if args.tests == 0 {
        bail!("need at least one test");
    }
    let run = run_id();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.tests);
    for i in 0..args.tests {
        let flow = Flow {
            http: http.clone(),
            smtp: target.smtp.clone(),
            key: target.api_key.clone(),
            local: format!("ci{run}x{i}"),
            code: format!("{:06}", rand::random_range(100_000..1_000_000u32)),
            api: args.api,
            poll: Duration::from_millis(args.poll_ms),
            timeout: Duration::from_secs(args.timeout_secs),
        };
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match tokio::time::timeout(flow.timeout, flow.run()).await {
                Ok(Ok(())) => Ok(t.elapsed()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("flow timed out after {:?}", flow.timeout)),
            }
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
    }
    Ok(summarize(args.tests, started.elapsed(), &results))
}

/// One test's flow.
struct Flow {
    http: String,
    smtp: String,
    key: String,
    local: String,
    code: String,
    api: Api,
    poll: Duration,
    timeout: Duration,
}

impl Flow {
    async fn run(&self) -> anyhow::Result<()> {
        let mut rest = Rest::new(&self.http, &self.key);
        let mailbox = rest.create_mailbox(&self.local, 10).await?;
        // Session-token mailboxes are read with their token.
        let mut rest = Rest::new(&self.http, &mailbox.token);
        let base = format!("/api/v1/mailboxes/{}", mailbox.address);
        // The tested application sends the mail while the test already waits
        // for it: the test cannot know when it will arrive.
        let ((), code) = tokio::try_join!(
            self.send(&mailbox.address),
            self.read_code(&mut rest, &base)
        )?;
        if code != self.code {
            bail!("read code {code}, sent {}", self.code);
        }
        let r = rest.request(Method::DELETE, &base, None).await?;
        if r.status != 204 {
            bail!("DELETE {base}: HTTP {}", r.status);
        }
        Ok(())
    }

    async fn read_code(&self, rest: &mut Rest, base: &str) -> anyhow::Result<String> {
        match self.api {
            Api::Uncorreo => {
                let timeout = self.timeout.as_secs().clamp(1, 25);
                let v = get_json(rest, &format!("{base}/wait?timeout={timeout}")).await?;
                code_in_wait(&v).with_context(|| format!("no code in the wait answer {v}"))
            }
            Api::Seed => {
                let id = loop {
                    let v = get_json(rest, &format!("{base}/messages")).await?;
                    if let Some(id) = first_message_id(&v) {
                        break id;
                    }
                    tokio::time::sleep(self.poll).await;
                };
                let v = get_json(rest, &format!("{base}/messages/{id}")).await?;
                let text = v.get("text").and_then(Value::as_str).unwrap_or("");
                find_code(text).with_context(|| format!("no code in the text of {id}"))
            }
        }
    }

    async fn send(&self, to: &str) -> anyhow::Result<()> {
        let from = "no-reply@app.example";
        let body = signup_mail(from, to, &self.code);
        let mut smtp = Client::connect(&self.smtp, self.timeout).await?;
        match smtp.send(from, to, &body).await? {
            Sent::Accepted { .. } => {}
            Sent::Refused { stage, reply } => {
                bail!("SMTP {stage} refused: {} {}", reply.code, reply.text)
            }
        }
        smtp.quit().await;
        Ok(())
    }
}

async fn get_json(rest: &mut Rest, path: &str) -> anyhow::Result<Value> {
    let r = rest.request(Method::GET, path, None).await?;
    if r.status != 200 {
        bail!(
            "GET {path}: HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    r.json()
}

/// The sign-up mail a tested application sends, ending with `.\r\n`.
pub fn signup_mail(from: &str, to: &str, code: &str) -> Vec<u8> {
    format!(
        "From: Example App <{from}>\r\nTo: <{to}>\r\nSubject: Confirm your sign-up\r\n\
         Date: Tue, 24 Nov 2026 20:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Welcome!\r\n\r\nYour verification code is {code}. It expires in 10 minutes.\r\n\r\n\
         If you did not sign up, ignore this mail.\r\n.\r\n"
    )
    .into_bytes()
}

/// The first code of the first message in uncorreo's wait answer.
pub fn code_in_wait(v: &Value) -> Option<String> {
    v.get("messages")?
        .as_array()?
        .first()?
        .get("codes")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_owned)
}

/// The id of the first message in the seed's listing.
pub fn first_message_id(v: &Value) -> Option<String> {
    v.get("messages")?
        .as_array()?
        .first()?
        .get("id")?
        .as_str()
        .map(str::to_owned)
}

/// The first run of exactly six ASCII digits in `text`: what a seed client's
/// test does with the text, since the seed extracts no codes.
pub fn find_code(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_where_each_api_puts_them() {
        assert_eq!(
            find_code("code is 482913. In 10 minutes, 1234567 no").as_deref(),
            Some("482913")
        );
        assert_eq!(find_code("1234567 and 12345"), None);
        let wait = serde_json::json!({"messages": [{"id": "a", "codes": ["482913", "1"]}]});
        assert_eq!(code_in_wait(&wait).as_deref(), Some("482913"));
        assert_eq!(code_in_wait(&serde_json::json!({"messages": []})), None);
        let list = serde_json::json!({"messages": [{"id": "u-1"}, {"id": "u-2"}]});
        assert_eq!(first_message_id(&list).as_deref(), Some("u-1"));
        assert_eq!(first_message_id(&serde_json::json!({"messages": []})), None);
    }

    #[test]
    fn the_sign_up_mail_carries_its_code_and_needs_no_stuffing() {
        let m = signup_mail("a@x", "b@y", "482913");
        let text = String::from_utf8(m).unwrap();
        assert!(text.ends_with("\r\n.\r\n"));
        let body = &text[..text.len() - 3];
        assert!(!body.contains("\n."));
        assert_eq!(find_code(body).as_deref(), Some("482913"));
    }

    #[test]
    fn summary_counts_failures_and_only_completed_flows_make_the_rate() {
        let ms = Duration::from_millis;
        let results = vec![Ok(ms(10)), Err("no code".to_owned()), Ok(ms(30))];
        let r = summarize(4, Duration::from_secs(2), &results);
        assert_eq!((r.ok, r.failed), (2, 2), "a missing result is a failure");
        assert_eq!(r.first_failure.as_deref(), Some("no code"));
        assert!((r.flows_per_s - 1.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.flow.count, 2);
        assert!((r.flow.max_ms - 30.0).abs() < 0.1, "{r:?}");
    }
}
