//! The policy stage: Rego evaluated in the filter with regorus.
//!
//! Modules and data are compiled once, at configure time, into a regorus program for its
//! virtual machine (RVM); each worker keeps one VM loaded with the program and the data and only
//! swaps the input per request. A construct the RVM compiler does not support falls back to the
//! interpreter (on a compiled policy), and the configuration loader says so.
//!
//! The filter reads the entrypoint package's `allow`, `reasons`, `rate_limit_tier`,
//! `rate_limit_cost` and `headers` rules through one generated entry rule, so one evaluation
//! yields the whole decision. Anything but `allow == true` is a deny; any error, an undefined
//! `allow` or a time-budget overrun is a deny with a reason code (fail closed).

pub mod forms;
pub mod input;
pub mod pack;
pub mod reads;
pub mod stage;
pub mod testcases;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value as RegoValue;
use sha2::{Digest, Sha256};

use reads::InputReads;

use crate::config::{PackEngine, RegoVersion};

/// The built-in policy pack (`policies/api_authz.rego`), compiled into the module.
pub const BUILTIN_PACK: &str = include_str!("../../policies/api_authz.rego");
pub const BUILTIN_NAME: &str = "api_authz.rego";
/// The pack's default settings (`data.api_authz`).
pub const BUILTIN_DATA: &str = include_str!("../../policies/api_authz.data.json");

/// The data a policy is compiled with: for the built-in pack, the operator's data merged over
/// the pack's defaults (objects merge member by member, anything else replaces), once, here.
pub fn effective_data(
    modules: &BTreeMap<String, String>,
    data: &serde_json::Value,
) -> serde_json::Value {
    if modules.get(BUILTIN_NAME).map(String::as_str) != Some(BUILTIN_PACK) {
        return data.clone();
    }
    let mut base: serde_json::Value = serde_json::from_str(BUILTIN_DATA).unwrap_or_default();
    merge(&mut base, data);
    // The pack matches prefixes with `strings.any_prefix_match` on the lower-cased path plus
    // `/`, so each prefix is lower-cased and ends with exactly one `/` (written `/api/v1/admin`,
    // `/API/v1/admin/` alike).
    if let Some(settings) = base.get_mut("api_authz").and_then(|v| v.as_object_mut()) {
        for key in ["public_prefixes", "admin_prefixes", "tenant_prefixes"] {
            if let Some(list) = settings.get_mut(key).and_then(|v| v.as_array_mut()) {
                for p in list.iter_mut() {
                    if let Some(text) = p.as_str() {
                        *p = format!("{}/", text.trim_end_matches('/').to_ascii_lowercase()).into();
                    }
                }
            }
        }
    }
    base
}

fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The generated rule that gathers the decision. A user package of the same name is refused.
const ENTRY_PACKAGE: &str = "apiguard_entry";
const ENTRY_RULE: &str = "data.apiguard_entry.decision";
/// Marks an output the policy left undefined.
const UNDEFINED: &str = "apiguard:undefined";
/// Outputs read from the policy package.
const OUTPUTS: [&str; 5] = [
    "allow",
    "reasons",
    "rate_limit_tier",
    "rate_limit_cost",
    "headers",
];

/// Why a policy did not compile (the configuration is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Rego(String),
    #[error("`data` could not be loaded: {0}")]
    Data(String),
    #[error("package `{0}` defines no `allow` rule")]
    NoAllow(String),
    /// An output written in a form the filter cannot read ([`forms`]), the rule named.
    #[error("{0}")]
    Form(String),
}

/// Which evaluator runs the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluator {
    /// regorus's compiled program on its virtual machine.
    Rvm,
    /// regorus's tree-walking interpreter (on a compiled policy): used when the RVM compiler
    /// refuses a construct.
    Interpreter,
    /// The built-in pack compiled from its settings ([`pack`]): no Rego runs per request.
    Native,
}

