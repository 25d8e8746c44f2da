#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::vm::{MAX_INSTRUCTIONS, MIN_INSTRUCTIONS};
use super::*;
use crate::config::{PackEngine, RegoVersion};

fn pack() -> BTreeMap<String, String> {
    BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())])
}

fn program(modules: &BTreeMap<String, String>) -> PolicyProgram {
    PolicyProgram::compile(
        modules,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(50),
    )
    .unwrap()
}

#[test]
fn the_pack_compiles_for_the_rvm() {
    let p = program(&pack());
    assert_eq!(p.evaluator, Evaluator::Rvm, "{:?}", p.fallback_reason);
    assert_eq!(p.digest.len(), 64);
}

#[test]
fn pack_defaults_merge_under_operator_data() {
    let d = effective_data(
        &pack(),
        &json!({"api_authz": {"tiers": {"editor": "gold"}, "admin_prefixes": ["/ops", "/x//", "/"]}, "other": 1}),
    );
    assert_eq!(
        d["api_authz"]["tiers"],
        json!({"super_admin": "unlimited", "admin": "high", "editor": "gold"})
    );
    // Prefixes end with exactly one `/`.
    assert_eq!(
        d["api_authz"]["admin_prefixes"],
        json!(["/ops/", "/x/", "/"])
    );
    assert_eq!(d["api_authz"]["public_prefixes"], json!(["/healthz/"]));
    assert_eq!(d["api_authz"]["default_tier"], "standard");
    assert_eq!(d["other"], 1);
    let custom = BTreeMap::from([("x.rego".to_owned(), "package x".to_owned())]);
    assert_eq!(effective_data(&custom, &json!({"a": 1})), json!({"a": 1}));
}

