//! The VM and its budget: one worker's evaluator (regorus's VM loaded with the compiled
//! program, its interpreter when the program fell back, or the compiled built-in pack), how it
//! is asked for the decision ([`Entry`]), and the bounds of one evaluation (an instruction
//! budget measured at configure time on [`super::input::InputBuilder::full_size`], a wall-clock
//! backstop). What it returns is read into a decision by [`super::decision`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value as RegoValue;

use super::decision::{decide, decode, PolicyDecision, PolicyFailure, NOT_DEFINED};
use super::input::InputBuilder;
use super::pack;

/// The generated rule that gathers the decision. A user package of the same name is refused.
pub(super) const ENTRY_PACKAGE: &str = "apiguard_entry";
pub(super) const ENTRY_RULE: &str = "data.apiguard_entry.decision";

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
    pub(super) fn entry_points(&self) -> Vec<&str> {
        match self {
            Entry::Gathered => vec![ENTRY_RULE],
            Entry::Direct { allow, reasons } => std::iter::once(allow.as_str())
                .chain(reasons.as_deref())
                .collect(),
        }
    }
}

/// regorus's VM loaded with `program` and `data`, with no limits set. A builtin given a value
/// it does not take is undefined, as in OPA, not an error.
fn loaded(compiled: &regorus::CompiledPolicy, program: &Arc<Program>, data: &RegoValue) -> RegoVM {
    let mut vm = RegoVM::new_with_policy(compiled.clone());
    vm.load_program(program.clone());
    // Data was accepted by the engine at compile time; the VM re-checks it against the
    // program's rules.
    let _ = vm.set_data(data.clone());
    vm.set_strict_builtin_errors(false);
    vm
}

/// Headroom of the instruction budget over what the policy takes on a full-size input.
const INSTRUCTION_HEADROOM: usize = 16;
/// The least instruction budget: regorus's own default.
pub(super) const MIN_INSTRUCTIONS: usize = 25_000;
/// The most: a policy past this on a full-size input is a runaway (and is told so by timing out
/// on every request), not a policy to give more room.
pub(super) const MAX_INSTRUCTIONS: usize = 10_000_000;

/// The instruction budget of a policy on regorus's VM, measured at configure time:
/// [`INSTRUCTION_HEADROOM`] × the instructions one evaluation takes on a full-size input (every
/// header, query parameter and claim list as large as the filter passes,
/// [`InputBuilder::full_size`]), found by bisecting on the VM's instruction limit, within
/// [`MIN_INSTRUCTIONS`]..=[`MAX_INSTRUCTIONS`]. Every entry point must fit (each execution has
/// the whole budget). Deterministic: the same policy gets the same budget on any machine.
pub(super) fn instruction_budget(
    compiled: &regorus::CompiledPolicy,
    program: &Arc<Program>,
    data: &RegoValue,
    entry: &Entry,
) -> usize {
    let mut vm = loaded(compiled, program, data);
    let input = InputBuilder::full_size();
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
    /// regorus's VM loaded with `program` and `data`, for `entry`: an evaluation stops after
    /// `max_instructions`, or at the wall-clock backstop of `budget`.
    pub(super) fn rvm(
        compiled: &regorus::CompiledPolicy,
        program: &Arc<Program>,
        data: &RegoValue,
        max_instructions: usize,
        budget: Duration,
        entry: &Entry,
    ) -> PolicyVm {
        let mut vm = loaded(compiled, program, data);
        // The budget is work: an evaluation stops after `max_instructions`, whatever
        // the machine's load. Wall time is only a backstop, far past any evaluation
        // that fits its instructions, so a descheduled worker never times one out.
        vm.set_max_instructions(max_instructions);
        if let Some(t) = timer(backstop(budget)) {
            vm.set_execution_timer_config(Some(t));
        }
        PolicyVm::Rvm(Box::new(vm), entry.clone())
    }

    /// regorus's interpreter on `engine` (modules, data and the entry rule), within `budget`.
    pub(super) fn interpreter(engine: &regorus::Engine, budget: Duration) -> PolicyVm {
        let mut engine = engine.clone();
        // As on the VM: a builtin given a value it does not take is undefined, as in
        // OPA, not an error (`"admin" in "admin"`, `some r in "admin"`).
        engine.set_strict_builtin_errors(false);
        if let Some(t) = timer(budget) {
            engine.set_execution_timer_config(t);
        }
        PolicyVm::Interpreter(Box::new(engine))
    }

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