/// A policy compiled at configure time.
#[derive(Clone)]
pub struct PolicyProgram {
    compiled: regorus::CompiledPolicy,
    program: Option<Arc<Program>>,
    /// Modules, data and the entry rule, for the interpreter when there is no program.
    engine: regorus::Engine,
    data: RegoValue,
    budget: Duration,
    /// Hex SHA-256 of the modules and data (for logs and access logs).
    pub digest: String,
    pub evaluator: Evaluator,
    /// Why the interpreter is used, if it is.
    pub fallback_reason: Option<String>,
    /// The optional parts of the input the modules can read.
    pub reads: InputReads,
    /// The built-in pack compiled from its settings, when it runs that way.
    pack: Option<Arc<pack::Pack>>,
    /// Instructions one evaluation may execute on regorus's VM ([`instruction_budget`]).
    pub max_instructions: usize,
    /// How regorus's VM is asked for the decision.
    entry: Entry,
    /// Rules whose form a reader may mistake, named ([`forms::analyse`]): for the loader to
    /// warn about.
    pub warnings: Vec<String>,
}

/// How the decision is read from regorus's VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Through the generated entry rule, one object with every output the package defines.
    Gathered,
    /// The package's `allow` rule as the program's entry point, and its `reasons` (when it
    /// defines them) as a second one, run only on a denial. Used when a package defines no
    /// other output: the gathering rules (a default and a rule call per output, then the
    /// object) cost about as much as a trivial policy itself (docs/benchmarks.md).
    Direct {
        allow: String,
        reasons: Option<String>,
    },
}

impl Entry {
    fn entry_points(&self) -> Vec<&str> {
        match self {
            Entry::Gathered => vec![ENTRY_RULE],
            Entry::Direct { allow, reasons } => std::iter::once(allow.as_str())
                .chain(reasons.as_deref())
                .collect(),
        }
    }
}

impl std::fmt::Debug for PolicyProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyProgram")
            .field("digest", &self.digest)
            .field("evaluator", &self.evaluator)
            .finish_non_exhaustive()
    }
}

/// How a policy failed to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFailure {
    /// An evaluation error, or outputs of the wrong type.
    Error,
    /// Over the time budget (or the instruction limit).
    Timeout,
    /// `allow` is undefined.
    Undefined,
}

impl PolicyFailure {
    pub fn reason(self) -> &'static str {
        match self {
            PolicyFailure::Error => "policy_error",
            PolicyFailure::Timeout => "policy_timeout",
            PolicyFailure::Undefined => "policy_undefined",
        }
    }
}

/// A policy's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allow: bool,
    pub reasons: Vec<String>,
    pub tier: Option<String>,
    pub cost: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub failure: Option<PolicyFailure>,
}

impl PolicyDecision {
    pub(crate) fn failed(f: PolicyFailure) -> PolicyDecision {
        PolicyDecision {
            allow: false,
            reasons: vec![f.reason().to_owned()],
            failure: Some(f),
            ..PolicyDecision::default()
        }
    }
}

impl PolicyProgram {
    /// Compiles `modules` (file name → source) with `data` for the rules of `package`
    /// (e.g. `data.api.authz`), evaluated within `budget`.
    pub fn compile(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        package: &str,
        budget: Duration,
    ) -> Result<PolicyProgram, CompileError> {
        Self::compile_for(modules, data, package, budget, RegoVersion::V1, false)
    }

    /// Like [`PolicyProgram::compile`], the modules read as Rego `version` (a module that
    /// imports `rego.v1` is Rego v1 either way).
    pub fn compile_as(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        package: &str,
        budget: Duration,
        version: RegoVersion,
    ) -> Result<PolicyProgram, CompileError> {
        Self::compile_for(modules, data, package, budget, version, false)
    }

    /// Like [`PolicyProgram::compile`]; the built-in pack (exactly its module, for its package)
    /// runs as `engine` says. Says why the pack's settings were not compiled, if they were not.
    pub fn compile_pack(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        package: &str,
        budget: Duration,
        engine: PackEngine,
    ) -> Result<(PolicyProgram, Option<pack::NotCompiled>), CompileError> {
        Self::compile_pack_as(modules, data, package, budget, engine, RegoVersion::V1)
    }