#[test]
fn compile_errors_name_the_module_and_line() {
    let bad = BTreeMap::from([(
        "authz.rego".to_owned(),
        "package api.authz\n\nallow if {\n  input.x ==\n}\n".to_owned(),
    )]);
    let err = PolicyProgram::compile(&bad, &json!({}), "data.api.authz", Duration::from_millis(5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("authz.rego:"), "{err}");
    let no_allow = BTreeMap::from([(
        "a.rego".to_owned(),
        "package api.authz\nimport rego.v1\nx := 1\n".to_owned(),
    )]);
    let err = PolicyProgram::compile(
        &no_allow,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(5),
    )
    .unwrap_err();
    assert_eq!(err, CompileError::NoAllow("data.api.authz".into()));
}

fn custom(body: &str) -> PolicyVm {
    let m = BTreeMap::from([(
        "p.rego".to_owned(),
        format!("package api.authz\nimport rego.v1\n{body}\n"),
    )]);
    program(&m).vm()
}

#[test]
fn outputs_are_read_strictly() {
    let d = custom("allow := true\nrate_limit_tier := \"gold\"\nrate_limit_cost := 3\nheaders := {\"x-plan\": \"gold\"}").evaluate(json!({}));
    assert_eq!(
        d,
        PolicyDecision {
            allow: true,
            reasons: vec![],
            tier: Some("gold".into()),
            cost: Some(3),
            headers: vec![("x-plan".into(), "gold".into())],
            failure: None
        }
    );
    // An output the package defines but that is undefined for this input is left out.
    let d = custom("allow := true\nrate_limit_tier := \"gold\" if input.x").evaluate(json!({}));
    assert!(d.allow && d.failure.is_none(), "{d:?}");
    assert_eq!(d.tier, None);
    // Only boolean true allows.
    let d = custom("allow := \"true\"").evaluate(json!({}));
    assert!(!d.allow);
    assert_eq!(d.reasons, vec!["denied"]);
    // Undefined allow, wrong output types, forbidden headers: fail closed with a reason.
    assert_eq!(
        custom("allow if input.never").evaluate(json!({})).reasons,
        vec!["policy_undefined"]
    );
    assert_eq!(
        custom("allow := true\nrate_limit_cost := \"x\"")
            .evaluate(json!({}))
            .failure,
        Some(PolicyFailure::Error)
    );
    assert_eq!(
        custom("allow := true\nheaders := {\"host\": \"evil\"}")
            .evaluate(json!({}))
            .failure,
        Some(PolicyFailure::Error)
    );
    assert_eq!(
        custom("allow := true\nheaders := {\"x-a\": \"a\\nb\"}")
            .evaluate(json!({}))
            .failure,
        Some(PolicyFailure::Error)
    );
    // Conflicting values of a complete rule deny (as an error or an undefined decision).
    let d = custom("allow := true if input.a\nallow := false if input.a").evaluate(json!({"a": 1}));
    assert!(!d.allow);
    assert!(d.failure.is_some(), "{d:?}");
}

/// The interpreter fallback keeps the same budget and the same decisions.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[test]
fn the_interpreter_fallback_keeps_the_budget() {
    let runaway = BTreeMap::from([(
        "p.rego".to_owned(),
        "package api.authz\nimport rego.v1\nallow if { count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]) < 0 }\n".to_owned(),
    )]);
    let p = PolicyProgram::compile_for(
        &runaway,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(50),
        RegoVersion::V1,
        true,
    )
    .unwrap();
    assert_eq!(p.evaluator, Evaluator::Interpreter);
    let started = std::time::Instant::now();
    let d = p.vm().evaluate(json!({}));
    assert_eq!(d.failure, Some(PolicyFailure::Timeout), "{d:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let pack = PolicyProgram::compile_for(
        &pack(),
        &json!({}),
        "data.api.authz",
        Duration::from_millis(50),
        RegoVersion::V1,
        true,
    )
    .unwrap();
    let d = pack
        .vm()
        .evaluate(json!({"request": {"method": "GET", "path": "/healthz", "lower_path": "/healthz"}, "resource": {}}));
    assert!(d.allow, "{d:?}");
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[test]
fn the_time_budget_stops_a_runaway_policy() {
    let mut vm = custom("allow if { count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]) < 0 }");
    let started = std::time::Instant::now();
    let d = vm.evaluate(json!({}));
    assert_eq!(d.failure, Some(PolicyFailure::Timeout), "{d:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The same VM serves the next request normally.
    let mut ok = custom("allow := true");
    assert!(ok.evaluate(json!({})).allow);
}

fn check_case(name: &str, text: &str) -> Option<String> {
    let case: testcases::Case =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (verdict, decision) = testcases::run(
        &pack(),
        &json!({}),
        "data.api.authz",
        (PackEngine::Rego, RegoVersion::V1),
        &case,
    )
    .unwrap();
    if let testcases::CaseVerdict::Fail(why) = verdict {
        return Some(format!("{name}: {why} ({decision:?})"));
    }
    // The pack writes `allow` and `reasons` separately (and apiguard reads reasons only on a
    // deny): they must agree, allow exactly when there is no reason, on every case.
    let reasons = pack_reasons(&case);
    if decision.allow == reasons.is_empty() {
        None
    } else {
        Some(format!(
            "{name}: allow is {} but reasons are {reasons:?}",
            decision.allow
        ))
    }
}

/// The pack's `reasons` for a case, evaluated on their own.
fn pack_reasons(case: &testcases::Case) -> Vec<String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    for (name, text) in pack() {
        engine.add_policy(name, text).unwrap();
    }
    let data = effective_data(&pack(), case.data.as_ref().unwrap_or(&json!({})));
    engine.add_data(regorus::Value::from(data)).unwrap();
    engine.set_input(regorus::Value::from(case.input.clone()));
    let v = engine
        .eval_rule("data.api.authz.reasons".to_owned())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&v.to_json_str().unwrap()).unwrap();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every case file under `policies/tests/`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_pack_passes_its_case_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests");
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            n += 1;
            failures.extend(check_case(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(n >= 30, "only {n} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A subset inside the Wasm VM (no file system there).
#[test]
fn case_files_subset() {
    macro_rules! case {
        ($f:literal) => {
            ($f, include_str!(concat!("../../policies/tests/", $f)))
        };
    }
    let failures: Vec<String> = [
        case!("editor_reads_own_tenant.json"),
        case!("tenant_mismatch.json"),
        case!("viewer_cannot_delete.json"),
        case!("editor_on_admin_path.json"),
        case!("no_token_on_public_path.json"),
        case!("override_roles_claim.json"),
    ]
    .into_iter()
    .filter_map(|(n, t)| check_case(n, t))
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The budget on regorus's VM is work, measured per policy at configure time: the same policy
/// gets the same budget anywhere, and an evaluation within it is never cut off by wall time (a
/// descheduled worker), while a runaway is (`the_time_budget_stops_a_runaway_policy`).
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[test]
fn the_budget_is_work_not_wall_time() {
    let pack = program(&pack());
    let again = program(&self::pack());
    assert_eq!(pack.max_instructions, again.max_instructions);
    assert!(
        (MIN_INSTRUCTIONS..=MAX_INSTRUCTIONS).contains(&pack.max_instructions),
        "{}",
        pack.max_instructions
    );
    // Far more work than a millisecond holds in a debug build, well within its instructions.
    let busy = BTreeMap::from([(
        "p.rego".to_owned(),
        "package api.authz\nimport rego.v1\nallow if count([x | some x in numbers.range(1, 20000)]) > 0"
            .to_owned(),
    )]);
    let p = PolicyProgram::compile(
        &busy,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(1),
    )
    .unwrap();
    assert_eq!(p.evaluator, Evaluator::Rvm);
    assert!(
        p.max_instructions > MIN_INSTRUCTIONS,
        "{}",
        p.max_instructions
    );
    let started = std::time::Instant::now();
    let d = p.vm().evaluate(json!({}));
    assert!(d.allow, "{d:?} after {:?}", started.elapsed());
}

/// A package that defines only `allow` (and `reasons`) is read through its own rules on the VM,
/// not through the entry rule; the decisions are the interpreter's (which reads the entry rule),
/// reasons are evaluated only on a denial, and a runaway `reasons` is still cut off.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[test]
fn allow_and_reasons_are_read_directly_with_the_same_decisions() {
    let modules = |body: &str| {
        BTreeMap::from([(
            "p.rego".to_owned(),
            format!("package api.authz\nimport rego.v1\n{body}\n"),
        )])
    };
    let compile = |body: &str, interpreter_only| {
        PolicyProgram::compile_for(
            &modules(body),
            &json!({}),
            "data.api.authz",
            Duration::from_millis(50),
            RegoVersion::V1,
            interpreter_only,
        )
        .unwrap()
    };
    let body = "allow if input.ok == true\nreasons contains \"not_ok\" if not input.ok\nreasons contains \"bad\" if input.bad\nreasons contains 7 if input.seven";
    let direct = compile(body, false);
    assert_eq!(
        direct.entry,
        Entry::Direct {
            allow: "data.api.authz.allow".into(),
            reasons: Some("data.api.authz.reasons".into())
        }
    );
    let gathered = compile(&format!("{body}\nrate_limit_tier := \"gold\""), false);
    assert_eq!(gathered.entry, Entry::Gathered);
    let interpreter = compile(body, true);
    for input in [
        json!({"ok": true}),
        json!({"ok": true, "bad": true}),
        json!({"ok": false}),
        json!({"ok": false, "bad": true, "seven": true}),
        json!({"ok": "yes"}),
        json!({}),
    ] {
        let d = direct.vm().evaluate(input.clone());
        assert_eq!(d, interpreter.vm().evaluate(input.clone()), "{input}");
        let g = gathered.vm().evaluate(input.clone());
        assert_eq!((d.allow, &d.reasons), (g.allow, &g.reasons), "{input}");
    }
    // Only `allow`: a denial says "denied"; an undefined `allow` fails closed.
    let only = compile("default allow := false\nallow if input.ok", false);
    assert_eq!(only.vm().evaluate(json!({"ok": false})).reasons, ["denied"]);
    let mut vm = compile("allow := input.x", false).vm();
    assert_eq!(
        vm.evaluate(json!({})).failure,
        Some(PolicyFailure::Undefined)
    );
    // Reasons are not evaluated on an allowed request: a runaway there costs nothing until a
    // denial, which it then fails as a timeout.
    let runaway = compile(
        "default allow := false\nallow if input.ok\nreasons contains \"r\" if { count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]) < 0 }",
        false,
    );
    let mut vm = runaway.vm();
    assert!(vm.evaluate(json!({"ok": true})).allow);
    let started = std::time::Instant::now();
    let d = vm.evaluate(json!({"ok": false}));
    assert_eq!(d.failure, Some(PolicyFailure::Timeout), "{d:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
