//! `apiguard policy test` and `apiguard policy eval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use apiguard_core::config::{PackEngine, RegoVersion};
use apiguard_core::flow::Pipeline;
use apiguard_core::policy::testcases::{self, Case, CaseVerdict};
use apiguard_core::policy::{PolicyProgram, BUILTIN_NAME, BUILTIN_PACK};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::files::read;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run policy test cases (one JSON file per case) and report rule coverage.
    ///
    /// A case file holds `input`, optional `data`, and `expected` (`allow`, optional `reasons`,
    /// `rate_limit_tier`, `rate_limit_cost` and `headers`). The policy is the built-in pack, or
    /// the `policy` section of `--config` (its modules read as its `policy.rego_version`).
    Test {
        /// Folder of case files (`*.json`).
        dir: PathBuf,
        /// Plugin configuration whose `policy` section (modules, data, entrypoint) to test.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `text` (for people), `json` (one document) or `junit` (JUnit XML, for CI systems).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Evaluate a policy on one input document.
    ///
    /// With `--config`: apiguard's decision for the configuration's policy, as JSON. Without it,
    /// as `opa eval` does: `-d` names Rego modules and data files (or folders of them), `-i` the
    /// input, and the query is any Rego query; the answer is OPA's result document.
    #[command(verbatim_doc_comment)]
    Eval {
        /// Plugin configuration whose `policy` section to use.
        #[arg(long, conflicts_with_all = ["data", "query"])]
        config: Option<PathBuf>,
        /// A Rego module (`.rego`), a data file (`.json`, `.yaml`) or a folder of them; repeat.
        #[arg(short = 'd', long = "data")]
        data: Vec<PathBuf>,
        /// The input document (JSON or YAML; docs/policies.md).
        #[arg(short = 'i', long)]
        input: Option<PathBuf>,
        /// Exit 1 when the query's result is undefined (as `opa eval --fail`).
        #[arg(long)]
        fail: bool,
        /// Read the modules as Rego v0, as OPA before 1.0 did (as `opa eval --v0-compatible`); a
        /// module that imports `rego.v1` is Rego v1 either way.
        #[arg(long)]
        v0_compatible: bool,
        /// The query, e.g. `data.api.authz.allow`.
        query: Option<String>,
    },
}

/// How `policy test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

/// The policy under test: modules, data, entrypoint, how the built-in pack runs, and the Rego
/// version of the modules (`policy.rego_version`).
struct Subject {
    modules: BTreeMap<String, String>,
    data: Value,
    package: String,
    engine: PackEngine,
    version: RegoVersion,
}