    /// Like [`PolicyProgram::compile_pack`], the modules read as Rego `version` (the built-in
    /// pack imports `rego.v1`: Rego v1 either way).
    pub fn compile_pack_as(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        package: &str,
        budget: Duration,
        engine: PackEngine,
        version: RegoVersion,
    ) -> Result<(PolicyProgram, Option<pack::NotCompiled>), CompileError> {
        let mut program = Self::compile_for(modules, data, package, budget, version, false)?;
        let is_pack = modules.len() == 1
            && modules.get(BUILTIN_NAME).map(String::as_str) == Some(BUILTIN_PACK)
            && package == "data.api.authz";
        if !is_pack || engine == PackEngine::Rego {
            return Ok((program, None));
        }
        match pack::Pack::compile(&effective_data(modules, data)) {
            Ok(p) => {
                program.pack = Some(Arc::new(p));
                program.evaluator = Evaluator::Native;
                Ok((program, None))
            }
            Err(why) => Ok((program, Some(why))),
        }
    }

    /// `interpreter_only` skips the RVM compiler (tests use it to exercise the fallback).
    fn compile_for(
        modules: &BTreeMap<String, String>,
        data: &serde_json::Value,
        package: &str,
        budget: Duration,
        version: RegoVersion,
        interpreter_only: bool,
    ) -> Result<PolicyProgram, CompileError> {
        let mut engine = regorus::Engine::new();
        add_modules(&mut engine, modules, version)?;
        let packages = engine
            .get_packages()
            .map_err(|e| CompileError::Rego(format!("{e:#}")))?;
        if packages
            .iter()
            .any(|p| p == &format!("data.{ENTRY_PACKAGE}"))
        {
            return Err(CompileError::Rego(format!(
                "package name `{ENTRY_PACKAGE}` is reserved"
            )));
        }
        // Compiling for `allow` alone fails when the package does not define it (or does not
        // compile, which is reported as such).
        if let Err(e) = engine
            .clone()
            .compile_with_entrypoint(&format!("{package}.allow").into())
        {
            let msg = format!("{e:#}");
            return Err(if msg.contains("not a valid rule path") {
                CompileError::NoAllow(package.to_owned())
            } else {
                CompileError::Rego(msg)
            });
        }
        // Which outputs the package defines, and in which forms (a form the filter cannot
        // read is refused here, the rule named).
        let forms = forms::analyse(engine.get_modules(), package, &OUTPUTS);
        if let Some(why) = forms
            .unsupported
            .first()
            .cloned()
            .or_else(|| forms.unreadable())
        {
            return Err(CompileError::Form(why));
        }
        // The entry rule gathers the outputs the package defines into one object (reasons only
        // for a request the policy does not allow). An output
        // that is undefined for a request shows as UNDEFINED (a rule with a default), since an
        // object literal with one undefined member would be undefined as a whole.
        let mut entry = format!("package {ENTRY_PACKAGE}\nimport rego.v1\n");
        let mut members = Vec::new();
        let mut defined_outputs = Vec::new();
        for out in OUTPUTS {
            if out == "allow" || forms.defines(out) {
                defined_outputs.push(out);
                // Reasons explain a denial; on an allowed request they are not evaluated at
                // all (for a pack like the built-in one, most of its rules).
                let only_on_deny = if out == "reasons" {
                    format!(" if not {package}.allow == true")
                } else {
                    String::new()
                };
                entry.push_str(&format!(
                    "default o_{out} := \"{UNDEFINED}\"\no_{out} := {package}.{out}{only_on_deny}\n"
                ));
                members.push(format!("\"{out}\": o_{out}"));
            }
        }
        entry.push_str(&format!("decision := {{{}}}\n", members.join(", ")));
        engine
            .add_policy("apiguard_entry.rego".into(), entry)
            .map_err(|e| CompileError::Rego(format!("{e:#}")))?;
        let data = &effective_data(modules, data);
        let data_value = RegoValue::from(data.clone());
        engine
            .add_data(data_value.clone())
            .map_err(|e| CompileError::Data(format!("{e:#}")))?;
        let compiled = engine
            .compile_with_entrypoint(&ENTRY_RULE.into())
            .map_err(|e| CompileError::Rego(format!("{e:#}")))?;
        // The interpreter always reads the entry rule; the VM reads `allow` (and `reasons`)
        // directly when the package defines nothing else.
        let entry_mode = if defined_outputs
            .iter()
            .all(|o| matches!(*o, "allow" | "reasons"))
        {
            Entry::Direct {
                allow: format!("{package}.allow"),
                reasons: defined_outputs
                    .contains(&"reasons")
                    .then(|| format!("{package}.reasons")),
            }
        } else {
            Entry::Gathered
        };
        let (program, fallback_reason): (Option<Arc<Program>>, _) = if interpreter_only {
            (None, Some("interpreter requested".to_owned()))
        } else if let Some(first) = forms.vm_unsafe.first() {
            // Forms regorus 0.14's VM evaluates wrongly ([`forms::Analysis::vm_unsafe`]).
            (
                None,
                Some(format!(
                    "`{first}`, a form regorus's VM evaluates wrongly; {} rule(s) of such forms",
                    forms.vm_unsafe.len()
                )),
            )
        } else {
            match regorus::languages::rego::compiler::Compiler::compile_from_policy(
                &compiled,
                &entry_mode.entry_points(),
            ) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            }
        };
        let mut h = Sha256::new();
        for (name, source) in modules {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(source.as_bytes());
            h.update([0]);
        }
        h.update(data.to_string().as_bytes());
        let digest = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let max_instructions = program.as_ref().map_or(0, |p| {
            instruction_budget(&compiled, p, &data_value, &entry_mode)
        });
        Ok(PolicyProgram {
            evaluator: if program.is_some() {
                Evaluator::Rvm
            } else {
                Evaluator::Interpreter
            },
            compiled,
            program,
            engine,
            data: data_value,
            budget,
            digest,
            max_instructions,
            fallback_reason,
            reads: reads::analyse(modules.iter().map(|(n, t)| (n.as_str(), t.as_str()))),
            pack: None,
            entry: entry_mode,
            warnings: forms.warnings,
        })
    }

    /// A per-worker evaluator, loaded once.
    pub fn vm(&self) -> PolicyVm {
        if let Some(p) = &self.pack {
            return PolicyVm::Native(p.clone());
        }
        match &self.program {
            Some(p) => {
                let mut vm = RegoVM::new_with_policy(self.compiled.clone());
                vm.load_program(p.clone());
                // Data was accepted by the engine at compile time; the VM re-checks it against
                // the program's rules.
                let _ = vm.set_data(self.data.clone());
                vm.set_strict_builtin_errors(false);
                // The budget is work: an evaluation stops after `max_instructions`, whatever
                // the machine's load. Wall time is only a backstop, far past any evaluation
                // that fits its instructions, so a descheduled worker never times one out.
                vm.set_max_instructions(self.max_instructions);
                if let Some(t) = timer(backstop(self.budget)) {
                    vm.set_execution_timer_config(Some(t));
                }
                PolicyVm::Rvm(Box::new(vm), self.entry.clone())
            }
            None => {
                let mut engine = self.engine.clone();
                // As on the VM: a builtin given a value it does not take is undefined, as in
                // OPA, not an error (`"admin" in "admin"`, `some r in "admin"`).
                engine.set_strict_builtin_errors(false);
                if let Some(t) = timer(self.budget) {
                    engine.set_execution_timer_config(t);
                }
                PolicyVm::Interpreter(Box::new(engine))
            }
        }
    }
}

