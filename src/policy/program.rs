//! The compiled program: a policy's modules loaded as their Rego version, its outputs' forms
//! checked ([`super::forms`]), the entry rule that gathers the decision generated, and all of it
//! compiled once, at configure time, for regorus's VM (or its interpreter when the VM compiler
//! refuses a construct). Running it is [`super::vm`]; reading its outputs, [`super::decision`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use regorus::rvm::program::Program;
use regorus::Value as RegoValue;
use sha2::{Digest, Sha256};

use super::decision::{OUTPUTS, UNDEFINED};
use super::forms;
use super::pack::{self, effective_data, BUILTIN_NAME, BUILTIN_PACK};
use super::reads::{self, InputReads};
use super::vm::{instruction_budget, Entry, PolicyVm, ENTRY_PACKAGE, ENTRY_RULE};
use crate::config::{PackEngine, RegoVersion};

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
    /// Instructions one evaluation may execute on regorus's VM, measured when the policy
    /// compiles ([`super::vm`], `instruction_budget`).
    pub max_instructions: usize,
    /// How regorus's VM is asked for the decision.
    pub(super) entry: Entry,
    /// Rules whose form a reader may mistake, named ([`forms::analyse`]): for the loader to
    /// warn about.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for PolicyProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyProgram")
            .field("digest", &self.digest)
            .field("evaluator", &self.evaluator)
            .finish_non_exhaustive()
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
    pub(super) fn compile_for(
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
            Some(p) => PolicyVm::rvm(
                &self.compiled,
                p,
                &self.data,
                self.max_instructions,
                self.budget,
                &self.entry,
            ),
            None => PolicyVm::interpreter(&self.engine, self.budget),
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
