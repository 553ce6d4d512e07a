//! Users and API keys across hosts (SCALE.md, "Accounts"): two appliances
//! and one real `nats-server` on loopback, each host owning half the
//! partitions. A key works on every host, whichever host minted it; a
//! revocation or a disabled user is refused everywhere; user ids never
//! collide; and without NATS key checks go on while changes answer `503`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};
use uncorreo::Appliance;
use uncorreo_cluster::partition::{partition_of, Partition, PartitionCount};
use uncorreo_cluster::testing::NatsServer;

use crate::cluster::{eventually, hop_member, secret_file, served, PARTITIONS};
use crate::support::{test_config, DOMAIN};

/// Two hosts: `a` homes partitions below `PARTITIONS / 2`, `b` the rest.
pub(crate) struct Split {
    pub(crate) nats: NatsServer,
    pub(crate) _secret: tempfile::NamedTempFile,
    pub(crate) data_a: tempfile::TempDir,
    pub(crate) data_b: tempfile::TempDir,
    pub(crate) a: Appliance,
    pub(crate) b: Appliance,
}

pub(crate) fn start(
    data: &std::path::Path,
    cluster: uncorreo::config::ClusterConfig,
    tweak: fn(&mut uncorreo::Config),
) -> Appliance {
    let mut config = test_config(data);
    tweak(&mut config);
    config.cluster = Some(cluster);
    crate::realtime::no_rate_limits(&mut config);
    // SMTP AUTH with API keys, in the clear on loopback (the TLS side of
    // AUTH has its own tests in `smtp::auth`).
    config.smtp.auth = uncorreo_smtpd::auth::AuthMode::Keys;
    config.smtp.auth_allow_plaintext = true;
    Appliance::start(config).expect("joins")
}

/// The cluster configuration of `node` in a [`Split`] (also for a host
/// of one started again after a stop).
pub(crate) fn split_member(
    nats: &NatsServer,
    secret: &std::path::Path,
    node: &str,
) -> uncorreo::config::ClusterConfig {
    uncorreo::config::ClusterConfig {
        // A short hop timeout also bounds an accounts write without NATS.
        hop_timeout_secs: 3,
        ..hop_member(nats, node, secret)
    }
}

fn half() -> usize {
    usize::from(PARTITIONS / 2)
}

pub(crate) fn owned_by_a(partition: Partition) -> bool {
    partition.0 < PARTITIONS / 2
}

impl Split {
    pub(crate) fn start() -> Split {
        Split::start_with(|_| {})
    }

    /// Both hosts with `tweak` applied to their configuration.
    pub(crate) fn start_with(tweak: fn(&mut uncorreo::Config)) -> Split {
        let nats = NatsServer::start();
        // b's homes are set before a claims the free ones.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let bucket = uncorreo_cluster::nats::NatsBucket::open(
                    nats.url(),
                    "uncorreo_homes",
                    None,
                    Duration::from_secs(2),
                )
                .await
                .expect("bucket");
                let homes = uncorreo_cluster::assign::Assignments::new(bucket);
                for index in PARTITIONS / 2..PARTITIONS {
                    homes.claim(Partition(index), "b").await.expect("claim");
                }
            });
        let secret = secret_file();
        let (data_a, data_b) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let member = |node| split_member(&nats, secret.path(), node);
        let a = start(data_a.path(), member("a"), tweak);
        let b = start(data_b.path(), member("b"), tweak);
        assert!(
            eventually(Duration::from_secs(30), || served(&a) == half()
                && served(&b) == half()),
            "a serves {}, b serves {}",
            served(&a),
            served(&b)
        );
        Split {
            nats,
            _secret: secret,
            data_a,
            data_b,
            a,
            b,
        }
    }

    fn data(&self, host: &Appliance) -> std::path::PathBuf {
        if std::ptr::eq(host, &self.a) {
            self.data_a.path().to_path_buf()
        } else {
            self.data_b.path().to_path_buf()
        }
    }

    /// An operator command over `host`'s operator socket.
    fn admin(&self, host: &Appliance, request: Value) -> Value {
        operator(&self.data(host), request)
    }

    /// A user made on `host`: (id, key).
    pub(crate) fn user_on(&self, host: &Appliance) -> (u64, String) {
        new_user(&self.data(host))
    }
}

/// An operator command over the operator socket of the host whose data
/// directory is `data`.
fn operator(data: &std::path::Path, request: Value) -> Value {
    let socket = data.join("admin.sock");
    let mut stream = UnixStream::connect(&socket).expect("operator socket");
    let mut line = serde_json::to_vec(&json!({ "request": request })).expect("json");
    line.push(b'\n');
    stream.write_all(&line).expect("write");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("answer");
    serde_json::from_str(&answer).expect("json answer")
}

