//! The core's modules form layers, checked from the source: the shared vocabulary (`http`,
//! `jose`, `path`, `reply`) imports no other module; no stage imports the flow; and the
//! top-level modules, by their `crate::` references outside test code, have no cycle. Native
//! only: it reads the source files.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LOW: [&str; 4] = ["http", "jose", "path", "reply"];
const STAGES: [&str; 3] = ["jwt", "policy", "ratelimit"];

/// Top-level module → the top-level modules its non-test code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || name.ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // In-file unit tests sit at the end, after `#[cfg(test)] mod tests`.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let deps = edges.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !dep.is_empty() && dep != top {
                    deps.insert(dep);
                }
            }
        }
    }
    edges
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut c = path[at..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_core_modules_form_layers_without_cycles() {
    let edges = graph();
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
    assert_eq!(cycle(&edges), None, "module cycle in the core");
}