/// Adds `modules` to `engine`, each read as Rego `version` (a module that imports `rego.v1` is
/// Rego v1 either way); the engine is left reading Rego v1. A module that does not parse as
/// `version` but parses as the other one is refused with a hint at `policy.rego_version`.
pub fn add_modules(
    engine: &mut regorus::Engine,
    modules: &BTreeMap<String, String>,
    version: RegoVersion,
) -> Result<(), CompileError> {
    engine.set_rego_v0(version == RegoVersion::V0);
    let added = modules.iter().try_for_each(|(name, source)| {
        engine
            .add_policy(name.clone(), source.clone())
            .map(|_| ())
            .map_err(|e| {
                let msg = format!("{e:#}");
                // Only on a failure: does the module parse as the other version?
                let (other, setting) = match version {
                    RegoVersion::V0 => (RegoVersion::V1, "v1"),
                    RegoVersion::V1 => (RegoVersion::V0, "v0"),
                };
                let mut probe = regorus::Engine::new();
                probe.set_rego_v0(other == RegoVersion::V0);
                CompileError::Rego(match probe.add_policy(name.clone(), source.clone()) {
                    Ok(_) => format!(
                        "{msg}\n(it is a Rego {setting} module: set `policy.rego_version: {setting}` to load it as one)"
                    ),
                    Err(_) => msg,
                })
            })
    });
    engine.set_rego_v0(false);
    added
}

