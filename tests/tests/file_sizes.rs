//! Cohesive files: no source file in the workspace holds more than [`LIMIT`] lines of non-test
//! code unless its opening `//!` block says why in a `//! Size:` line.
//!
//! Non-test code is a file under a `src/` directory, up to its first top-level `#[cfg(test)]`;
//! a file the crate declares only under `#[cfg(test)]` (a test-only module) is test code, as are
//! integration tests, benches and examples.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lines of non-test code a file may hold without saying why.
const LIMIT: usize = 600;

/// Directories never walked.
const SKIPPED: &[&str] = &["target", ".git", "node_modules", "corpus", "artifacts-out"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !SKIPPED.contains(&name.as_str()) {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Whether `path` is under a `src/` directory (library or binary code).
fn is_source(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "src")
}

/// Files declared as `#[cfg(test)] mod name;`: test-only modules, by path.
fn test_only_modules(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let dir = match f.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => f.parent().map(Path::to_path_buf),
            _ => f
                .parent()
                .map(|p| p.join(f.file_stem().unwrap_or_default())),
        };
        let Some(dir) = dir else { continue };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            if w[0] != "#[cfg(test)]" {
                continue;
            }
            let decl = w[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// Lines before the first top-level `#[cfg(test)]`.
fn non_test_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

/// The `//! Size:` reason in the file's opening doc block, if any.
fn stated_reason(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .find_map(|l| l.strip_prefix("//! Size:"))
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

#[test]
fn no_source_file_is_over_the_limit_without_a_stated_reason() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let sources: Vec<PathBuf> = files.into_iter().filter(|f| is_source(f)).collect();
    assert!(
        sources.len() > 50,
        "the walk found only {} source files under {}",
        sources.len(),
        root.display()
    );
    let test_only = test_only_modules(&sources);
    let mut over = Vec::new();
    for f in &sources {
        if test_only.contains(f) {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        let n = non_test_lines(&text);
        if n > LIMIT && stated_reason(&text).is_none() {
            over.push(format!(
                "{}: {n} lines of non-test code",
                f.strip_prefix(&root).unwrap_or(f).display()
            ));
        }
    }
    assert!(
        over.is_empty(),
        "split these along their topics, or say why each is one in a `//! Size:` line at its \
         top:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_rule_reads_test_modules_and_reasons_as_documented() {
    assert_eq!(non_test_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(non_test_lines("a\n    #[cfg(test)]\nb\n"), 3);
    assert_eq!(
        stated_reason("//! The wire format.\n//! Size: one format, encode beside decode.\nuse x;"),
        Some("one format, encode beside decode.")
    );
    assert_eq!(
        stated_reason("//! The wire format.\n\n//! Size: late"),
        None
    );
    let dir = std::env::temp_dir().join(format!("file-sizes-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).expect("tempdir");
    let lib = dir.join("src/lib.rs");
    std::fs::write(&lib, "mod real;\n#[cfg(test)]\nmod sim;\n").expect("write");
    let found = test_only_modules(&[lib]);
    assert!(found.contains(&dir.join("src/sim.rs")), "{found:?}");
    assert!(!found.contains(&dir.join("src/real.rs")), "{found:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
