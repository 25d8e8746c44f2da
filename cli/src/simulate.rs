//! `apiguard simulate`: the filter's decision for one request, offline, with the same core code
//! the filter runs (`Pipeline::on_request`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use apiguard_core::flow::{Pipeline, RequestFacts, Step};
use apiguard_core::http::{HeaderOp, Headers};
use apiguard_core::jwt::keys::KeySet;
use apiguard_core::jwt::stage::Jwks;
use serde::Deserialize;
use serde_json::json;

use crate::files::read;

/// The request to simulate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimRequest {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default = "host")]
    host: String,
}

fn get() -> String {
    "GET".into()
}
fn host() -> String {
    "api.example.com".into()
}

/// How `simulate` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

/// The exit status when the filter would answer the request itself (deny): 401, 403, 400,
/// 429 or 503.
pub const REFUSED: u8 = 3;

pub fn run(config: &Path, request: &Path, jwks: Option<&Path>, output: Output) -> ExitCode {
    let cfg = match read(config) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (pipeline, _) = match Pipeline::from_json(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", config.display());
            return ExitCode::from(1);
        }
    };
    let req: SimRequest = match read(request).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", request.display());
            return ExitCode::from(1);
        }
        Err(code) => return code,
    };
    let mut state = pipeline.worker_state();
    if let (Some(path), Some(jwt)) = (jwks, &pipeline.jwt) {
        let keys = match read(path).map(|b| KeySet::from_document(&b)) {
            Ok(Ok((k, _))) => Arc::new(k),
            Ok(Err(e)) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(1);
            }
            Err(code) => return code,
        };
        for (i, p) in jwt.providers.iter().enumerate() {
            if matches!(p.jwks, Jwks::Remote(_)) {
                state.jwt.keys.set(i, Some(keys.clone()));
            }
        }
    }
    let mut list: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), req.method.clone().into_bytes()),
        (":path".into(), req.path.clone().into_bytes()),
        (":authority".into(), req.host.clone().into_bytes()),
    ];
    list.extend(
        req.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes())),
    );
    let facts = RequestFacts {
        path: req.path.as_bytes(),
        headers: Headers::new(&list),
        source: req.source.as_deref(),
        body_follows: false,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let out = pipeline.on_request(&facts, now_ms, &mut state);
    let identity = out
        .identity
        .as_ref()
        .map(|i| json!({"provider": &*i.provider, "claims": i.claims.map}));
    let policy = out.policy.as_ref().map(|p| {
        json!({"allow": p.decision.allow, "reasons": p.decision.reasons, "rate_limit_tier": p.decision.tier,
               "rate_limit_cost": p.decision.cost, "dry_run_deny": p.dry_run_deny})
    });
    let ops = |ops: &[HeaderOp]| -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                HeaderOp::Remove(n) => format!("remove {n}"),
                HeaderOp::Set(n, v) => format!("set {n}: {v}"),
            })
            .collect()
    };
    let (verdict, detail) = match &out.step {
        Step::Continue(o) => ("pass", json!({"upstream_header_changes": ops(o)})),
        Step::Respond(r) => (
            "refuse",
            json!({"status": r.status, "headers": r.headers, "body": String::from_utf8_lossy(&r.body)}),
        ),
        Step::CheckLimits { call, resume } => (
            "rate-limit check",
            json!({
                "note": "the request passes if apiguard-limiter allows it, else 429",
                "cluster": call.cluster,
                "scope": resume.plan.scope,
                "key": resume.plan.key,
                "checks": resume.plan.checks,
                "upstream_header_changes": ops(&resume.ops),
            }),
        ),
        Step::FetchKeys(fetch) => {
            let provider = &fetch.provider;
            let name = pipeline
                .jwt
                .as_ref()
                .map(|j| j.provider_name(*provider).to_string())
                .unwrap_or_default();
            eprintln!("provider `{name}` fetches its keys remotely: pass --jwks FILE to simulate with them");
            return ExitCode::from(1);
        }
    };
    // The counters the request moves, by their metric names (docs/operations.md).
    let counters: Vec<&str> = out
        .events
        .iter()
        .flat_map(|e| e.counters())
        .map(|c| c.name())
        .collect();
    let report = json!({
        "verdict": verdict,
        "detail": detail,
        "identity": identity,
        "policy": policy,
        "counters": counters,
    });
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Output::Text => print!("{}", text(&report)),
    }
    if verdict == "refuse" {
        ExitCode::from(REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The report as lines for people.
fn text(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let d = &r["detail"];
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    match r["verdict"].as_str() {
        Some("refuse") => {
            out.push_str(&format!("verdict: refused, {}\n", d["status"]));
            if let Some(body) = d["body"].as_str().filter(|b| !b.is_empty()) {
                out.push_str(&format!("  body: {body}\n"));
            }
            for h in d["headers"].as_array().into_iter().flatten() {
                if let Some([name, value]) = h.as_array().map(Vec::as_slice) {
                    let (n, v) = (name.as_str().unwrap_or(""), value.as_str().unwrap_or(""));
                    out.push_str(&format!("  header: {n}: {v}\n"));
                }
            }
        }
        Some("pass") => out.push_str("verdict: passed upstream\n"),
        _ => {
            out.push_str(&format!(
                "verdict: passed upstream if apiguard-limiter allows it (cluster {}), else 429\n  key: {}\n",
                d["cluster"].as_str().unwrap_or("?"),
                d["key"].as_str().unwrap_or("?")
            ));
            for c in d["checks"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  limit: {} per {} ms (cost {})\n",
                    c["limit"], c["window_ms"], c["cost"]
                ));
            }
        }
    }
    let changes = list(&d["upstream_header_changes"]);
    if !changes.is_empty() {
        out.push_str("upstream header changes:\n");
        for c in changes {
            out.push_str(&format!("  {c}\n"));
        }
    }
    match &r["identity"] {
        serde_json::Value::Null => out.push_str("identity: none\n"),
        id => {
            let sub = id["claims"]["sub"].as_str().unwrap_or("?");
            out.push_str(&format!(
                "identity: provider {}, sub {sub}\n",
                id["provider"].as_str().unwrap_or("?")
            ));
        }
    }
    if let serde_json::Value::Object(p) = &r["policy"] {
        let allow = p.get("allow").and_then(|v| v.as_bool()).unwrap_or(false);
        let mut line = format!("policy: {}", if allow { "allow" } else { "deny" });
        let reasons = p.get("reasons").map(list).unwrap_or_default();
        if !reasons.is_empty() {
            line.push_str(&format!(" ({})", reasons.join(", ")));
        }
        if let Some(t) = p.get("rate_limit_tier").and_then(|t| t.as_str()) {
            line.push_str(&format!("; tier {t}"));
        }
        if p.get("dry_run_deny").and_then(|v| v.as_bool()) == Some(true) {
            line.push_str("; dry run: the denial is not enforced");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("counters: {}\n", list(&r["counters"]).join(", ")));
    out
}
