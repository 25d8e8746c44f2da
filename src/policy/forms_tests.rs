//! Every form of every output, in Rego v0 and v1 spellings: read as OPA evaluates it, or refused
//! when the policy loads with the rule named (issue 34).

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::config::RegoVersion;

fn compile(version: RegoVersion, text: &str) -> Result<PolicyProgram, CompileError> {
    let modules = BTreeMap::from([("p.rego".to_owned(), text.to_owned())]);
    PolicyProgram::compile_as(
        &modules,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(50),
        version,
    )
}

fn decide(version: RegoVersion, text: &str, input: Value) -> PolicyDecision {
    let p = compile(version, text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The VM and the interpreter read the same forms.
    let on_vm = p.vm().evaluate(input.clone());
    let interpreted = PolicyProgram::compile_for(
        &BTreeMap::from([("p.rego".to_owned(), text.to_owned())]),
        &json!({}),
        "data.api.authz",
        Duration::from_millis(50),
        version,
        true,
    )
    .unwrap()
    .vm()
    .evaluate(input);
    assert_eq!(on_vm, interpreted, "{text}");
    on_vm
}

fn refused(version: RegoVersion, text: &str) -> String {
    match compile(version, text) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const V0_HEAD: &str = "package api.authz\nimport future.keywords.if\nimport future.keywords.in\n";
const V1_HEAD: &str = "package api.authz\n";

#[test]
fn a_v0_module_loads_as_v0_and_is_refused_as_v1_with_a_hint() {
    let v0 = "package api.authz\ndefault allow = false\nallow { input.user == \"alice\" }\nreasons[r] { not allow; r := \"not alice\" }\n";
    let d = decide(RegoVersion::V0, v0, json!({"user": "bob"}));
    assert!(!d.allow);
    assert_eq!(d.reasons, vec!["not alice"]);
    assert!(decide(RegoVersion::V0, v0, json!({"user": "alice"})).allow);
    let why = refused(RegoVersion::V1, v0);
    assert!(why.contains("policy.rego_version: v0"), "{why}");
    // And the other way: a Rego v1 module (without `import rego.v1`) loaded as v0.
    let v1 = "package api.authz\ndefault allow := false\nallow if input.user == \"alice\"\nreasons contains \"not alice\" if not allow\n";
    let why = refused(RegoVersion::V0, v1);
    assert!(why.contains("policy.rego_version: v1"), "{why}");
    assert!(decide(RegoVersion::V1, v1, json!({"user": "alice"})).allow);
    // A module that parses as neither gets no hint.
    let why = refused(RegoVersion::V1, "package api.authz\nallow := (\n");
    assert!(!why.contains("rego_version"), "{why}");
}

#[test]
fn a_module_importing_rego_v1_is_v1_under_either_setting() {
    let text = "package api.authz\nimport rego.v1\ndefault allow := false\nallow if input.ok\nreasons contains \"no\" if not input.ok\n";
    for v in [RegoVersion::V0, RegoVersion::V1] {
        let d = decide(v, text, json!({"ok": false}));
        assert_eq!((d.allow, d.reasons), (false, vec!["no".to_owned()]));
    }
}

#[test]
fn reasons_in_every_form_are_read() {
    let input = json!({"a": true, "b": true});
    let want = vec!["a failed".to_owned(), "b failed".to_owned()];
    for (version, text) in [
        // v0 partial set, no `if`.
        (RegoVersion::V0, "package api.authz\ndefault allow = false\nreasons[msg] { input.a; msg := \"a failed\" }\nreasons[msg] { input.b; msg := sprintf(\"%s failed\", [\"b\"]) }\n".to_owned()),
        // `reasons[msg] if` with future keywords: an object {msg: true} in OPA, keys read.
        (RegoVersion::V0, format!("{V0_HEAD}default allow := false\nreasons[msg] if {{ input.a; msg := \"a failed\" }}\nreasons[msg] if {{ input.b; msg := \"b failed\" }}\n")),
        (RegoVersion::V1, format!("{V0_HEAD}default allow := false\nreasons[msg] if {{ input.a; msg := \"a failed\" }}\nreasons[msg] if {{ input.b; msg := \"b failed\" }}\n")),
        // v1 `contains`.
        (RegoVersion::V1, format!("{V1_HEAD}default allow := false\nreasons contains \"a failed\" if input.a\nreasons contains \"b failed\" if input.b\n")),
        // A complete set, and a complete array.
        (RegoVersion::V1, format!("{V1_HEAD}default allow := false\nreasons := {{\"a failed\", \"b failed\"}} if input.a\n")),
        (RegoVersion::V1, format!("{V1_HEAD}default allow := false\nreasons := [m | some m in [\"b failed\", \"a failed\"]]\n")),
        // An object keyed by reason, written whole.
        (RegoVersion::V1, format!("{V1_HEAD}default allow := false\nreasons := {{\"a failed\": true, \"b failed\": true}}\n")),
    ] {
        let d = decide(version, &text, input.clone());
        assert!(!d.allow, "{text}");
        assert_eq!(d.reasons, want, "{text}");
        assert_eq!(d.failure, None, "{text}");
    }
}

#[test]
fn headers_in_every_form_are_read() {
    let input = json!({"tenant": "t1"});
    for text in [
        "headers := {\"x-tenant\": input.tenant}",
        "headers[\"x-tenant\"] := input.tenant if input.tenant",
        "headers[\"x-tenant\"] := t if { t := input.tenant }",
        "headers.x_tenant := input.tenant",
        "headers[k] := v if { some k, v in {\"x-tenant\": input.tenant} }",
        "headers[k] := input.tenant if { some k in [\"x-tenant\"] }",
    ] {
        let policy = format!("{V1_HEAD}allow := true\n{text}\n");
        let d = decide(RegoVersion::V1, &policy, input.clone());
        assert!(d.allow, "{policy}");
        assert_eq!(d.failure, None, "{policy}: {d:?}");
        assert_eq!(d.headers.len(), 1, "{policy}: {d:?}");
        assert_eq!(d.headers[0].1, "t1", "{policy}: {d:?}");
    }
    // The same in Rego v0 spellings.
    for text in [
        "headers = {\"x-tenant\": input.tenant} { true }",
        "headers[\"x-tenant\"] = t { t := input.tenant }",
        "headers[k] = v { v := input.tenant; k := \"x-tenant\" }",
    ] {
        let policy = format!("package api.authz\nallow = true\n{text}\n");
        let d = decide(RegoVersion::V0, &policy, input.clone());
        assert_eq!(d.failure, None, "{policy}: {d:?}");
        assert_eq!(
            d.headers,
            vec![("x-tenant".to_owned(), "t1".to_owned())],
            "{policy}"
        );
    }
}

#[test]
fn tier_and_cost_in_every_form_are_read() {
    for (version, text, input, tier, cost) in [
        (RegoVersion::V1, "rate_limit_tier := \"gold\" if input.vip\nelse := \"silver\" if input.known\nelse := \"bronze\"\nrate_limit_cost := 2 if input.vip\nelse := 1", json!({"known": true}), "silver", 1),
        (RegoVersion::V1, "default rate_limit_tier := \"bronze\"\nrate_limit_tier := \"gold\" if input.vip\nrate_limit_cost := cost(input)\ncost(i) := 5 if i.vip\ncost(i) := 1 if not i.vip", json!({"vip": true}), "gold", 5),
        (RegoVersion::V0, "rate_limit_tier = \"gold\" { input.vip } else = \"silver\" { input.known } else = \"bronze\" { true }\nrate_limit_cost = n { n := count(input.items) }", json!({"items": [1, 2, 3]}), "bronze", 3),
    ] {
        let policy = format!("package api.authz\nallow = true\n{text}\n");
        let d = decide(version, &policy, input);
        assert_eq!(d.failure, None, "{policy}");
        assert_eq!((d.tier.as_deref(), d.cost), (Some(tier), Some(cost)), "{policy}");
    }
}

#[test]
fn forms_the_filter_cannot_read_are_refused_naming_the_rule() {
    for (text, rule, output) in [
        ("allow contains 1 if true", "allow contains 1", "allow"),
        (
            "allow := true\nreasons[r] := \"why\" if { r := \"x\" }",
            "reasons[r] :=",
            "reasons",
        ),
        (
            "allow := true\nheaders[k] if { k := \"x-a\" }",
            "headers[k]",
            "headers",
        ),
        (
            "allow := true\nheaders contains \"x-a\" if true",
            "headers contains",
            "headers",
        ),
        (
            "allow := true\nrate_limit_tier[t] := 1 if { t := \"a\" }",
            "rate_limit_tier[t]",
            "rate_limit_tier",
        ),
        (
            "allow := true\nrate_limit_cost contains 1 if true",
            "rate_limit_cost contains",
            "rate_limit_cost",
        ),
        ("allow(x) := true if x", "allow(x)", "allow"),
        ("allow := true\nreasons(x) := {x}", "reasons(x)", "reasons"),
    ] {
        let why = refused(RegoVersion::V1, &format!("{V1_HEAD}{text}\n"));
        assert!(why.contains("p.rego:"), "{text}: {why}");
        assert!(why.contains(rule), "{text}: {why}");
        assert!(why.contains(&format!("`{output}`")), "{text}: {why}");
    }
}

#[test]
fn a_v0_era_partial_object_is_named_in_a_warning() {
    let text = format!("{V0_HEAD}default allow := false\nallow if count(reasons) == 0\nreasons[msg] if {{ not input.ok; msg := \"not ok\" }}\nadmin_paths[p] if {{ some p in [\"/admin\"] }}\n");
    for v in [RegoVersion::V0, RegoVersion::V1] {
        let p = compile(v, &text).unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("p.rego:6") && p.warnings[0].contains("reasons contains"),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings[1].contains("p.rego:7") && p.warnings[1].contains("admin_paths"),
            "{:?}",
            p.warnings
        );
    }
    // Written for Rego v1 (or importing it), the form is what its author meant: no warning.
    let v1 = text.replace(
        "import future.keywords.if\nimport future.keywords.in\n",
        "import rego.v1\n",
    );
    assert!(compile(RegoVersion::V1, &v1).unwrap().warnings.is_empty());
}

/// regorus 0.14's VM gets objects built from rules with reference heads wrong when they are
/// read whole (undefined, empty, or one member's value); the interpreter gets them right. Such
/// policies run on the interpreter (with a warning), and decide right.
#[test]
fn rules_with_reference_heads_run_on_the_interpreter_and_decide_right() {
    let text = "package api.authz\nimport rego.v1\ndefault allow := false\nallow if { some ms in roles; input.m in ms }\nroles.admin := [\"GET\", \"PUT\"]\nroles.viewer := [\"GET\"]\nheaders.x_a := input.tenant\nheaders.x_b := \"u\"\n";
    let p = compile(RegoVersion::V1, text).unwrap();
    assert_eq!(p.evaluator, Evaluator::Interpreter);
    assert!(
        p.fallback_reason
            .as_deref()
            .unwrap_or_default()
            .contains("p.rego:5: roles.admin"),
        "{:?}",
        p.fallback_reason
    );
    let d = p.vm().evaluate(json!({"m": "PUT", "tenant": "t1"}));
    assert!(d.allow, "{d:?}");
    assert_eq!(
        d.headers,
        vec![
            ("x_a".to_owned(), "t1".to_owned()),
            ("x_b".to_owned(), "u".to_owned())
        ]
    );
    assert!(
        !p.vm()
            .evaluate(json!({"m": "DELETE", "tenant": "t1"}))
            .allow
    );
}

/// regorus 0.14's VM leaves a rule undefined when a body before its `else` iterates and
/// fails, and a function undefined where only its default holds; its interpreter (and OPA)
/// take the `else` and the default. Such policies run on the interpreter, and decide right.
#[test]
fn else_chains_and_default_functions_run_on_the_interpreter_and_decide_right() {
    let input = json!({"request": {"method": "PUT"}, "token": {"roles": ["editor", "unknown"]}});
    for (text, tier) in [
        ("allow := true\nrate_limit_tier := \"admin\" if { some r in input.token.roles; r == \"admin\" } else := \"editor\"", Some("editor")),
        ("allow := true\nrate_limit_tier := \"admin\" if { input.token.roles[_] == \"admin\" } else := \"editor\"", Some("editor")),
        ("allow := f(input.request.method)\nf(x) if x == \"GET\"\ndefault f(_) := false", None),
    ] {
        let policy = format!("{V1_HEAD}{text}\n");
        let p = compile(RegoVersion::V1, &policy).unwrap();
        assert_eq!(p.evaluator, Evaluator::Interpreter, "{policy}");
        let d = p.vm().evaluate(input.clone());
        assert_eq!(d.failure, None, "{policy}: {d:?}");
        assert_eq!(d.tier.as_deref(), tier, "{policy}");
    }
}

/// The policies of policies/tests/rego_versions/ pass their case files: the v0 policy as v0,
/// its v1 rewrite as v1 (the same cases), and the policy written with `future.keywords` as
/// either version.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_rego_version_policies_pass_their_case_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests/rego_versions");
    let mut ran = 0;
    for (module, version, cases) in [
        ("authz_v0.rego", RegoVersion::V0, "cases_authz"),
        ("authz_v1.rego", RegoVersion::V1, "cases_authz"),
        ("authz_v0_keywords.rego", RegoVersion::V0, "cases_keywords"),
        ("authz_v0_keywords.rego", RegoVersion::V1, "cases_keywords"),
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{module}")).unwrap();
        let modules = BTreeMap::from([(module.to_owned(), text)]);
        let mut files: Vec<_> = std::fs::read_dir(format!("{dir}/{cases}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 6, "{cases}");
        for file in files {
            let case: testcases::Case =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let (verdict, decision) = testcases::run(
                &modules,
                &json!({}),
                "data.api.authz",
                (crate::config::PackEngine::Rego, version),
                &case,
            )
            .unwrap();
            assert_eq!(
                verdict,
                testcases::CaseVerdict::Pass,
                "{module} ({version:?}) on {}: {decision:?}",
                file.display()
            );
            ran += 1;
        }
    }
    assert_eq!(ran, 32);
}

/// The built-in pack imports `rego.v1`: it is Rego v1 under either `policy.rego_version`,
/// compiled from its settings or run as Rego, and passes its case files either way.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_built_in_pack_decides_alike_under_either_rego_version() {
    use crate::config::{PackEngine, PolicyConfig};
    for version in ["v0", "v1"] {
        for (engine, evaluator) in [("native", Evaluator::Native), ("rego", Evaluator::Rvm)] {
            let cfg: PolicyConfig =
                serde_json::from_value(json!({"rego_version": version, "pack_engine": engine}))
                    .unwrap();
            let mut warnings = Vec::new();
            let stage = super::stage::PolicyStage::compile(&cfg, &mut warnings).unwrap();
            assert_eq!(stage.program.evaluator, evaluator, "{version} {engine}");
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
    let pack = BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())]);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests");
    let mut ran = 0;
    for file in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if file.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let case: testcases::Case =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for engine in [PackEngine::Native, PackEngine::Rego] {
            let (verdict, d) = testcases::run(
                &pack,
                &json!({}),
                "data.api.authz",
                (engine, RegoVersion::V0),
                &case,
            )
            .unwrap();
            assert_eq!(
                verdict,
                testcases::CaseVerdict::Pass,
                "{}: {d:?}",
                file.display()
            );
            ran += 1;
        }
    }
    assert!(ran >= 60, "{ran}");
}

