//! A real full disk: the appliance's data directory on a small loop-mounted
//! ext4. Fill it over SMTP with 1 MiB messages until refused — the refusal
//! is a 4xx, never a 5xx, and `/health` stays 200 — free space by deleting a
//! file, and mail is accepted again within seconds, without a restart. Once
//! with the free-space guard on, once with `min_free_bytes = 0` (so the
//! engine meets `ENOSPC` itself). After a restart every message that got
//! `250` is there, byte-identical.
//!
//! Needs root (mount); without it, or without `mkfs.ext4`/loop devices, the
//! test prints why and passes without checking anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{code, Raw, TestServer, DOMAIN};

const DISK_MIB: u64 = 48;
const BALLAST_MIB: usize = 12;
const MESSAGE_BYTES: usize = 1024 * 1024;

/// A loop-mounted ext4 image, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `Err(reason)` when this machine cannot do it.
    fn new() -> Result<Self, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root (mounting a loop device needs it)".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(DISK_MIB * 1024 * 1024))
            .map_err(|e| e.to_string())?;
        run("mkfs.ext4", &["-q", "-F", "-m", "0", path_str(&image)?])?;
        run(
            "mount",
            &["-o", "loop", path_str(&image)?, path_str(&mount)?],
        )?;
        Ok(Self { mount, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Ok(m) = path_str(&self.mount) {
            if run("umount", &[m]).is_err() {
                let _ = run("umount", &["-l", m]);
            }
        }
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| "non-UTF-8 temp path".to_owned())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn body(case: &str, n: usize) -> Vec<u8> {
    let mut b = format!(
        "From: filler@sender.example\r\nTo: full@{DOMAIN}\r\nX-Test-Id: {case}-{n}\r\nSubject: fill {case} {n}\r\n\r\n"
    )
    .into_bytes();
    let mut x = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while b.len() < MESSAGE_BYTES {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(b'a' + (x % 26) as u8);
        }
        b.extend_from_slice(b"\r\n");
    }
    b
}

/// One SMTP transaction: `Ok(())` on 250, `Err(reply)` on a refusal, which
/// must be temporary (4xx) wherever it comes.
fn send(server: &TestServer, case: &str, n: usize) -> Result<(), String> {
    let (mut smtp, greeting) = Raw::connect(server.smtp);
    assert_eq!(code(&greeting), "220", "{greeting}");
    let ehlo = smtp.cmd("EHLO filler.example");
    assert_eq!(code(&ehlo), "250", "{ehlo}");
    for line in [
        "MAIL FROM:<filler@sender.example>".to_owned(),
        format!("RCPT TO:<full@{DOMAIN}>"),
        "DATA".to_owned(),
    ] {
        let r = smtp.cmd(&line);
        match code(&r) {
            "250" | "354" => {}
            c if c.starts_with('4') => return Err(r),
            _ => panic!("{case}: {line} answered {r} (a full disk must be temporary)"),
        }
    }
    let mut data = uncorreo_smtpd::dot_stuff(&body(case, n));
    data.extend_from_slice(b".\r\n");
    smtp.send(&data);
    let done = smtp.reply();
    match code(&done) {
        "250" => Ok(()),
        c if c.starts_with('4') => Err(done),
        _ => panic!("{case}: end of DATA answered {done} (a full disk must be temporary)"),
    }
}

fn health(server: &TestServer) -> u16 {
    reqwest::blocking::get(server.url("/health"))
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn fill_free_refill_restart(case: &str, min_free_bytes: u64) {
    let disk = match SmallDisk::new() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED the full-disk test ({case}): {why}");
            return;
        }
    };
    let data = disk.mount.join(case);
    std::fs::create_dir(&data).unwrap();
    let ballast = disk.mount.join(format!("{case}.ballast"));
    std::fs::write(&ballast, vec![0x5a; BALLAST_MIB * 1024 * 1024]).unwrap();
    let tweak = |c: &mut uncorreo::Config| {
        c.engine.data_dir = data.clone();
        c.engine.min_free_bytes = min_free_bytes;
        c.engine.segment_bytes = 4 * 1024 * 1024;
    };
    let mut server = TestServer::start_with(tweak);
    let mailbox = server.mailbox("full", 100_000);
    let mut acked = Vec::new();
    let refusal = loop {
        let n = acked.len();
        assert!(n < 2 * DISK_MIB as usize, "{case}: never refused");
        match send(&server, case, n) {
            Ok(()) => acked.push(n),
            Err(reply) => break reply,
        }
    };
    assert!(
        refusal.starts_with("452 4.3.1"),
        "{case}: refused with {refusal}"
    );
    assert_eq!(health(&server), 200, "{case}: /health while full");
    assert!(
        server.engine.health().failed_shards.is_empty(),
        "{case}: a shard failed"
    );
    // Still full: refused again, still temporary.
    let n = acked.len();
    assert!(
        send(&server, case, n).is_err(),
        "{case}: accepted while full"
    );

    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = acked.len() + 1;
        match send(&server, case, n) {
            Ok(()) => {
                acked.push(n);
                break;
            }
            Err(reply) => assert!(
                Instant::now() < deadline,
                "{case}: still refused 20 s after space was freed: {reply}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(acked.len() >= 10, "{case}: only {} accepted", acked.len());

    server.stop();
    drop(server);
    let server = TestServer::start_with(tweak);
    let stored: Vec<Vec<u8>> = super::stored(&server.engine, &mailbox)
        .iter()
        .map(|raw| super::split_received(raw).1)
        .collect();
    for n in &acked {
        let want = body(case, *n);
        assert!(
            stored.contains(&want),
            "{case}: message {n} got 250 but is not stored byte-identical"
        );
    }
}

#[test]
fn a_full_disk_is_a_temporary_refusal_and_mail_flows_again_without_restart() {
    // The guard refuses while free space (minus bytes in flight) is below
    // the floor; without it the engine meets ENOSPC on a segment or a write.
    fill_free_refill_restart("guard", 6 * 1024 * 1024);
    fill_free_refill_restart("enospc", 0);
}
