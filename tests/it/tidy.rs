//! House rules that a reviewer would otherwise have to remember: every source
//! file says what it is for, and `unsafe` lives only where it buys something
//! measured (the engine's memory maps, in one module).

use std::path::{Path, PathBuf};

const CRATE_SOURCES: &[&str] = &[
    "src",
    "mail/src",
    "engine/src",
    "smtpd/src",
    "api/src",
    "ui/src",
    "mcp/src",
    "bench/src",
];

/// The one module allowed to contain `unsafe` (mmap reads, flock, statvfs).
const UNSAFE_HOME: &str = "engine/src/sys.rs";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in CRATE_SOURCES {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "found only {} files; wrong root?",
        files.len()
    );
    files
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` doc saying their job: {missing:#?}"
    );
}

#[test]
fn unsafe_only_in_the_engine_sys_module_and_each_block_says_why() {
    let mut offenders = Vec::new();
    for path in sources() {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !(code.contains("unsafe {")
                || code.contains("unsafe fn")
                || code.contains("unsafe impl"))
            {
                continue;
            }
            if rel != UNSAFE_HOME {
                offenders.push(format!("{rel}:{}: unsafe outside {UNSAFE_HOME}", i + 1));
                continue;
            }
            // The comment block directly above the `unsafe` line must say why.
            let above = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with("//"));
            let justified = above
                .chain(std::iter::once(line))
                .any(|l| l.contains("SAFETY:"));
            if !justified {
                offenders.push(format!("{rel}:{}: unsafe without a SAFETY: comment", i + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
