//! The workspace's library code forms layers, checked from the source (docs/architecture.md,
//! "Layers"):
//!
//! - file level, across every library crate of the workspace (this core, the glue
//!   `filters/apiguard-wasm`, `filters/proxy-abi`, the limiter, `limiter-api`, the CLI): no file
//!   imports a file that imports it back, directly or through others (no import circle);
//! - in the core, the shared vocabulary (`http`, `identity`, `jose`, `path`, `reply`) imports no other
//!   module, and no stage (`jwt`, `policy`, `ratelimit`) imports the flow.
//!
//! A file imports another when its non-test code names it: `use crate::…`, `use super::…`,
//! `use self::…`, a path of a child module, or such a path in code (`crate::a::b::f()`). A `mod`
//! declaration is no import (a parent declaring a child is not a dependency of either). A path
//! maps to the file of its longest module prefix: `a/b.rs` or `a/b/mod.rs` for module `a::b`.
//! Test code does not count: `#[cfg(test)]` items (inline `mod tests { … }`, test-only `mod x;`
//! files) and `*tests.rs` files.
//!
//! The checker lives here, in the core's unit tests, although it reads the other crates too: the
//! core's package root is the workspace root, so `CARGO_MANIFEST_DIR` names the workspace without
//! `..`; the core's unit tests are the suite every change runs (`cargo test -p apiguard-core
//! --lib`, a fraction of a second for this check), and the check needs no dependency on the
//! crates it reads (it reads text, not types). Native only: it reads the source files.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library crates' source roots, relative to the workspace root.
const CRATE_DIRS: [&str; 6] = [
    "src",
    "filters/apiguard-wasm/src",
    "filters/proxy-abi/src",
    "limiter/src",
    "limiter-api/src",
    "cli/src",
];

const LOW: [&str; 6] = ["http", "identity", "jose", "log_line", "path", "reply"];
const STAGES: [&str; 4] = ["contract", "jwt", "policy", "ratelimit"];

