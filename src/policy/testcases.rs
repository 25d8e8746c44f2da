//! Policy test cases as data files, one case a file (`policies/tests/*.json`):
//!
//! ```json
//! {"description": "…", "input": {…}, "data": {…optional…},
//!  "expected": {"allow": false, "reasons": ["tenant_mismatch"], "rate_limit_tier": "standard"}}
//! ```
//!
//! `expected.reasons`, `expected.rate_limit_tier`, `expected.rate_limit_cost` and
//! `expected.headers` (every header the policy sets) are compared only when present; reasons
//! compare as sets. The same runner serves `cargo test` and `apiguard policy test`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

pub use super::input::with_derived_fields;
use super::{CompileError, PolicyDecision, PolicyProgram};
use crate::config::{PackEngine, RegoVersion};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub description: String,
    pub input: Value,
    /// Data for this case, instead of the suite's.
    #[serde(default)]
    pub data: Option<Value>,
    pub expected: Expected,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub allow: bool,
    #[serde(default)]
    pub reasons: Option<Vec<String>>,
    #[serde(default)]
    pub rate_limit_tier: Option<String>,
    #[serde(default)]
    pub rate_limit_cost: Option<u64>,
    /// The headers the policy sets upstream, all of them.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseVerdict {
    Pass,
    Fail(String),
}

/// Runs one case against `modules` read as Rego `version` (compiled with the case's data, or
/// `data`; the built-in pack as `engine` says).
pub fn run(
    modules: &BTreeMap<String, String>,
    data: &Value,
    package: &str,
    (engine, version): (PackEngine, RegoVersion),
    case: &Case,
) -> Result<(CaseVerdict, PolicyDecision), CompileError> {
    let data = case.data.as_ref().unwrap_or(data);
    let (program, _) = PolicyProgram::compile_pack_as(
        modules,
        data,
        package,
        Duration::from_secs(1),
        engine,
        version,
    )?;
    let decision = program.vm().evaluate(with_derived_fields(&case.input));
    Ok((judge(case, &decision), decision))
}

/// Compares a decision with a case's expectations.
pub fn judge(case: &Case, d: &PolicyDecision) -> CaseVerdict {
    let mut problems = Vec::new();
    if d.allow != case.expected.allow {
        problems.push(format!(
            "allow is {}, expected {}",
            d.allow, case.expected.allow
        ));
    }
    if let Some(want) = &case.expected.reasons {
        let mut want = want.clone();
        want.sort();
        if want != d.reasons {
            problems.push(format!("reasons are {:?}, expected {want:?}", d.reasons));
        }
    }
    if let Some(want) = &case.expected.rate_limit_tier {
        if d.tier.as_ref() != Some(want) {
            problems.push(format!(
                "rate_limit_tier is {:?}, expected {want:?}",
                d.tier
            ));
        }
    }
    if let Some(want) = case.expected.rate_limit_cost {
        if d.cost != Some(want) {
            problems.push(format!("rate_limit_cost is {:?}, expected {want}", d.cost));
        }
    }
    if let Some(want) = &case.expected.headers {
        let got: BTreeMap<String, String> = d.headers.iter().cloned().collect();
        if &got != want {
            problems.push(format!("headers are {got:?}, expected {want:?}"));
        }
    }
    if problems.is_empty() {
        CaseVerdict::Pass
    } else {
        CaseVerdict::Fail(problems.join("; "))
    }
}

/// Line coverage of a policy's modules over a set of cases.
#[cfg(feature = "coverage")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    pub path: String,
    pub covered: usize,
    pub not_covered: Vec<u32>,
}

/// Evaluates every case with regorus's interpreter, recording which rule lines ran.
#[cfg(feature = "coverage")]
pub fn coverage(
    modules: &BTreeMap<String, String>,
    data: &Value,
    package: &str,
    version: RegoVersion,
    cases: &[Case],
) -> Result<Vec<FileCoverage>, CompileError> {
    let mut engine = regorus::Engine::new();
    super::add_modules(&mut engine, modules, version)?;
    engine.set_enable_coverage(true);
    for case in cases {
        engine.clear_data();
        let data = super::effective_data(modules, case.data.as_ref().unwrap_or(data));
        engine
            .add_data(regorus::Value::from(data))
            .map_err(|e| CompileError::Data(format!("{e:#}")))?;
        engine.set_input(regorus::Value::from(case.input.clone()));
        for out in super::decision::OUTPUTS {
            // Coverage only; errors are reported by the cases themselves.
            let _ = engine.eval_rule(format!("{package}.{out}"));
        }
    }
    let report = engine
        .get_coverage_report()
        .map_err(|e| CompileError::Rego(format!("{e:#}")))?;
    Ok(report
        .files
        .into_iter()
        .map(|f| FileCoverage {
            path: f.path,
            covered: f.covered.len(),
            not_covered: f.not_covered.into_iter().collect(),
        })
        .collect())
}