/// A user made over the operator socket of the host keeping `data`: (id, key).
pub(crate) fn new_user(data: &std::path::Path) -> (u64, String) {
    let answer = operator(data, json!({ "command": "user-create", "plan": "free" }));
    assert_eq!(answer["status"], "ok", "{answer}");
    let id = answer["result"]["id"].as_u64().expect("id");
    let key = answer["result"]["key"].as_str().expect("key").to_owned();
    (id, key)
}

pub(crate) fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub(crate) fn call(
    host: &Appliance,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::blocking::Response {
    let mut request = http()
        .request(method, format!("http://{}{path}", host.http_addr))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().expect("request")
}

fn status(host: &Appliance, method: reqwest::Method, path: &str, key: &str) -> u16 {
    call(host, method, path, key, None).status().as_u16()
}

/// A local part whose address falls in a partition `wanted` accepts.
pub(crate) fn local_part(tag: &str, wanted: impl Fn(Partition) -> bool) -> String {
    let count = PartitionCount::new(PARTITIONS).expect("count");
    (0..10_000)
        .map(|i| format!("{tag}{i}"))
        .find(|local| wanted(partition_of(&format!("{local}@{DOMAIN}"), count)))
        .expect("a local part in the wanted partitions")
}

/// Creates `local@DOMAIN` through `host` with `key`; returns the address.
pub(crate) fn create_mailbox(host: &Appliance, key: &str, local: &str) -> String {
    create_mailbox_from(host, key, json!({ "local_part": local }))
}

/// Creates a mailbox with a random local part through `host` with `key`:
/// its address.
pub(crate) fn create_random_mailbox(host: &Appliance, key: &str) -> String {
    create_mailbox_from(host, key, json!({}))
}

fn create_mailbox_from(host: &Appliance, key: &str, request: Value) -> String {
    let answer = call(
        host,
        reqwest::Method::POST,
        "/api/v1/mailboxes",
        key,
        Some(request),
    );
    assert_eq!(answer.status(), 201, "{:?}", answer.text());
    let body: Value = answer.json().expect("json");
    body["address"].as_str().expect("address").to_owned()
}

/// Mints a key through `host` with `key`: (id, new key).
fn mint(host: &Appliance, key: &str) -> (u64, String) {
    let answer = call(host, reqwest::Method::POST, "/api/v1/keys", key, None);
    assert_eq!(answer.status(), 201, "{:?}", answer.text());
    let body: Value = answer.json().expect("json");
    (
        body["id"].as_u64().expect("id"),
        body["key"].as_str().expect("key").to_owned(),
    )
}

#[test]
fn a_key_minted_on_b_works_on_a_for_every_route() {
    let split = Split::start();
    let (_, first) = split.user_on(&split.b);
    let (id, key) = mint(&split.b, &first);
    // Listed on a: the key is checked there without asking b.
    let listed: Value = call(&split.a, reqwest::Method::GET, "/api/v1/keys", &key, None)
        .json()
        .expect("json");
    assert!(
        listed["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["id"] == id),
        "{listed}"
    );
    // Created through a: one mailbox a owns, one b owns (proxied to b,
    // which checks the same key in its own replica).
    let here = create_mailbox(&split.a, &key, &local_part("here", owned_by_a));
    let there = create_mailbox(&split.a, &key, &local_part("there", |p| !owned_by_a(p)));
    for address in [&here, &there] {
        for host in [&split.a, &split.b] {
            let path = format!("/api/v1/mailboxes/{address}");
            assert_eq!(status(host, reqwest::Method::GET, &path, &key), 200);
            let path = format!("/api/v1/mailboxes/{address}/messages");
            assert_eq!(status(host, reqwest::Method::GET, &path, &key), 200);
        }
    }
}

/// `AUTH PLAIN` with `password` on `host`'s SMTP port: the reply's code.
/// An SMTP session at `host` authenticated with `password` (`AUTH PLAIN`),
/// then `commands` in turn (a line that is `.` ends a message's data);
/// the reply code to `AUTH` and to each command.
fn smtp_auth_then(host: &Appliance, password: &str, commands: &[&str]) -> Vec<String> {
    use base64::Engine as _;
    let stream = std::net::TcpStream::connect(host.smtp_addr).expect("smtp");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = || {
        // The last line of a (multi-line) reply has a space after the code.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("reply");
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.chars().take(3).collect::<String>();
            }
        }
    };
    reply();
    writer.write_all(b"EHLO test.example\r\n").expect("ehlo");
    reply();
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0ci\0{password}"));
    writer
        .write_all(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .expect("auth");
    let mut codes = vec![reply()];
    for command in commands {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("command");
        codes.push(reply());
    }
    codes
}

fn smtp_auth(host: &Appliance, password: &str) -> String {
    smtp_auth_then(host, password, &[]).remove(0)
}

/// An `AUTH` session in `keys` mode may send only to its user's mailboxes,
/// on every host: the owner of a mailbox another host homes checks whose
/// it is at RCPT.
#[test]
fn smtp_auth_at_b_sends_to_its_users_mailbox_on_a_and_not_to_anothers() {
    let split = Split::start();
    let (_, key_x) = split.user_on(&split.b);
    let (_, key_y) = split.user_on(&split.b);
    let mine = create_mailbox(&split.a, &key_x, &local_part("mine", owned_by_a));
    let theirs = create_mailbox(&split.a, &key_y, &local_part("theirs", owned_by_a));
    let codes = smtp_auth_then(
        &split.b,
        &key_x,
        &[
            "MAIL FROM:<ci@test.example>",
            &format!("RCPT TO:<{theirs}>"),
            &format!("RCPT TO:<{mine}>"),
            "DATA",
            "Subject: only mine\r\n\r\nhello\r\n.",
        ],
    );
    assert_eq!(codes, ["235", "250", "550", "250", "354", "250"]);
    let count = |address: &str, key: &str| {
        let answer = call(
            &split.b,
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{address}/messages"),
            key,
            None,
        );
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().expect("json");
        body["messages"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(&mine, &key_x), 1);
    assert_eq!(count(&theirs, &key_y), 0);
}

#[test]
fn smtp_auth_on_a_takes_a_key_minted_on_b() {
    let split = Split::start();
    let (_, first) = split.user_on(&split.b);
    let (_, key) = mint(&split.b, &first);
    // A REST request lets a's replica catch up; SMTP then checks the key there.
    assert_eq!(
        status(&split.a, reqwest::Method::GET, "/api/v1/keys", &key),
        200
    );
    assert_eq!(smtp_auth(&split.a, &key), "235");
    assert_eq!(
        smtp_auth(&split.a, "uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "535"
    );
}

#[test]
fn a_key_revoked_on_a_is_refused_on_b_and_a_disabled_user_everywhere() {
    let split = Split::start();
    let (user, first) = split.user_on(&split.b);
    let (id, key) = mint(&split.b, &first);
    assert_eq!(
        status(&split.a, reqwest::Method::GET, "/api/v1/keys", &key),
        200
    );
    let path = format!("/api/v1/keys/{id}");
    assert_eq!(
        status(&split.a, reqwest::Method::DELETE, &path, &first),
        204
    );
    // Read-your-writes on a: refused at once.
    assert_eq!(
        status(&split.a, reqwest::Method::GET, "/api/v1/keys", &key),
        401
    );
    // On b, as soon as its replica applies the change.
    assert!(eventually(Duration::from_secs(5), || status(
        &split.b,
        reqwest::Method::GET,
        "/api/v1/keys",
        &key
    ) == 401));
    assert_eq!(
        status(&split.b, reqwest::Method::GET, "/api/v1/keys", &first),
        200
    );

    let answer = split.admin(&split.a, json!({ "command": "user-disable", "user": user }));
    assert_eq!(answer["status"], "ok", "{answer}");
    assert_eq!(
        status(&split.a, reqwest::Method::GET, "/api/v1/keys", &first),
        401
    );
    assert!(eventually(Duration::from_secs(5), || status(
        &split.b,
        reqwest::Method::GET,
        "/api/v1/keys",
        &first
    ) == 401));
}

#[test]
fn user_ids_never_collide_and_one_users_mailboxes_are_hidden_from_another() {
    let split = Split::start();
    let (x, key_x) = split.user_on(&split.a);
    let (y, key_y) = split.user_on(&split.b);
    assert_ne!(x, y);
    // Above every id a host hands out on its own.
    assert!(x >= uncorreo_cluster::accounts::ID_BASE && y >= uncorreo_cluster::accounts::ID_BASE);
    let here = create_mailbox(&split.a, &key_x, &local_part("xa", owned_by_a));
    let there = create_mailbox(&split.b, &key_x, &local_part("xb", |p| !owned_by_a(p)));
    for address in [&here, &there] {
        let path = format!("/api/v1/mailboxes/{address}");
        for host in [&split.a, &split.b] {
            assert_eq!(status(host, reqwest::Method::GET, &path, &key_x), 200);
            assert_eq!(status(host, reqwest::Method::GET, &path, &key_y), 404);
            assert_eq!(status(host, reqwest::Method::DELETE, &path, &key_y), 404);
        }
    }
}

#[test]
fn without_nats_keys_are_still_checked_and_account_changes_answer_503() {
    let mut split = Split::start();
    let (_, key) = split.user_on(&split.a);
    split.nats.kill();
    for host in [&split.a, &split.b] {
        assert_eq!(
            status(host, reqwest::Method::GET, "/api/v1/keys", &key),
            200
        );
        assert_eq!(
            status(host, reqwest::Method::GET, "/api/v1/keys", "uct_not-a-key"),
            401
        );
        let answer = call(host, reqwest::Method::POST, "/api/v1/keys", &key, None);
        assert_eq!(answer.status(), 503);
        assert!(answer.headers().contains_key("retry-after"));
        // A user's mailbox is counted across hosts in NATS: not created
        // without it, whichever host owns the partition.
        let answer = call(
            host,
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &key,
            Some(json!({ "local_part": local_part("nonats", owned_by_a) })),
        );
        assert_eq!(answer.status(), 503);
        assert!(answer.headers().contains_key("retry-after"));
    }
    let answer = split.admin(
        &split.b,
        json!({ "command": "user-create", "plan": "free" }),
    );
    assert_eq!(answer["status"], "error", "{answer}");
    assert_eq!(answer["code"], "unavailable", "{answer}");
}

#[test]
fn offline_admin_on_a_cluster_host_makes_users_of_the_cluster() {
    let split = Split::start();
    // A third host's data directory with no server running on it: the CLI
    // opens the disk itself and the accounts in NATS.
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_uncorreo"))
        .args(["admin", "user", "create", "--plan", "free"])
        .env("UNCORREO__ENGINE__DATA_DIR", data.path())
        .env("UNCORREO__ENGINE__MIN_FREE_BYTES", "0")
        .env("UNCORREO__ENGINE__DOMAINS", format!("[\"{DOMAIN}\"]"))
        .env("UNCORREO__CLUSTER__NATS_URL", split.nats.url())
        .env("UNCORREO__CLUSTER__NODE_ID", "c")
        .env("RUST_LOG", "warn")
        .output()
        .expect("uncorreo admin");
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("uct_"))
        .unwrap_or_else(|| panic!("no key printed: {out:?}"))
        .to_owned();
    for host in [&split.a, &split.b] {
        assert_eq!(
            status(host, reqwest::Method::GET, "/api/v1/keys", &key),
            200
        );
    }
}

/// MCP on B with a key minted on B, for mailboxes A owns
/// (`tests/mcp/cluster_key.py`, the official Python SDK): list_mailboxes
/// on B shows the one A keeps (the listing gathered from every host) and
/// not another user's; list, read and
/// wait_for_code run on A with the caller's key; another user's mailbox on
/// A is a tool error byte-identical to a missing one; delete_mailbox
/// deletes it on A.
#[test]
fn mcp_with_a_key_on_b_reads_and_deletes_a_mailbox_a_owns_and_hides_another_users() {
    let split = Split::start();
    let (_, mine) = split.user_on(&split.b);
    let (_, theirs) = split.user_on(&split.a);
    let address = create_mailbox(&split.b, &mine, &local_part("mcpkey", owned_by_a));
    let foreign = create_mailbox(&split.a, &theirs, &local_part("mcpother", owned_by_a));
    let missing = format!("{}@{DOMAIN}", local_part("mcpnobody", owned_by_a));
    let (_, end) = crate::cluster::send(split.b.smtp_addr, &address, "Your code is 731946.");
    assert!(end.expect("data sent").starts_with("250"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let out = std::process::Command::new(crate::mcp::python())
        .arg(dir.join("cluster_key.py"))
        .args(["--url", &format!("http://{}", split.b.http_addr)])
        .args(["--api-key", &mine])
        .args([
            "--address",
            &address,
            "--foreign",
            &foreign,
            "--missing",
            &missing,
        ])
        .args(["--code", "731946"])
        .current_dir(&dir)
        .output()
        .expect("python3 runs (installed by .ci/deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok: key across hosts"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = format!("/api/v1/mailboxes/{address}");
    assert_eq!(status(&split.a, reqwest::Method::GET, &path, &mine), 404);
    let path = format!("/api/v1/mailboxes/{foreign}");
    assert_eq!(status(&split.a, reqwest::Method::GET, &path, &theirs), 200);
}

/// A `free` plan of two mailboxes and three keys per user, on both hosts.
fn small_limits(config: &mut uncorreo::Config) {
    config.plans.0.insert(
        "free".into(),
        uncorreo_api::Plan {
            max_mailboxes: 2,
            max_messages_per_mailbox: 10,
            max_ttl_minutes: 60,
            requests_per_minute: 1_000_000,
        },
    );
    config.limits.max_api_keys_per_user = 3;
}

/// `POST /api/v1/mailboxes` through `host`: the status and the body.
fn try_create(host: &Appliance, key: &str, local: &str) -> (u16, String) {
    let answer = call(
        host,
        reqwest::Method::POST,
        "/api/v1/mailboxes",
        key,
        Some(json!({ "local_part": local })),
    );
    (answer.status().as_u16(), answer.text().expect("body"))
}

/// This host's entry in `user`'s mailbox counts, read from NATS itself.
fn count_in_nats(split: &Split, user: u64, node: &str) -> u32 {
    accounts_entry(&split.nats, &format!("mailboxes.{user}")).map_or(0, |(_, value)| {
        let counts: uncorreo_cluster::accounts::MailboxCounts =
            serde_json::from_slice(&value).expect("counts");
        counts.hosts.get(node).map_or(0, |c| c.n)
    })
}

/// The accounts bucket's entry `key`: its revision and value.
pub(crate) fn accounts_entry(nats: &NatsServer, key: &str) -> Option<(u64, bytes::Bytes)> {
    crate::support::block_on(async {
        let bucket = uncorreo_cluster::nats::NatsBucket::open(
            nats.url(),
            uncorreo_cluster::accounts::ACCOUNTS_BUCKET,
            None,
            Duration::from_secs(2),
        )
        .await
        .expect("bucket");
        use uncorreo_cluster::store::CasBucket;
        let value = bucket.get(key).await.expect("read");
        value.map(|v| (v.revision, v.value))
    })
}

fn assert_mailbox_limit(answer: (u16, String)) {
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert!(answer.1.contains("mailbox-limit"), "{}", answer.1);
}

/// `max_mailboxes` is the user's across the cluster, not per host: one
/// mailbox on each host uses a plan of two, wherever the third is asked
/// for; a delete (on the other host, through the hop) frees the slot at
/// once, a mailbox the count did not see is counted at the owner's next
/// recount, and one expiring on its owner frees its slot.
#[test]
fn max_mailboxes_holds_across_hosts_and_an_ended_mailbox_frees_its_slot() {
    let split = Split::start_with(small_limits);
    let (user, key) = split.user_on(&split.a);
    let on_a = create_mailbox(&split.a, &key, &local_part("quotaa", owned_by_a));
    let on_b = create_mailbox(&split.a, &key, &local_part("quotab", |p| !owned_by_a(p)));
    assert_mailbox_limit(try_create(
        &split.a,
        &key,
        &local_part("quotac", owned_by_a),
    ));
    assert_mailbox_limit(try_create(
        &split.b,
        &key,
        &local_part("quotad", |p| !owned_by_a(p)),
    ));
    assert_mailbox_limit(try_create(
        &split.b,
        &key,
        &local_part("quotae", owned_by_a),
    ));

    // Deleted through a on b, its owner: free before the delete answered.
    let path = format!("/api/v1/mailboxes/{on_b}");
    assert_eq!(status(&split.a, reqwest::Method::DELETE, &path, &key), 204);
    let again = create_mailbox(&split.b, &key, &local_part("quotaf", owned_by_a));
    assert_mailbox_limit(try_create(
        &split.b,
        &key,
        &local_part("quotag", |p| !owned_by_a(p)),
    ));
    let path = format!("/api/v1/mailboxes/{again}");
    assert_eq!(status(&split.b, reqwest::Method::DELETE, &path, &key), 204);

    // A mailbox of the user made on b behind the count's back (as a crash
    // between the count and the create would leave it, the other way
    // round), which expires soon.
    let expiring = local_part("quotah", |p| !owned_by_a(p));
    let engine = split.b.engine.clone();
    let expires_at_ms = engine.now_ms() + 1_500;
    crate::support::block_on(engine.create_mailbox(uncorreo_engine::NewMailbox {
        address: uncorreo_engine::Address::from_parts(&expiring, DOMAIN).expect("address"),
        owner: uncorreo_engine::Owner::User(uncorreo_engine::UserId(user)),
        expires_at_ms,
        max_messages: 10,
    }))
    .expect("created on b");
    // Another of the user's mailboxes ending on b (also made behind the
    // count's back) recounts the user there at once.
    let other = crate::support::block_on(
        engine.create_mailbox(uncorreo_engine::NewMailbox {
            address: uncorreo_engine::Address::from_parts(
                &local_part("quotao", |p| !owned_by_a(p)),
                DOMAIN,
            )
            .expect("address"),
            owner: uncorreo_engine::Owner::User(uncorreo_engine::UserId(user)),
            expires_at_ms: engine.now_ms() + 60_000,
            max_messages: 10,
        }),
    )
    .expect("created on b");
    crate::support::block_on(engine.delete_mailbox(other.id)).expect("deleted");
    assert!(
        eventually(Duration::from_secs(10), || count_in_nats(&split, user, "b")
            == 1),
        "b recounts the mailbox it holds"
    );
    assert_mailbox_limit(try_create(
        &split.a,
        &key,
        &local_part("quotai", owned_by_a),
    ));

    // It expires on b, its owner: the slot is free on a.
    assert!(eventually(Duration::from_secs(10), || engine.now_ms() > expires_at_ms));
    engine.compact_now().expect("expiry pass");
    assert!(
        eventually(Duration::from_secs(10), || count_in_nats(&split, user, "b")
            == 0),
        "b recounts after the expiry"
    );
    create_mailbox(&split.a, &key, &local_part("quotaj", owned_by_a));
    assert_mailbox_limit(try_create(
        &split.b,
        &key,
        &local_part("quotak", |p| !owned_by_a(p)),
    ));
    assert_eq!(count_in_nats(&split, user, "a"), 2, "{on_a} and quotaj");
}

/// `max_api_keys_per_user` is exact across hosts: mints racing on a and b
/// take the free slots and not one more (`403 key-limit`), and a revoked
/// key's slot is free again.
#[test]
fn concurrent_key_mints_on_a_and_b_never_pass_the_limit() {
    let split = Split::start_with(small_limits);
    let (_, first) = split.user_on(&split.a);
    let barrier = std::sync::Barrier::new(8);
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (host, first, barrier) = (
                    if i % 2 == 0 { &split.a } else { &split.b },
                    &first,
                    &barrier,
                );
                scope.spawn(move || {
                    barrier.wait();
                    let answer = call(host, reqwest::Method::POST, "/api/v1/keys", first, None);
                    (answer.status().as_u16(), answer.text().expect("body"))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    let minted: Vec<Value> = answers
        .iter()
        .filter(|(code, _)| *code == 201)
        .map(|(_, body)| serde_json::from_str(body).expect("json"))
        .collect();
    assert_eq!(minted.len(), 2, "{answers:?}");
    for (code, body) in answers.iter().filter(|(code, _)| *code != 201) {
        assert_eq!(*code, 403, "{body}");
        assert!(body.contains("key-limit"), "{body}");
    }
    for host in [&split.a, &split.b] {
        let listed: Value = call(host, reqwest::Method::GET, "/api/v1/keys", &first, None)
            .json()
            .expect("json");
        assert_eq!(
            listed["keys"].as_array().expect("keys").len(),
            3,
            "{listed}"
        );
    }
    let id = minted[0]["id"].as_u64().expect("id");
    let path = format!("/api/v1/keys/{id}");
    assert_eq!(
        status(&split.b, reqwest::Method::DELETE, &path, &first),
        204
    );
    mint(&split.a, &first);
    let answer = call(
        &split.b,
        reqwest::Method::POST,
        "/api/v1/keys",
        &first,
        None,
    );
    assert_eq!(answer.status(), 403);
}

/// The answer to JSON-RPC request `id` in an MCP response body (SSE or JSON).
fn mcp_answer(body: &str, id: u64) -> Value {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .chain(std::iter::once(body.trim()))
        .filter_map(|c| serde_json::from_str::<Value>(c).ok())
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no answer to {id} in {body:?}"))
}

/// MCP's `list_mailboxes` on `host` with `key`, in a fresh session: the
/// JSON-RPC answer.
fn mcp_list_mailboxes(host: &Appliance, key: &str) -> Value {
    let client = http();
    let url = format!("http://{}/mcp", host.http_addr);
    let post = |session: Option<&str>, key: Option<&str>, body: Value| {
        let mut request = client
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().expect("POST /mcp")
    };
    let init = post(
        None,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    let session = init
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("session id")
        .to_owned();
    drop(init.text());
    drop(post(
        Some(&session),
        None,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ));
    let body = post(
        Some(&session),
        Some(key),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "list_mailboxes", "arguments": {}}}),
    )
    .text()
    .expect("body");
    mcp_answer(&body, 2)
}

/// A key minted on b works at a straight after the mint, for SMTP `AUTH`
/// and for MCP, as for REST: a's accounts watch is held (it applies a
/// change only while a catch-up waits), so only a check that catches up
/// on an unknown key can know it.
#[test]
fn a_key_minted_on_b_is_taken_at_once_by_smtp_auth_and_mcp_on_a() {
    let split = Split::start();
    let (_, first) = split.user_on(&split.b);
    split.a.hold_accounts_watch_for_tests(true);
    let (_, key) = mint(&split.b, &first);
    assert_eq!(smtp_auth(&split.a, &key), "235");
    let (_, key) = mint(&split.b, &first);
    let answer = mcp_list_mailboxes(&split.a, &key);
    assert!(
        answer["result"]["isError"] != true
            && answer["result"]["structuredContent"]["mailboxes"].is_array(),
        "{answer}"
    );
    // An unknown key is still refused, after its catch-up.
    assert_eq!(
        smtp_auth(&split.a, "uct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "535"
    );
    split.a.hold_accounts_watch_for_tests(false);
}

/// A handover moves a user's mailboxes' count with them: after A leaves
/// to B, A counts none of the copies it keeps and B counts them all (each
/// recounts when the partitions it serves change), so the plan is neither
/// doubled nor lost.
#[test]
fn a_handover_moves_the_mailbox_count_without_counting_twice() {
    let split = Split::start_with(small_limits);
    let (user, key) = split.user_on(&split.a);
    let first = create_mailbox(&split.a, &key, &local_part("movea", owned_by_a));
    create_mailbox(&split.b, &key, &local_part("moveb", owned_by_a));
    assert_eq!(count_in_nats(&split, user, "a"), 2);
    let answer = uncorreo_api::operator::call(
        &split.a.admin_socket,
        &uncorreo_api::operator::Envelope {
            operator: "test".to_owned(),
            request: uncorreo_api::admin::AdminRequest::ClusterLeave {
                to: Some("b".to_owned()),
            },
        },
    )
    .expect("the operator socket answers");
    assert!(
        matches!(answer, uncorreo_api::operator::Answer::Ok { .. }),
        "{answer:?}"
    );
    assert!(
        eventually(Duration::from_secs(30), || count_in_nats(&split, user, "a")
            == 0
            && count_in_nats(&split, user, "b") == 2),
        "a {} b {}",
        count_in_nats(&split, user, "a"),
        count_in_nats(&split, user, "b")
    );
    assert_mailbox_limit(try_create(&split.a, &key, &local_part("movec", owned_by_a)));
    assert_mailbox_limit(try_create(
        &split.b,
        &key,
        &local_part("moved", |p| !owned_by_a(p)),
    ));
    let path = format!("/api/v1/mailboxes/{first}");
    assert_eq!(status(&split.a, reqwest::Method::DELETE, &path, &key), 204);
    create_mailbox(&split.a, &key, &local_part("movee", owned_by_a));
}

/// A body for a mailbox another host keeps is read on the accepting host
/// under that host's budget of bytes in flight, as the owner would read it:
/// with b's budget held by two SMTP transactions, a send through b to a's
/// mailbox is `503` with `Retry-After` from b (a's budget is free), and
/// goes through once they finish; so does a Mailpit send with the session
/// token of a mailbox a keeps.
#[test]
fn a_body_on_its_way_to_the_owner_is_held_under_the_accepting_hosts_budget() {
    use crate::smtp::budget::{finish, hold_at, message, small_budget, HELD};
    let split = Split::start_with(small_budget);
    let (_, key) = split.user_on(&split.b);
    let address = create_mailbox(&split.b, &key, &local_part("budget", owned_by_a));
    let path = format!("/api/v1/mailboxes/{address}/messages");
    let send = || {
        http()
            .post(format!("http://{}{path}", split.b.http_addr))
            .bearer_auth(&key)
            .header("content-type", "message/rfc822")
            .body(message("routed", 600_000))
            .send()
            .expect("send")
    };
    // An anonymous mailbox a keeps: its session token routes a Mailpit send
    // made at b to a whole.
    let anonymous = http()
        .post(format!("http://{}/api/v1/mailboxes", split.b.http_addr))
        .json(&json!({ "local_part": local_part("token", owned_by_a) }))
        .send()
        .expect("create");
    assert_eq!(anonymous.status(), 201);
    let anonymous: Value = anonymous.json().expect("json");
    let token = anonymous["session_token"].as_str().expect("token");
    let mailpit_send = || {
        http()
            .post(format!("http://{}/mailpit/api/v1/send", split.b.http_addr))
            .basic_auth("ci", Some(token))
            .json(&json!({
                "From": { "Email": "app@example.com" },
                "To": [{ "Email": anonymous["address"] }],
                "Subject": "routed",
                "Text": "x".repeat(600_000),
            }))
            .send()
            .expect("mailpit send")
    };
    let mut first = hold_at(split.b.smtp_addr, &address, HELD);
    let mut second = hold_at(split.b.smtp_addr, &address, HELD);
    for refused in [send(), mailpit_send()] {
        assert_eq!(refused.status(), 503);
        let header = |name: &str| {
            refused
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        assert_eq!(header("connection").as_deref(), Some("close"));
    }
    let metrics = http()
        .get(format!("http://{}/metrics", split.b.http_addr))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        metrics.contains("uncorreo_in_flight_refused_total{front_end=\"routed\"} 2"),
        "{metrics}"
    );

    assert!(finish(&mut first, &message("first", HELD)).starts_with("250"));
    assert!(finish(&mut second, &message("second", HELD)).starts_with("250"));
    assert_eq!(send().status(), 201);
    assert_eq!(mailpit_send().status(), 200);
    let listing = call(
        &split.a,
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{address}/messages"),
        &key,
        None,
    );
    let listing: Value = listing.json().expect("json");
    assert_eq!(
        listing["messages"].as_array().map(Vec::len),
        Some(3),
        "{listing}"
    );
    assert_eq!(split.b.budget.in_flight(), 0);
}

/// A host that grows into a cluster keeps its users: the users and keys it
/// made alone are copied into the cluster's accounts when it joins, so a key
/// opens its mailboxes (kept on that host) through another host. A second
/// host that also had users of its own numbered them from the same start:
/// a user of it whose id or a key id is taken is not imported, nor any of
/// its keys (one would open the first host's user's mailboxes), one whose
/// ids are free is; and a restart imports nothing twice.
#[test]
fn users_made_before_a_host_joined_keep_their_keys_in_the_cluster() {
    // Users made alone, each with `extra` more keys: (id, key ids, keys)
    // each, and a mailbox of the first one with a message in it.
    let alone = |data: &std::path::Path, extra: &[usize]| {
        let host = Appliance::start(test_config(data)).expect("starts alone");
        let users: Vec<(u64, Vec<u64>, Vec<String>)> = extra
            .iter()
            .map(|&extra| {
                let (id, key) = new_user(data);
                let mut keys = vec![key];
                keys.extend((0..extra).map(|_| {
                    let answer = operator(data, json!({ "command": "key-create", "user": id }));
                    assert_eq!(answer["status"], "ok", "{answer}");
                    answer["result"]["key"].as_str().expect("key").to_owned()
                }));
                let listed = operator(data, json!({ "command": "key-list", "user": id }));
                let key_ids: Vec<u64> = listed["result"]["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .map(|k| k["id"].as_u64().expect("key id"))
                    .collect();
                (id, key_ids, keys)
            })
            .collect();
        let key = &users[0].2[0];
        let address = create_random_mailbox(&host, key);
        let sent = http()
            .post(format!(
                "http://{}/api/v1/mailboxes/{address}/messages",
                host.http_addr
            ))
            .bearer_auth(key)
            .header("content-type", "message/rfc822")
            .body("From: ci@example.com\r\nSubject: before the cluster\r\n\r\nhello\r\n")
            .send()
            .expect("send");
        assert_eq!(sent.status(), 201);
        host.shutdown();
        (users, address)
    };
    let (data_a, data_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (users_a, address) = alone(data_a.path(), &[0, 0]);
    // b numbers from the same start: its first user takes a's first user's
    // id and key id (its other keys' ids are free), its others have ids a
    // did not give out (its first user has more keys).
    let (users_b, _) = alone(data_b.path(), &[2, 0, 0]);
    let a_users: Vec<u64> = users_a.iter().map(|u| u.0).collect();
    let a_keys: Vec<u64> = users_a.iter().flat_map(|u| u.1.clone()).collect();
    let taken = |(id, key_ids, _): &(u64, Vec<u64>, Vec<String>)| {
        (
            a_users.contains(id),
            key_ids.iter().any(|k| a_keys.contains(k)),
        )
    };
    assert_eq!(
        users_b.iter().map(taken).collect::<Vec<_>>(),
        [(true, true), (false, false), (false, false)],
        "a: {users_a:?}, b: {users_b:?}"
    );
    let (id_a, key_a) = (users_a[0].0, users_a[0].2[0].clone());

    let nats = NatsServer::start();
    let secret = secret_file();
    let member = |node| hop_member(&nats, node, secret.path());
    let serving_all = |a: &Appliance| {
        assert!(
            eventually(Duration::from_secs(30), || served(a)
                == usize::from(PARTITIONS)),
            "a serves {}",
            served(a)
        );
    };
    let a = start(data_a.path(), member("a"), |_| {});
    serving_all(&a);
    let b = start(data_b.path(), member("b"), |_| {});
    let listed = |host: &Appliance, key: &str| {
        let answer = call(host, reqwest::Method::GET, "/api/v1/mailboxes", key, None);
        (answer.status().as_u16(), answer.text().expect("text"))
    };
    let (status, body) = listed(&b, &key_a);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&address), "{body}");
    let messages = call(
        &b,
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{address}/messages"),
        &key_a,
        None,
    );
    assert_eq!(messages.status(), 200);
    assert!(messages
        .text()
        .expect("text")
        .contains("before the cluster"));
    // b's user whose ids a's took: not imported, none of its keys opens
    // anything; its others are in the cluster.
    for (n, (id, _, keys)) in users_b.iter().enumerate() {
        let expected = if n == 0 { 401 } else { 200 };
        for key in keys {
            assert_eq!(listed(&a, key).0, expected, "b's user {id}");
            assert_eq!(listed(&b, key).0, expected, "b's user {id}");
        }
    }
    // a's second user came in whole.
    assert_eq!(listed(&b, &users_a[1].2[0]).0, 200);
    // New users of the cluster take ids no host numbered alone.
    let (fresh, _) = new_user(data_b.path());
    assert!(fresh > uncorreo_cluster::accounts::ID_BASE, "{fresh}");

    // Restarted, a finds its user in the accounts and writes nothing.
    let entry = accounts_entry(&nats, &format!("user.{id_a}")).expect("imported");
    let user: Value = serde_json::from_slice(&entry.1).expect("user record");
    assert_eq!(user["id"], id_a, "{user}");
    a.shutdown();
    let a = start(data_a.path(), member("a"), |_| {});
    assert_eq!(accounts_entry(&nats, &format!("user.{id_a}")), Some(entry));
    // Until its old leases lapse in NATS, a serves nothing.
    serving_all(&a);
    assert_eq!(listed(&a, &key_a).0, 200);
    assert_eq!(listed(&b, &key_a).0, 200);
    drop(b);
}