fn subject(config: Option<&Path>) -> Result<Subject, ExitCode> {
    let builtin = || BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())]);
    let Some(path) = config else {
        return Ok(Subject {
            modules: builtin(),
            data: json!({}),
            package: "data.api.authz".into(),
            engine: PackEngine::Native,
            version: RegoVersion::V1,
        });
    };
    let bytes = read(path)?;
    let (pipeline, warnings) = Pipeline::from_json(&bytes).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(1)
    })?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let Some(policy) = pipeline.config.policy else {
        eprintln!("error: {}: has no `policy` section", path.display());
        return Err(ExitCode::from(1));
    };
    Ok(Subject {
        modules: policy.modules.unwrap_or_else(builtin),
        data: policy.data.unwrap_or_else(|| json!({})),
        package: policy.entrypoint,
        engine: policy.pack_engine,
        version: policy.rego_version,
    })
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Test {
            dir,
            config,
            format,
        } => test(&dir, config.as_deref(), format),
        PolicyCommand::Eval {
            config: Some(config),
            input,
            ..
        } => match input {
            Some(input) => eval(&config, &input),
            None => {
                eprintln!("apiguard: --config needs --input");
                ExitCode::from(2)
            }
        },
        PolicyCommand::Eval {
            config: None,
            data,
            input,
            fail,
            v0_compatible,
            query,
        } => {
            let version = if v0_compatible {
                RegoVersion::V0
            } else {
                RegoVersion::V1
            };
            match query {
                Some(q) if !data.is_empty() => {
                    crate::opa::eval(&data, input.as_deref(), &q, fail, version)
                }
                _ => {
                    eprintln!("apiguard: give --config CONFIG --input INPUT, or -d FILE… [-i INPUT] QUERY");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// One case's outcome.
struct CaseReport {
    name: String,
    description: String,
    /// `None` when it passed, else why not.
    failure: Option<String>,
}

fn test(dir: &Path, config: Option<&Path>, format: Format) -> ExitCode {
    let subject = match subject(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            eprintln!("apiguard: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    files.sort();
    if files.is_empty() {
        eprintln!("apiguard: no case files (*.json) in {}", dir.display());
        return ExitCode::from(2);
    }
    let mut reports = Vec::new();
    let mut cases = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let case: Case = match read(file).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                reports.push(CaseReport {
                    name,
                    description: String::new(),
                    failure: Some(format!("not a case file: {e}")),
                });
                continue;
            }
            Err(code) => return code,
        };
        let failure = match testcases::run(
            &subject.modules,
            &subject.data,
            &subject.package,
            (subject.engine, subject.version),
            &case,
        ) {
            Ok((CaseVerdict::Pass, _)) => None,
            Ok((CaseVerdict::Fail(why), _)) => Some(why),
            Err(e) => {
                eprintln!("error: the policy does not compile: {e}");
                return ExitCode::from(1);
            }
        };
        reports.push(CaseReport {
            name,
            description: case.description.clone(),
            failure,
        });
        cases.push(case);
    }
    let coverage = testcases::coverage(
        &subject.modules,
        &subject.data,
        &subject.package,
        subject.version,
        &cases,
    );
    let coverage = match coverage {
        Ok(files) => files
            .into_iter()
            .filter(|f| f.path != "apiguard_entry.rego")
            .collect(),
        Err(e) => {
            eprintln!("warning: no coverage report: {e}");
            Vec::new()
        }
    };
    let failed = reports.iter().filter(|r| r.failure.is_some()).count();
    let suite = dir.display().to_string();
    match format {
        Format::Text => print_text(&reports, failed, &coverage),
        Format::Json => print_json(&suite, &reports, failed, &coverage),
        Format::Junit => print_junit(&suite, &reports, failed),
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_text(reports: &[CaseReport], failed: usize, coverage: &[testcases::FileCoverage]) {
    for r in reports {
        match &r.failure {
            None => println!("ok   {}: {}", r.name, r.description),
            Some(why) if r.description.is_empty() => println!("FAIL {}: {why}", r.name),
            Some(why) => println!("FAIL {}: {}\n     {why}", r.name, r.description),
        }
    }
    println!("\n{} cases passed, {failed} failed", reports.len() - failed);
    for f in coverage {
        let total = f.covered + f.not_covered.len();
        let missing = if f.not_covered.is_empty() {
            String::new()
        } else {
            format!("; lines never evaluated: {:?}", f.not_covered)
        };
        println!(
            "coverage {}: {:.0}% of {total} rule lines{missing}",
            f.path,
            percent(f)
        );
    }
}

fn percent(f: &testcases::FileCoverage) -> f64 {
    let total = f.covered + f.not_covered.len();
    if total == 0 {
        100.0
    } else {
        f.covered as f64 * 100.0 / total as f64
    }
}

/// One JSON document: every case, the counts, and the coverage per module.
fn print_json(
    suite: &str,
    reports: &[CaseReport],
    failed: usize,
    coverage: &[testcases::FileCoverage],
) {
    let doc = json!({
        "suite": suite,
        "passed": reports.len() - failed,
        "failed": failed,
        "cases": reports.iter().map(|r| json!({
            "name": r.name,
            "description": r.description,
            "passed": r.failure.is_none(),
            "failure": r.failure,
        })).collect::<Vec<_>>(),
        "coverage": coverage.iter().map(|f| json!({
            "module": f.path,
            "covered_lines": f.covered,
            "lines_never_evaluated": f.not_covered,
            "percent": (percent(f) * 10.0).round() / 10.0,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

/// JUnit XML, the report format CI systems show as test results: one `testsuite` for the
/// folder, one `testcase` per case file, a `failure` for each failing case.
fn print_junit(suite: &str, reports: &[CaseReport], failed: usize) {
    // XML 1.0 has no place for control characters but tab and newline, even escaped.
    let escape = |text: &str| -> String {
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        quick_xml::escape::escape(clean.as_str()).into_owned()
    };
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"apiguard policy test\" tests=\"{}\" failures=\"{failed}\">\n",
        reports.len()
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\">\n",
        escape(suite),
        reports.len()
    ));
    for r in reports {
        let open = format!(
            "    <testcase classname=\"{}\" name=\"{}\"",
            escape(suite),
            escape(&r.name)
        );
        match &r.failure {
            None => xml.push_str(&format!("{open}/>\n")),
            Some(why) => xml.push_str(&format!(
                "{open}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                escape(why),
                escape(&format!("{}\n{why}", r.description))
            )),
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>");
    println!("{xml}");
}

fn eval(config: &Path, input: &Path) -> ExitCode {
    let subject = match subject(Some(config)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let input = match crate::opa::input_document(input) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let program = match PolicyProgram::compile_pack_as(
        &subject.modules,
        &subject.data,
        &subject.package,
        Duration::from_secs(1),
        subject.engine,
        subject.version,
    ) {
        Ok((p, _)) => p,
        Err(e) => {
            eprintln!("error: the policy does not compile: {e}");
            return ExitCode::from(1);
        }
    };
    let d = program
        .vm()
        .evaluate(testcases::with_derived_fields(&input));
    let mut out = d.to_json();
    out["evaluator"] = json!(format!("{:?}", program.evaluator));
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    ExitCode::SUCCESS
}
