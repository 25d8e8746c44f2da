//! Suite `floor`: instructions per request of the policy stage's steps, counted natively by
//! `valgrind --tool=callgrind`. Counts repeat exactly for the same binary and inputs, whatever the
//! machine's load, so shares too small for Envoy's CPU time to resolve (a few µs in ±20 µs of
//! noise) are visible here. Native x86-64 instructions are not Envoy's V8 costs; read the shares,
//! not the absolute numbers, and check the largest ones in Envoy with the `builds` suite.
//!
//! The suite runs this binary again under callgrind once per step and request count
//! (`APIGUARD_FLOOR_WORKER=<step>:<n>`); a step's cost per request is the difference between two
//! counts divided by the difference in requests, so start-up cancels out.

use std::process::Command;

use apiguard_core::flow::{Pipeline, RequestFacts, WorkerState};
use apiguard_core::http::Headers;
use serde_json::{json, Value};

use crate::measure::write_json;
use crate::setup::{es256_caller, RESOURCES};
use crate::{BenchResult, Suite};

/// The steps counted, each a superset of the one before where it says "+".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The JWT stage alone (cache hit): the baseline.
    Jwt,
    /// + `allow := true`: input document, evaluation, decision.
    AllowTrue,
    /// + the decision record for filter state (the host call itself is not counted here).
    AllowTrueRecord,
    /// JWT + the built-in pack as Rego.
    PackRego,
    /// JWT + the built-in pack compiled (the default).
    Pack,
}

const STEPS: [Step; 5] = [
    Step::Jwt,
    Step::AllowTrue,
    Step::AllowTrueRecord,
    Step::PackRego,
    Step::Pack,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Jwt => "jwt",
            Step::AllowTrue => "allow-true",
            Step::AllowTrueRecord => "allow-true+record",
            Step::PackRego => "pack-rego",
            Step::Pack => "pack",
        }
    }

    fn config(self, jwt: &Value) -> Value {
        let allow_true = json!({"resources": RESOURCES,
            "modules": {"trivial.rego": "package api.authz\nallow := true\n"}});
        match self {
            Step::Jwt => json!({"jwt": jwt}),
            Step::AllowTrue | Step::AllowTrueRecord => json!({"jwt": jwt, "policy": allow_true}),
            Step::PackRego => {
                json!({"jwt": jwt, "policy": {"resources": RESOURCES, "pack_engine": "rego"}})
            }
            Step::Pack => json!({"jwt": jwt, "policy": {"resources": RESOURCES}}),
        }
    }
}

/// Under callgrind: `n` requests of `step`, nothing printed.
pub fn worker(spec: &str) -> BenchResult {
    let (name, n) = spec
        .split_once(':')
        .ok_or("APIGUARD_FLOOR_WORKER=<step>:<n>")?;
    let step = STEPS
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or("unknown step")?;
    let n: u64 = n.parse()?;
    let (auth, jwt) = es256_caller();
    let (pipeline, _) = Pipeline::from_json(step.config(&jwt).to_string().as_bytes())?;
    let mut state: WorkerState = pipeline.worker_state();
    let headers = vec![
        (
            ":path".to_owned(),
            b"/api/v1/tenants/t1/documents/7".to_vec(),
        ),
        (":method".to_owned(), b"GET".to_vec()),
        ("authorization".to_owned(), auth.into_bytes()),
    ];
    let facts = RequestFacts {
        path: b"/api/v1/tenants/t1/documents/7",
        headers: Headers::new(&headers),
        source: None,
        body_follows: false,
    };
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let mut published = 0usize;
    for _ in 0..n {
        let outcome = pipeline.on_request(&facts, now_ms, &mut state);
        if step == Step::AllowTrueRecord {
            published += pipeline
                .filter_state(&outcome)
                .iter()
                .map(|(_, v)| v.len())
                .sum::<usize>();
        }
        std::hint::black_box(&outcome);
    }
    std::hint::black_box(published);
    Ok(())
}

/// Instructions callgrind counted for `n` requests of `step`.
fn count(step: Step, n: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let out = std::env::temp_dir().join(format!(
        "apiguard-floor-{}-{}-{n}.out",
        std::process::id(),
        step.name()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe()?)
        .arg("floor")
        .env("APIGUARD_FLOOR_WORKER", format!("{}:{n}", step.name()))
        .output()
        .map_err(|e| format!("valgrind: {e} (install it: apt-get install valgrind)"))?;
    if !status.status.success() {
        return Err(format!(
            "callgrind run of {} failed: {}",
            step.name(),
            String::from_utf8_lossy(&status.stderr)
        )
        .into());
    }
    let text = std::fs::read_to_string(&out)?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no summary line in callgrind's output".into())
}

pub async fn run() -> BenchResult {
    let (lo, hi) = (200u64, 1200u64);
    println!(
        "instructions per request (callgrind, native x86-64; ({hi} − {lo} requests) per step)"
    );
    println!("{:<24} {:>14} {:>16}", "step", "instr/request", "over jwt");
    let mut per: Vec<(Step, f64)> = Vec::new();
    for step in STEPS {
        let (a, b) = (count(step, lo)?, count(step, hi)?);
        let each = b.saturating_sub(a) as f64 / (hi - lo) as f64;
        per.push((step, each));
    }
    let base = per.first().map_or(0.0, |(_, v)| *v);
    let mut rows = Vec::new();
    for (step, each) in &per {
        println!("{:<24} {:>14.0} {:>16.0}", step.name(), each, each - base);
        rows.push(
            json!({"step": step.name(), "instructions_per_request": each,
                         "over_jwt": each - base}),
        );
    }
    write_json(Suite::Floor, json!({"suite": "floor", "steps": rows}))
}
