//! House rules that a reviewer would otherwise have to remember: every source
//! file says what it is for, `unsafe` lives only where it buys something
//! measured (the engine's memory maps, in one module), ARCHITECTURE.md
//! names only files that exist, the runbook covers every alert rule, and
//! metric names come from the one catalogue (`metric-names/`).

use std::path::{Path, PathBuf};

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

/// `src/` of the root crate and of every crate beside it (a directory with
/// a `Cargo.toml`), so a new crate is covered without being listed here.
fn crate_sources() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("src")];
    for entry in std::fs::read_dir(root()).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            dirs.push(dir.join("src"));
        }
    }
    dirs
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in crate_sources() {
        rust_files(&dir, &mut files);
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

/// The paths ARCHITECTURE.md names in backticks (anything with a `/` that is
/// not a URL, route or placeholder; `a/{b,c}.rs` names both), each with the
/// crate directory of the `### \`dir/\`` section it stands in, since a
/// section may name its crate's modules as `realtime/`.
fn architecture_paths() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut paths = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("### `") {
            section = header.split('`').next().unwrap_or("").to_owned();
        }
        for (i, quoted) in line.split('`').enumerate() {
            let is_path = i % 2 == 1
                && quoted.contains('/')
                && !quoted.starts_with('/')
                && !quoted.contains(char::is_whitespace)
                && !quoted.contains(['<', '*', '…', ':', '=', '?', '&'])
                && quoted
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
            if !is_path {
                continue;
            }
            match (quoted.find('{'), quoted.find('}')) {
                (Some(open), Some(close)) if open < close => {
                    for alternative in quoted[open + 1..close].split(',') {
                        let path =
                            format!("{}{alternative}{}", &quoted[..open], &quoted[close + 1..]);
                        paths.push((section.clone(), path));
                    }
                }
                _ => paths.push((section.clone(), quoted.to_owned())),
            }
        }
    }
    paths
}

#[test]
fn architecture_names_only_files_that_exist() {
    let paths = architecture_paths();
    assert!(
        paths.len() > 20,
        "found only {} paths: {paths:?}",
        paths.len()
    );
    let missing: Vec<&String> = paths
        .iter()
        .filter(|(section, path)| {
            !root().join(path).exists() && !root().join(section).join("src").join(path).exists()
        })
        .map(|(_, path)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:#?}"
    );
}

/// Every test SCALE.md names as `module::test` (its failure table and its
/// lists of what is tested) is a function of that name in the repository's
/// tests, so the design cannot point at a test that was renamed or never
/// written (issue #20: each failure claim names its test).
#[test]
fn scale_names_only_tests_that_exist() {
    let scale = std::fs::read_to_string(root().join("SCALE.md")).unwrap();
    let mut functions = std::collections::HashSet::new();
    let mut files = Vec::new();
    for dir in ["tests", "cluster", "hop", "engine", "api", "src"] {
        rust_files(&root().join(dir), &mut files);
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("fn ")
                .or_else(|| line.strip_prefix("async fn "));
            if let Some(name) = rest.and_then(|r| r.split(['(', '<']).next()) {
                functions.insert(name.to_owned());
            }
        }
    }
    let named: Vec<&str> = scale
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            t.split_once("::").is_some_and(|(module, name)| {
                module.starts_with("cluster")
                    && !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        })
        .collect();
    assert!(named.len() > 10, "found only {named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|t| {
            t.rsplit("::")
                .next()
                .is_none_or(|name| !functions.contains(name))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "SCALE.md names tests that do not exist: {missing:#?}"
    );
}

/// Every `- alert: NAME` in `ops/prometheus/alerts.yml` has its own
/// paragraph (`**NAME.**`) in the runbook, so an alert added without saying
/// what to do about it fails here.
#[test]
fn runbook_says_what_to_do_for_every_alert_rule() {
    let rules = std::fs::read_to_string(root().join("ops/prometheus/alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(root().join("ops/README.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 10, "alert rules not found: {alerts:?}");
    let missing: Vec<&&str> = alerts
        .iter()
        .filter(|a| !runbook.contains(&format!("**{a}.**")))
        .collect();
    assert!(
        missing.is_empty(),
        "ops/README.md has no \"**NAME.**\" paragraph for {missing:?}"
    );
}

/// The catalogue crate, the only place a metric name is spelled out.
const METRIC_CATALOGUE: &str = "metric-names/src/lib.rs";

/// `counter!("uncorreo_…"`, `describe_gauge!(\n "…"` and the like: a metric
/// macro whose name argument is a string literal.
fn metric_names_written_as_strings(text: &str) -> usize {
    let mut found = 0;
    for macro_name in ["counter!(", "gauge!(", "histogram!("] {
        let mut rest = text;
        while let Some(at) = rest.find(macro_name) {
            rest = &rest[at + macro_name.len()..];
            if rest.trim_start().starts_with('"') {
                found += 1;
            }
        }
    }
    found
}

#[test]
fn metric_names_come_from_the_catalogue() {
    assert_eq!(
        metric_names_written_as_strings("x.counter!(\n  \"uncorreo_a_total\")"),
        1
    );
    assert_eq!(
        metric_names_written_as_strings("describe_gauge!(\"uncorreo_a\", \"h\")"),
        1
    );
    assert_eq!(
        metric_names_written_as_strings("counter!(names::A_TOTAL)"),
        0
    );
    let catalogue = root().join(METRIC_CATALOGUE);
    let others: Vec<(PathBuf, String)> = sources()
        .into_iter()
        .filter(|p| *p != catalogue)
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let strays: Vec<String> = others
        .iter()
        .filter(|(_, text)| metric_names_written_as_strings(text) > 0)
        .map(|(p, _)| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        strays.is_empty(),
        "metric names written as strings (use uncorreo_metric_names::…): {strays:#?}"
    );
    // Every name in the catalogue is emitted somewhere: no stale entries.
    let catalogue_text = std::fs::read_to_string(&catalogue).unwrap();
    let consts: Vec<&str> = catalogue_text
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": &str").map(|(name, _)| name))
        .collect();
    assert!(consts.len() > 30, "{consts:?}");
    let unused: Vec<&&str> = consts
        .iter()
        .filter(|c| !others.iter().any(|(_, text)| text.contains(**c)))
        .collect();
    assert!(
        unused.is_empty(),
        "catalogue entries nothing emits: {unused:?}"
    );
}