/// File (workspace-relative path) → the files its non-test code imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Blanks comments and the contents of string and char literals, keeping everything else (and
/// the line structure) so that the tokens outside them read as written.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || c[i - 1] == 'b')
            && matches!(c.get(i + 1), Some('"') | Some('#'))
        {
            // A raw string r"…" / r#"…"# (or an identifier that merely starts with r).
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Rust tokens, coarsely: identifiers (and numbers), `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// Drops every item under `#[cfg(test)]` (an inline `mod tests { … }`, a test-only `mod x;`, a
/// test helper), returning the remaining tokens.
fn without_test_items(t: Vec<String>) -> Vec<String> {
    let is_cfg_test = |i: usize| {
        t.get(i..i + 7)
            .is_some_and(|w| w.join("") == "#[cfg(test)]")
    };
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if !is_cfg_test(i) {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // Further attributes on the same item.
        while t.get(i).is_some_and(|s| s == "#") && t.get(i + 1).is_some_and(|s| s == "[") {
            let mut depth = 0;
            while i < t.len() {
                match t[i].as_str() {
                    "[" => depth += 1,
                    "]" => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // The item: up to its `;` or through its balanced `{ … }`, whichever comes first.
        let mut depth = 0;
        while i < t.len() {
            match t[i].as_str() {
                ";" if depth == 0 => {
                    i += 1;
                    break;
                }
                "(" | "[" => depth += 1,
                ")" | "]" => depth -= 1,
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The paths a use tree names, each as its segments (`a::{b, c::d}` → `a::b`, `a::c::d`); a
/// glob or `self` ends the path at its prefix.
fn use_paths(t: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    while *i < t.len() {
        match t[*i].as_str() {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                loop {
                    use_paths(t, i, path.clone(), out);
                    match t.get(*i).map(String::as_str) {
                        Some(",") => *i += 1,
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    if t.get(*i).is_some_and(|s| s == "}") {
                        *i += 1;
                        return;
                    }
                }
            }
            "*" | "self" if !path.is_empty() => {
                *i += 1;
                out.push(path);
                return;
            }
            "as" => {
                *i += 2;
                out.push(path);
                return;
            }
            "," | "}" | ";" => {
                out.push(path);
                return;
            }
            s if is_ident(s) => {
                path.push(s.to_owned());
                *i += 1;
            }
            _ => {
                *i += 1;
            }
        }
    }
    out.push(path);
}

/// One file's non-test code: the child modules it declares (`mod x;`) and the paths it names
/// (from use trees, and paths in code that start at `crate`, `super`, `self` or a child module).
struct Parsed {
    children: Vec<String>,
    paths: Vec<Vec<String>>,
}

fn parse(text: &str) -> Parsed {
    let t = without_test_items(tokens(&strip(text)));
    let mut children = Vec::new();
    for w in t.windows(3) {
        if w[0] == "mod" && is_ident(&w[1]) && w[2] == ";" {
            children.push(w[1].clone());
        }
    }
    let mut paths = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let starts_path = i == 0 || t[i - 1] != "::";
        if t[i] == "use" && starts_path && t.get(i + 1).is_some_and(|s| is_ident(s) || s == "::") {
            i += 1;
            let mut found = Vec::new();
            use_paths(&t, &mut i, Vec::new(), &mut found);
            paths.extend(found);
            continue;
        }
        let head = t[i].as_str();
        let rooted =
            matches!(head, "crate" | "super" | "self") || children.iter().any(|c| c == head);
        if starts_path && rooted && t.get(i + 1).is_some_and(|s| s == "::") {
            let mut path = vec![t[i].clone()];
            i += 1;
            while t.get(i).is_some_and(|s| s == "::") && t.get(i + 1).is_some_and(|s| is_ident(s)) {
                path.push(t[i + 1].clone());
                i += 2;
            }
            paths.push(path);
            continue;
        }
        i += 1;
    }
    Parsed { children, paths }
}

/// The import graph of the crates rooted at `roots` (paths of `lib.rs`/`main.rs` files in
/// `files`), following `mod x;` declarations to `x.rs` or `x/mod.rs`. Files of `files` that no
/// root reaches through non-test declarations are not part of the graph; `*tests.rs` files are
/// never part of it.
fn graph(files: &BTreeMap<String, String>, roots: &[String]) -> Graph {
    let mut edges = Graph::new();
    for root in roots {
        // Module path → file, and file → (module path, parsed), for this crate.
        let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut parsed: BTreeMap<String, (Vec<String>, Parsed)> = BTreeMap::new();
        let mut stack = vec![(root.clone(), Vec::<String>::new())];
        while let Some((file, module)) = stack.pop() {
            let Some(text) = files.get(&file) else {
                panic!("{file} (module {module:?}) is declared but not found");
            };
            let p = parse(text);
            let (dir, stem) = file.rsplit_once('/').unwrap_or(("", file.as_str()));
            let base = if matches!(stem, "lib.rs" | "main.rs" | "mod.rs") {
                dir.to_owned()
            } else {
                format!("{dir}/{}", stem.trim_end_matches(".rs"))
            };
            for child in &p.children {
                let flat = format!("{base}/{child}.rs");
                let nested = format!("{base}/{child}/mod.rs");
                let path = if files.contains_key(&flat) {
                    flat
                } else {
                    nested
                };
                if path.ends_with("tests.rs") {
                    continue;
                }
                let mut m = module.clone();
                m.push(child.clone());
                stack.push((path, m));
            }
            modules.insert(module.clone(), file.clone());
            parsed.insert(file, (module, p));
        }
        for (file, (module, p)) in &parsed {
            let deps = edges.entry(file.clone()).or_default();
            for path in &p.paths {
                let mut abs: Vec<String> = match path[0].as_str() {
                    "crate" => Vec::new(),
                    "self" | "super" => module.clone(),
                    c if p.children.iter().any(|d| d == c) => module.clone(),
                    _ => continue, // another crate, or a name in scope
                };
                let mut rest = &path[..];
                if rest[0] == "crate" || rest[0] == "self" {
                    rest = &rest[1..];
                }
                while rest.first().is_some_and(|s| s == "super") {
                    abs.pop();
                    rest = &rest[1..];
                }
                abs.extend(rest.iter().cloned());
                let target = (0..=abs.len())
                    .rev()
                    .find_map(|n| modules.get(&abs[..n]))
                    .expect("the crate root is a module");
                if target != file {
                    deps.insert(target.clone());
                }
            }
        }
    }
    edges
}

/// The import circles: each strongly connected set of two or more files, sorted (Tarjan).
fn circles(edges: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, n: &'a str) {
        let i = s.index.len();
        s.index.insert(n, i);
        s.low.insert(n, i);
        s.stack.push(n);
        s.on_stack.insert(n);
        for d in s.edges.get(n).into_iter().flatten() {
            let d = d.as_str();
            if !s.index.contains_key(d) {
                visit(s, d);
                let l = s.low[n].min(s.low[d]);
                s.low.insert(n, l);
            } else if s.on_stack.contains(d) {
                let l = s.low[n].min(s.index[d]);
                s.low.insert(n, l);
            }
        }
        if s.low[n] == s.index[n] {
            let mut set = Vec::new();
            while let Some(m) = s.stack.pop() {
                s.on_stack.remove(m);
                set.push(m.to_owned());
                if m == n {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for n in edges.keys() {
        if !s.index.contains_key(n.as_str()) {
            visit(&mut s, n);
        }
    }
    s.found.sort();
    s.found
}

/// Every `.rs` file under the library crates' source roots, by workspace-relative path, and the
/// crate roots among them.
fn workspace() -> (BTreeMap<String, String>, Vec<String>) {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeMap::new();
    let mut roots = Vec::new();
    for dir in CRATE_DIRS {
        let mut stack = vec![ws.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let rel = path
                        .strip_prefix(ws)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    files.insert(rel, std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        for root in ["lib.rs", "main.rs"] {
            let rel = format!("{dir}/{root}");
            if files.contains_key(&rel) {
                roots.push(rel);
            }
        }
    }
    (files, roots)
}

/// A file's top-level module of the core (`src/jwt/stage.rs` → `jwt`); None outside the core
/// and for the crate root.
fn core_top(file: &str) -> Option<String> {
    let rel = file.strip_prefix("src/")?;
    let top = rel.split('/').next()?.trim_end_matches(".rs");
    (top != "lib").then(|| top.to_owned())
}

#[test]
fn the_core_modules_form_layers_without_cycles() {
    let (files, roots) = workspace();
    let files_graph = graph(&files, &roots);
    // Collapsed to the core's top-level modules.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, deps) in &files_graph {
        let Some(top) = core_top(file) else { continue };
        let set = edges.entry(top.clone()).or_default();
        set.extend(
            deps.iter()
                .filter_map(|d| core_top(d))
                .filter(|d| *d != top),
        );
    }
    assert!(
        edges.contains_key("flow") && edges.contains_key("jwt"),
        "{edges:?}"
    );
    for low in LOW {
        let deps = edges.get(low).cloned().unwrap_or_default();
        assert!(
            deps.is_empty(),
            "`{low}` is shared vocabulary but imports {deps:?}"
        );
    }
    for stage in STAGES {
        assert!(
            !edges[stage].contains("flow"),
            "the `{stage}` stage imports the flow"
        );
    }
    assert_eq!(
        circles(&edges),
        Vec::<Vec<String>>::new(),
        "module cycle in the core"
    );
}

#[test]
fn no_file_of_the_workspace_libraries_is_in_an_import_circle() {
    let (files, roots) = workspace();
    let edges = graph(&files, &roots);
    // Every non-test file is reached from a crate root: the check sees all of them.
    let unseen: Vec<&String> = files
        .keys()
        .filter(|f| !f.ends_with("tests.rs") && !edges.contains_key(*f))
        .collect();
    let test_only = ["src/jwt/vectors.rs"];
    assert_eq!(
        unseen,
        test_only.iter().collect::<Vec<_>>(),
        "files the layer check does not reach (a new test-only file? list it here)"
    );
    assert!(
        edges
            .keys()
            .any(|f| f.starts_with("filters/apiguard-wasm/"))
            && edges.keys().any(|f| f.starts_with("limiter/src/rls/")),
        "{:?}",
        edges.keys()
    );
    let found = circles(&edges);
    let show = |c: &Vec<String>| -> String {
        c.iter()
            .map(|f| {
                format!(
                    "{f} -> {:?}",
                    edges[f]
                        .intersection(&c.iter().cloned().collect())
                        .collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    assert!(
        found.is_empty(),
        "import circles (file imports file; docs/architecture.md, \"Layers\"):\n  {}",
        found.iter().map(show).collect::<Vec<_>>().join("\n\n  ")
    );
}

fn in_memory(files: &[(&str, &str)]) -> Graph {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    graph(&files, &["x/src/lib.rs".to_owned()])
}

#[test]
fn a_planted_circle_through_super_and_crate_paths_is_found() {
    let edges = in_memory(&[
        ("x/src/lib.rs", "pub mod a;\npub mod low;\n"),
        ("x/src/a/mod.rs", "pub mod b;\npub mod c;\n"),
        // b imports c through `super::`, c imports b through a `crate::` path in code.
        ("x/src/a/b.rs", "use super::c::C;\npub struct B(C);\n"),
        (
            "x/src/a/c.rs",
            "pub struct C;\nfn f() -> usize { crate::a::b::size() + crate::low::ONE }\n",
        ),
        ("x/src/low.rs", "pub const ONE: usize = 1;\n"),
    ]);
    assert_eq!(
        circles(&edges),
        vec![vec!["x/src/a/b.rs".to_owned(), "x/src/a/c.rs".to_owned()]]
    );
    // Declaring `mod b; mod c;` is no import of either.
    assert!(edges["x/src/a/mod.rs"].is_empty(), "{edges:?}");
    assert!(edges["x/src/a/c.rs"].contains("x/src/low.rs"));
}

#[test]
fn use_trees_child_paths_and_folders_resolve_to_files() {
    let edges = in_memory(&[
        ("x/src/lib.rs", "mod a;\nmod d;\npub use d::D;\n"),
        // `a.rs` with an `a/` folder; a group naming two files.
        (
            "x/src/a.rs",
            "mod e;\nuse crate::{d::{self, D as Dee}, a::e::*};\n",
        ),
        ("x/src/a/e.rs", "fn f() -> u8 { super::super::d::g() }\n"),
        ("x/src/d.rs", "pub struct D;\n"),
    ]);
    assert_eq!(
        edges["x/src/a.rs"],
        ["x/src/a/e.rs", "x/src/d.rs"].map(str::to_owned).into()
    );
    assert_eq!(edges["x/src/a/e.rs"], ["x/src/d.rs".to_owned()].into());
    assert_eq!(edges["x/src/lib.rs"], ["x/src/d.rs".to_owned()].into());
    assert!(circles(&edges).is_empty());
}

#[test]
fn test_code_comments_and_strings_are_no_imports() {
    let edges = in_memory(&[
        (
            "x/src/lib.rs",
            "mod a;\nmod b;\n#[cfg(test)]\nmod b_tests;\n#[cfg(test)]\nmod fixtures;\n",
        ),
        (
            "x/src/a.rs",
            concat!(
                "// use crate::b;\n/* crate::b::X */\n/// [`crate::b::X`]\n",
                "const S: &str = \"crate::b::X\";\nconst R: &str = r#\"use super::b;\"#;\n",
                "#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::b::X;\n}\n",
                "#[cfg(test)]\nfn helper() { crate::b::x() }\n",
            ),
        ),
        ("x/src/b.rs", "use crate::a;\n"),
        ("x/src/b_tests.rs", "use crate::a;\n"),
        ("x/src/fixtures.rs", "use crate::a;\n"),
    ]);
    assert!(edges["x/src/a.rs"].is_empty(), "{edges:?}");
    assert!(!edges.contains_key("x/src/b_tests.rs") && !edges.contains_key("x/src/fixtures.rs"));
    assert!(circles(&edges).is_empty());
}
