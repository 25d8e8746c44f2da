//! Spellings of a request path that backends route alike (Tomcat, Jetty and Spring drop `;…`
//! parameters; many frameworks route case-insensitively): what the edge tests send, natively
//! (`src/edge_tests.rs`) and through Envoy (`tests/e2e/edges.rs`), to prove that no spelling of
//! a denied request is admitted. Test support only (feature `test-support`).

/// Spellings a backend may route like `path`: `;x` on each segment (raw and `%3B`), a `..;`
/// climb before each segment, and upper or mixed case on each segment in `literal`.
pub fn spellings(path: &str, literal: &dyn Fn(usize) -> bool) -> Vec<String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let join = |segs: &[String]| format!("/{}", segs.join("/"));
    let mut out = Vec::new();
    for i in 0..segs.len() {
        let mut with = |f: &dyn Fn(&str) -> String| {
            let mut v: Vec<String> = segs.iter().map(|s| (*s).to_owned()).collect();
            v[i] = f(segs[i]);
            out.push(join(&v));
        };
        with(&|s| format!("{s};x"));
        with(&|s| format!("{s}%3Bx=1"));
        with(&|s| format!("x/..;/{s}"));
        if literal(i) {
            with(&|s| s.to_ascii_uppercase());
            with(&|s| {
                s.chars()
                    .enumerate()
                    .map(|(j, c)| {
                        if j % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect()
            });
        }
    }
    out
}

/// Which segments of `path` the template leaves literal (all, if it does not cover the path).
pub fn literal_segments(template: &str, path: &str) -> impl Fn(usize) -> bool {
    let tpl: Vec<String> = template
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let covered = segs.len() >= tpl.len()
        && tpl
            .iter()
            .zip(&segs)
            .all(|(t, s)| t.starts_with('{') || t.eq_ignore_ascii_case(s));
    move |i| !covered || !tpl.get(i).is_some_and(|t| t.starts_with('{'))
}
