//! The control plane's layers import only downward, and its modules form no import cycle.
//!
//! Layers, top to bottom: `cli` → `http` → `runtime` (with its services `forward_auth` and
//! `github`) → `storage` → `domain`. A file may name (through `crate::…` paths) its own layer
//! and the layers below; the crate root (`lib.rs`) wires them and is exempt. Separately, the
//! graph of module-to-module references (a child naming its parent excluded: the parent is its
//! namespace) has no cycle. And some crates stay out of the lower layers entirely.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module; higher may use lower.
const LAYERS: &[(&str, u8)] = &[
    ("test_support", 6),
    ("cli", 5),
    ("http", 4),
    ("runtime", 3),
    ("forward_auth", 3),
    ("github", 3),
    ("storage", 2),
    ("domain", 1),
];

/// External crates a layer must not use at all.
const FORBIDDEN_CRATES: &[(&str, &[&str])] = &[
    (
        "domain",
        &["sqlx", "axum", "tokio", "reqwest", "tower_http"],
    ),
    ("storage", &["axum", "reqwest", "tower_http"]),
];

/// A source file as a module: its path (`http::keys`) and its code without comments.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    code: String,
}

fn modules() -> Vec<Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).expect("under src");
            let mut path: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            if path == ["lib"] || path == ["main"] {
                continue; // the composition root and the binary
            }
            let text = std::fs::read_to_string(&p).expect("read file");
            out.push(Module {
                path,
                file: rel.to_path_buf(),
                code: strip_comments(&text),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The code with `//` comments removed (doc links are not imports).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path named in `code`, `use crate::{a::b, c}` groups included, as
/// segment lists.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `keygate_crate::` or the macro's `$crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                out.push(segments(item.trim()));
            }
        } else {
            out.push(segments(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The leading `a::b::c` identifiers of `s`.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) if !r.starts_with('{') && !r.starts_with('*') => rest = r,
            _ => break,
        }
    }
    out
}

fn layer(top: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve(path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

#[test]
fn every_top_level_module_has_a_layer() {
    let unassigned: BTreeSet<String> = modules()
        .iter()
        .map(|m| m.path[0].clone())
        .filter(|top| layer(top).is_none())
        .collect();
    assert!(
        unassigned.is_empty(),
        "give these modules a layer in LAYERS: {unassigned:?}"
    );
}

#[test]
fn layers_import_only_downward() {
    let mut violations = Vec::new();
    for m in modules() {
        let Some(own) = layer(&m.path[0]) else {
            continue;
        };
        for p in crate_paths(&m.code) {
            if let Some(theirs) = layer(&p[0])
                && theirs > own
            {
                violations.push(format!(
                    "{} ({}, layer {own}) names crate::{} (layer {theirs})",
                    m.file.display(),
                    m.path[0],
                    p.join("::")
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_lower_layers_stay_out_of_http_and_the_database_as_their_rules_say() {
    let mut violations = Vec::new();
    for m in modules() {
        for (top, crates) in FORBIDDEN_CRATES {
            if m.path[0] != *top {
                continue;
            }
            for c in *crates {
                let named = m.code.contains(&format!("{c}::"));
                if named {
                    violations.push(format!("{} uses `{c}`", m.file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn modules_form_no_import_cycle() {
    let mods = modules();
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in &mods {
        let mut out = BTreeSet::new();
        let mut add = |target: Vec<String>| {
            // A module naming itself or an ancestor (its namespace) is no dependency.
            if !m.path.starts_with(&target) {
                out.insert(target);
            }
        };
        for p in crate_paths(&m.code) {
            if let Some(t) = resolve(&p, &known) {
                add(t);
            }
        }
        // `super::x` from a file: a sibling (or the parent's items).
        let parent = &m.path[..m.path.len() - 1];
        for line in m.code.lines() {
            let mut rest = line;
            while let Some(i) = rest.find("super::") {
                rest = &rest[i + "super::".len()..];
                let mut p = parent.to_vec();
                if let Some(group) = rest.strip_prefix('{') {
                    for item in split_top_level(&group[..matching_brace(group)]) {
                        let mut q = p.clone();
                        q.extend(segments(item.trim()));
                        if let Some(t) = resolve(&q, &known) {
                            add(t);
                        }
                    }
                } else {
                    p.extend(segments(rest));
                    if let Some(t) = resolve(&p, &known) {
                        add(t);
                    }
                }
            }
        }
        edges.insert(m.path.clone(), out);
    }
    let cycles = find_cycles(&edges);
    assert!(
        cycles.is_empty(),
        "import cycles:\n{}",
        cycles
            .iter()
            .map(|c| c
                .iter()
                .map(|p| p.join("::"))
                .collect::<Vec<_>>()
                .join(" → "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One cycle per strongly connected component of more than one module (DFS with colours).
fn find_cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        colour: &mut BTreeMap<Vec<String>, Colour>,
        stack: &mut Vec<Vec<String>>,
        cycles: &mut Vec<Vec<Vec<String>>>,
    ) {
        colour.insert(n.clone(), Colour::Grey);
        stack.push(n.clone());
        for t in edges.get(n).into_iter().flatten() {
            match colour.get(t).copied().unwrap_or(Colour::White) {
                Colour::White => visit(t, edges, colour, stack, cycles),
                Colour::Grey => {
                    let from = stack.iter().position(|s| s == t).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(t.clone());
                    cycles.push(c);
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour.insert(n.clone(), Colour::Black);
    }
    let mut colour = BTreeMap::new();
    let mut cycles = Vec::new();
    for n in edges.keys() {
        if colour.get(n).copied().unwrap_or(Colour::White) == Colour::White {
            visit(n, edges, &mut colour, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

#[test]
fn the_checks_see_an_upward_import_and_a_cycle() {
    // The scanner itself: a grouped `use` is split, comments are not imports.
    let code = strip_comments(
        "use crate::{http::error::ApiError, storage::Db};\n// crate::cli::x\nlet x = crate::domain::key::parse_key_id(s);",
    );
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        crate_paths(&code),
        vec![
            v(&["http", "error", "ApiError"]),
            v(&["storage", "Db"]),
            v(&["domain", "key", "parse_key_id"]),
        ]
    );
    // The cycle finder finds a two-module cycle and nothing in a chain.
    let k = |s: &str| vec![s.to_owned()];
    let mut edges = BTreeMap::new();
    edges.insert(k("a"), BTreeSet::from([k("b")]));
    edges.insert(k("b"), BTreeSet::from([k("a")]));
    edges.insert(k("c"), BTreeSet::from([k("a")]));
    assert_eq!(find_cycles(&edges).len(), 1);
    edges.insert(k("b"), BTreeSet::new());
    assert!(find_cycles(&edges).is_empty());
}