/// `policy.rego_version` applies to `shadow_modules` too.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_shadow_policy_is_read_as_the_same_rego_version() {
    use crate::config::PolicyConfig;
    let v0 = "package api.authz\ndefault allow = false\nallow { input.token.sub }\n";
    let v1 =
        "package api.authz\nimport rego.v1\ndefault allow := false\nallow if input.token.sub\n";
    let config = |version: &str, shadow: &str| -> PolicyConfig {
        serde_json::from_value(json!({"rego_version": version, "modules": {"p.rego": v1},
                                      "shadow_modules": {"s.rego": shadow}}))
        .unwrap()
    };
    let mut warnings = Vec::new();
    let stage = super::stage::PolicyStage::compile(&config("v0", v0), &mut warnings).unwrap();
    assert!(stage.shadow.is_some());
    let err = super::stage::PolicyStage::compile(&config("v1", v0), &mut warnings).unwrap_err();
    assert!(err.to_string().contains("policy.shadow_modules"), "{err}");
    assert!(err.to_string().contains("policy.rego_version: v0"), "{err}");
}

/// Two Rego v0 forms regorus 0.14 evaluates otherwise than OPA, on its VM and its
/// interpreter alike (found by the OPA differential): refused, the rule named.
#[test]
fn v0_forms_regorus_gets_wrong_are_refused_naming_the_rule() {
    for (text, rule) in [
        // OPA: 4 for GET and for HEAD; regorus: `true` for HEAD.
        (
            "allow = true\nrate_limit_cost = 4 { input.m == \"GET\" } { input.m == \"HEAD\" }",
            "rate_limit_cost = 4",
        ),
        ("allow = true\nf(x) = 4 { x == 1 } { x == 2 }", "f(x) = 4"),
        // OPA: reasons = {"no_token"}; regorus: undefined, or {"no_token": []}.
        (
            "allow = false\nreasons.no_token { not input.token.sub }",
            "reasons.no_token",
        ),
        (
            "allow = false\nhelpers.a { true }\nreasons[r] { helpers[r] }",
            "helpers.a",
        ),
    ] {
        let why = refused(RegoVersion::V0, &format!("package api.authz\n{text}\n"));
        assert!(
            why.contains("p.rego:") && why.contains(&format!("rule `{rule}`")),
            "{text}: {why}"
        );
    }
    // Without a value, query blocks are OR'ed bodies of `true`, as in OPA.
    let d = decide(
        RegoVersion::V0,
        "package api.authz\ndefault allow = false\nallow { input.m == \"GET\" } { input.m == \"HEAD\" }\n",
        json!({"m": "HEAD"}),
    );
    assert!(d.allow);
}