/// Headroom of the instruction budget over what the policy takes on a full-size input.
const INSTRUCTION_HEADROOM: usize = 16;
/// The least instruction budget: regorus's own default.
const MIN_INSTRUCTIONS: usize = 25_000;
/// The most: a policy past this on a full-size input is a runaway (and is told so by timing out
/// on every request), not a policy to give more room.
const MAX_INSTRUCTIONS: usize = 10_000_000;

/// The instruction budget of a policy on regorus's VM, measured at configure time:
/// [`INSTRUCTION_HEADROOM`] × the instructions one evaluation takes on a full-size input (every
/// header, query parameter and claim list as large as the filter passes, [`full_input`]), found
/// by bisecting on the VM's instruction limit, within [`MIN_INSTRUCTIONS`]..=[`MAX_INSTRUCTIONS`].
/// Every entry point must fit (each execution has the whole budget).
/// Deterministic: the same policy gets the same budget on any machine.
fn instruction_budget(
    compiled: &regorus::CompiledPolicy,
    program: &Arc<Program>,
    data: &RegoValue,
    entry: &Entry,
) -> usize {
    let mut vm = RegoVM::new_with_policy(compiled.clone());
    vm.load_program(program.clone());
    let _ = vm.set_data(data.clone());
    vm.set_strict_builtin_errors(false);
    let input = full_input();
    let entry_points = entry.entry_points();
    let mut fits = |limit: usize| {
        vm.set_max_instructions(limit);
        vm.set_input(input.clone());
        entry_points.iter().all(|e| {
            !matches!(
                vm.execute_entry_point_by_name(e),
                Err(regorus::rvm::vm::VmError::InstructionLimitExceeded { .. })
            )
        })
    };
    let (mut lo, mut hi) = (1, MAX_INSTRUCTIONS);
    if !fits(hi) {
        return MAX_INSTRUCTIONS;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi.saturating_mul(INSTRUCTION_HEADROOM)
        .clamp(MIN_INSTRUCTIONS, MAX_INSTRUCTIONS)
}

/// An input document as large as the filter ever passes (docs/policies.md): the most headers
/// and query parameters, long values, a token with many claims and a long roles list.
fn full_input() -> RegoValue {
    let value = "v".repeat(input::MAX_HEADER_VALUE);
    let headers: serde_json::Map<String, serde_json::Value> = (0..input::MAX_HEADERS)
        .map(|i| (format!("x-header-{i}"), value.clone().into()))
        .collect();
    let query: serde_json::Map<String, serde_json::Value> = (0..input::MAX_QUERY_PARAMS)
        .map(|i| (format!("q{i}"), format!("{i}").into()))
        .collect();
    let roles: Vec<serde_json::Value> = (0..64).map(|i| format!("role-{i}").into()).collect();
    let mut token: serde_json::Map<String, serde_json::Value> = (0..64)
        .map(|i| (format!("claim_{i}"), format!("value-{i}").into()))
        .collect();
    for (k, v) in [
        ("sub", serde_json::json!("user")),
        ("roles", roles.clone().into()),
        ("groups", roles.into()),
        ("tenant_id", "t1".into()),
        ("scope", "read write admin".into()),
    ] {
        token.insert(k.into(), v);
    }
    let path = format!("/api/v1/tenants/t1/documents/1/{}", "x/".repeat(64));
    RegoValue::from(serde_json::json!({
        "request": {"method": "GET", "path": path, "lower_path": path, "query": query,
                    "headers": headers, "host": "api.example.com", "truncated": false},
        "source": {"address": "10.0.0.1"},
        "resource": {"tenant_id": "t1", "doc_id": "1"},
        "token": token,
        "provider": "primary",
    }))
}

/// The wall-clock backstop of an evaluation on the VM: 20 × `time_budget_ms`, at least 100 ms.
fn backstop(budget: Duration) -> Duration {
    budget.saturating_mul(20).max(Duration::from_millis(100))
}

/// Work units between two reads of the clock. Reading it is a host call in Envoy's Wasm VM,
/// far dearer than a VM instruction, so it is read every 64 units; a unit is small enough that
/// the budget still holds to well under a millisecond.
const TIMER_CHECK_INTERVAL: NonZeroU32 = match NonZeroU32::new(64) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// The time budget for one evaluation. The execution timer needs a clock; a browser-style Wasm
/// VM (the in-VM test tier) has none, so there the budget is not enforced. Envoy's Wasm runtime
/// provides WASI clocks.
fn timer(budget: Duration) -> Option<ExecutionTimerConfig> {
    if cfg!(all(target_arch = "wasm32", target_os = "unknown")) {
        return None;
    }
    Some(ExecutionTimerConfig {
        limit: budget,
        check_interval: TIMER_CHECK_INTERVAL,
    })
}

/// One worker's evaluator: regorus's VM with the compiled program, its interpreter, or the
/// compiled pack.
pub enum PolicyVm {
    Rvm(Box<RegoVM>, Entry),
    Interpreter(Box<regorus::Engine>),
    Native(Arc<pack::Pack>),
}

impl PolicyVm {
    /// Evaluates the policy on an input document given as JSON.
    pub fn evaluate(&mut self, input: serde_json::Value) -> PolicyDecision {
        match self {
            PolicyVm::Native(p) => p.decide(&pack::PackRequest::from_json(&input)),
            _ => self.evaluate_value(RegoValue::from(input)),
        }
    }

    /// Evaluates the policy on an input document.
    pub fn evaluate_value(&mut self, input: RegoValue) -> PolicyDecision {
        let result = match self {
            // The stage calls the pack on the request itself; a document reaches it only from
            // tools, through JSON.
            PolicyVm::Native(p) => {
                let json = serde_json::to_value(&input).unwrap_or_default();
                return p.decide(&pack::PackRequest::from_json(&json));
            }
            PolicyVm::Rvm(vm, Entry::Gathered) => {
                vm.set_input(input);
                vm.execute_entry_point_by_name(ENTRY_RULE)
                    .map_err(vm_failure)
            }
            PolicyVm::Rvm(vm, Entry::Direct { allow, reasons }) => {
                vm.set_input(input);
                let allowed = match vm.execute_entry_point_by_name(allow) {
                    Ok(v) => v,
                    Err(e) => return PolicyDecision::failed(vm_failure(e)),
                };
                // Reasons explain a denial: not evaluated when the request is allowed.
                let why = match reasons {
                    Some(r) if !matches!(allowed, RegoValue::Bool(true) | RegoValue::Undefined) => {
                        match vm.execute_entry_point_by_name(r) {
                            Ok(v) => v,
                            Err(e) => return PolicyDecision::failed(vm_failure(e)),
                        }
                    }
                    _ => RegoValue::Undefined,
                };
                return decide([&allowed, &why, &NOT_DEFINED, &NOT_DEFINED, &NOT_DEFINED]);
            }
            PolicyVm::Interpreter(engine) => {
                engine.set_input(input);
                engine.eval_rule(ENTRY_RULE.to_owned()).map_err(|e| {
                    match e.downcast_ref::<regorus::LimitError>() {
                        Some(regorus::LimitError::TimeLimitExceeded { .. }) => {
                            PolicyFailure::Timeout
                        }
                        _ => PolicyFailure::Error,
                    }
                })
            }
        };
        match result {
            Ok(v) => decode(&v),
            Err(f) => PolicyDecision::failed(f),
        }
    }
}

/// How an error of regorus's VM fails the decision.
fn vm_failure(e: regorus::rvm::vm::VmError) -> PolicyFailure {
    match e {
        regorus::rvm::vm::VmError::TimeLimitExceeded { .. }
        | regorus::rvm::vm::VmError::InstructionLimitExceeded { .. } => PolicyFailure::Timeout,
        _ => PolicyFailure::Error,
    }
}

/// An output the entry rule did not define.
static NOT_DEFINED: RegoValue = RegoValue::Undefined;

/// Reads the decision object; outputs of the wrong type are a policy error. The object is
/// walked once, matching member names as text (looking each output up would make a policy
/// value per name per request).
fn decode(v: &RegoValue) -> PolicyDecision {
    let mut found = [&NOT_DEFINED; OUTPUTS.len()];
    if let RegoValue::Object(members) = v {
        for (name, value) in members.iter() {
            let RegoValue::String(name) = name else {
                continue;
            };
            let Some(slot) = OUTPUTS
                .iter()
                .position(|o| *o == name.as_ref())
                .and_then(|i| found.get_mut(i))
            else {
                continue;
            };
            if !matches!(value, RegoValue::String(s) if s.as_ref() == UNDEFINED) {
                *slot = value;
            }
        }
    }
    decide(found)
}

/// The decision from the outputs' values, in the order of [`OUTPUTS`] (`Undefined` for one the
/// policy left undefined); outputs of the wrong type are a policy error.
fn decide(outputs: [&RegoValue; OUTPUTS.len()]) -> PolicyDecision {
    let [allow, reasons, tier, cost, headers] = outputs;
    let allow = match allow {
        RegoValue::Undefined => return PolicyDecision::failed(PolicyFailure::Undefined),
        RegoValue::Bool(b) => *b,
        // Anything but a boolean `true` denies, but it is not an error: OPA's own contract.
        _ => false,
    };
    let mut d = PolicyDecision {
        allow,
        ..PolicyDecision::default()
    };
    match reasons {
        RegoValue::Undefined => {}
        RegoValue::Set(s) => d.reasons = s.iter().filter_map(as_str).collect(),
        RegoValue::Array(a) => d.reasons = a.iter().filter_map(as_str).collect(),
        // `reasons[r] if …` (without `contains`) is a partial object `{r: true}` in Rego v1
        // and in OPA's v0 mode: its keys are the reasons. Any other member value is not that
        // form (the loader refuses such rules, [`forms`]; a complete rule can still make one).
        RegoValue::Object(o) => {
            for (k, v) in o.iter() {
                match (as_str(k), v) {
                    (Some(reason), RegoValue::Bool(true)) => d.reasons.push(reason),
                    _ => return PolicyDecision::failed(PolicyFailure::Error),
                }
            }
        }
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match tier {
        RegoValue::Undefined => {}
        RegoValue::String(s) => d.tier = Some(s.to_string()),
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match cost {
        RegoValue::Undefined => {}
        n @ RegoValue::Number(_) => match n.as_u64() {
            // Past the limiter's largest cost every call would fail: with `failure_mode:
            // allow` that is no limit at all, with `deny` a permanent 503. A policy error.
            Ok(c) if (1..=apiguard_limiter_api::MAX_COST).contains(&c) => d.cost = Some(c),
            _ => return PolicyDecision::failed(PolicyFailure::Error),
        },
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match headers {
        RegoValue::Undefined => {}
        RegoValue::Object(o) => {
            for (k, val) in o.iter() {
                match (as_str(k), as_str(val)) {
                    (Some(name), Some(value)) if header_ok(&name, &value) => {
                        d.headers.push((name, value))
                    }
                    _ => return PolicyDecision::failed(PolicyFailure::Error),
                }
            }
        }
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    if !d.allow && d.reasons.is_empty() {
        d.reasons.push("denied".into());
    }
    d.reasons.sort();
    d
}

fn as_str(v: &RegoValue) -> Option<String> {
    match v {
        RegoValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A header a policy may add upstream: one the filter may set at all
/// ([`crate::http::is_settable_header`]), with a value without control characters.
fn header_ok(name: &str, value: &str) -> bool {
    crate::http::is_settable_header(name)
        && value.len() <= 4096
        && !value.bytes().any(|b| b < 0x20 || b == 0x7f)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests;

#[cfg(test)]
mod prune_tests;

#[cfg(test)]
mod pack_tests;

#[cfg(test)]
mod forms_tests;
