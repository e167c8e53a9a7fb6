//! The worker's layers, checked from its sources: each folder uses only the
//! folders below it (the order `lib.rs` documents), and no module uses one
//! that uses it back, directly or through others. A module and its own
//! submodules (a folder's `mod.rs` and the files in it) are one unit here,
//! as Rust sees them: a submodule may use what its parent defines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use its own layer and those
/// before it.
const LAYERS: [&str; 9] = [
    "stop",
    "http",
    "io",
    "observe",
    "upstream",
    "state",
    "proxy",
    "downstream",
    "process",
];

/// Modules outside the layers: the crate root and the fuzzing entry
/// points, which may use any layer.
const OUTSIDE: [&str; 2] = ["lib", "fuzzing"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every source file, as its module path (`proxy/forward.rs` is
/// `["proxy", "forward"]`, `proxy/mod.rs` is `["proxy"]`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut p = prefix.to_vec();
            if name != "mod" {
                p.push(name);
            }
            out.insert(p, path);
        }
    }
}

/// The source without its test module: everything from the first
/// `#[cfg(test)]` on a `mod` (test modules come last by convention). A
/// test-only item elsewhere (`#[cfg(test)]` on a function) stays in: its
/// uses are checked too.
fn non_test_source(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]\nmod ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Names a module re-exports from its submodules (`pub(crate) use
/// snapshot::{Newest, Snapshot};` in `state/mod.rs`): `state::Snapshot` is
/// `state::snapshot`'s.
fn reexports(known: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<Vec<String>, Vec<String>> {
    let mut aliases = BTreeMap::new();
    for (module, path) in known {
        let source = non_test_source(path);
        for line in source.lines().map(str::trim) {
            let Some(tree) = line
                .strip_prefix("pub(crate) use ")
                .or_else(|| line.strip_prefix("pub use "))
            else {
                continue;
            };
            for names in paths_after(tree.trim_end_matches(';')) {
                let Some((child, _)) = names.split_first() else {
                    continue;
                };
                let mut child_module = module.clone();
                child_module.push(child.clone());
                if let (Some(name), true) = (names.last(), known.contains_key(&child_module)) {
                    let mut alias = module.clone();
                    alias.push(name.clone());
                    aliases.insert(alias, child_module);
                }
            }
        }
    }
    aliases
}

/// The module paths `source` (of module `me`) names through `crate::` or
/// `super::`, each as the longest prefix that is a known module (or the
/// submodule a re-exported name comes from).
fn uses(
    me: &[String],
    source: &str,
    known: &BTreeMap<Vec<String>, PathBuf>,
    aliases: &BTreeMap<Vec<String>, Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let resolve = |path: Vec<String>, found: &mut BTreeSet<Vec<String>>| {
        let longest = (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| known.contains_key(p) || aliases.contains_key(p));
        let resolved = longest.map(|p| aliases.get(&p).cloned().unwrap_or(p));
        if let Some(p) = resolved {
            if p != me {
                found.insert(p);
            }
        }
    };
    // `super` of `a/b.rs` and of `a/b/mod.rs` (both module `a::b`) is `a`.
    let parent = me[..me.len().saturating_sub(1)].to_vec();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = source;
        while let Some(i) = rest.find(anchor) {
            rest = &rest[i + anchor.len()..];
            for tail in paths_after(rest) {
                let mut path = base.clone();
                path.extend(tail);
                resolve(path, &mut found);
            }
        }
    }
    found
}

/// The paths a `use` tree or an expression names right after an anchor:
/// `a::b::C`, or each of `{a, b::c}`.
fn paths_after(text: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> usize {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            return group[..end]
                .split(',')
                .map(|item| {
                    let mut p = path.clone();
                    p.extend(
                        item.trim()
                            .split("::")
                            .map(|s| s[..ident(s)].to_owned())
                            .filter(|s| !s.is_empty() && s != "self"),
                    );
                    p
                })
                .collect();
        }
        let n = ident(rest);
        if n == 0 {
            break;
        }
        path.push(rest[..n].to_owned());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![path]
}

fn layer_of(module: &[String]) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module[0])
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut known = BTreeMap::new();
    modules(&src(), &[], &mut known);
    let aliases = reexports(&known);
    known
        .iter()
        .filter(|(m, _)| {
            // Test-only modules: `tests` modules, files and folders, and
            // test support (`testing`).
            !m.iter().any(|n| n == "tests" || n.starts_with("test"))
        })
        .map(|(m, path)| {
            let source = non_test_source(path);
            (m.clone(), uses(m, &source, &known, &aliases))
        })
        .collect()
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let mut wrong = Vec::new();
    for (module, used) in graph() {
        if module.is_empty() || OUTSIDE.contains(&module[0].as_str()) {
            continue;
        }
        let Some(mine) = layer_of(&module) else {
            wrong.push(format!("{} is in no layer", module.join("::")));
            continue;
        };
        for u in used {
            match layer_of(&u) {
                Some(theirs) if theirs <= mine => {}
                _ => wrong.push(format!("{} uses {}", module.join("::"), u.join("::"))),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// Whether one module is the other or contains it.
fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let graph = graph();
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if related(&at, next) {
                    continue;
                }
                if next == start {
                    let names: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), start.join("::")));
                }
                if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_see_real_uses() {
    let graph = graph();
    let forward = graph
        .get(&vec!["proxy".to_owned(), "forward".to_owned()])
        .expect("proxy/forward.rs is known");
    assert!(forward.contains(&vec!["proxy".to_owned(), "retry".to_owned()]));
    assert!(forward.contains(&vec!["state".to_owned(), "snapshot".to_owned()]));
    let session = &graph[&vec![
        "downstream".to_owned(),
        "h1".to_owned(),
        "session".to_owned(),
    ]];
    assert!(session.contains(&vec!["proxy".to_owned(), "downstream".to_owned()]));
}
