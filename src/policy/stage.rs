//! The compiled `policy` section and its place in the request flow.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::input::{self, Template};
use super::reads::InputReads;
use super::{CompileError, Decision, PolicyProgram, PolicyVm, BUILTIN_NAME, BUILTIN_PACK};
use crate::config::{ConfigError, ConfigWarning, PolicyConfig, PolicyMode, Problem};
use crate::flow::Headers;
use crate::jwt::stage::Claims;
use crate::path::NormalizedPath;
use crate::reply::Reply;

#[derive(Debug, Clone)]
pub struct PolicyStage {
    pub program: PolicyProgram,
    pub shadow: Option<PolicyProgram>,
    templates: Vec<Template>,
    pub expose_reasons: bool,
    pub mode: PolicyMode,
    /// What the enforced and the shadow policy read, together.
    reads: InputReads,
}

/// The per-worker evaluators.
pub struct PolicyWorker {
    vm: PolicyVm,
    shadow: Option<PolicyVm>,
}

/// What the stage concluded for one request.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    pub decision: Decision,
    /// The shadow policy's verdict, when one is configured.
    pub shadow_allow: Option<bool>,
    /// True when the request goes on although the policy denied it (dry run).
    pub dry_run_deny: bool,
}

impl PolicyStage {
    pub fn compile(
        cfg: &PolicyConfig,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<PolicyStage, ConfigError> {
        let builtin = BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())]);
        let (modules, at) = match &cfg.modules {
            Some(m) => (m, "policy.modules"),
            None => (&builtin, "policy (built-in pack)"),
        };
        let data = cfg.data.clone().unwrap_or_else(|| json!({}));
        let budget = Duration::from_millis(cfg.time_budget_ms);
        let compile = |modules: &BTreeMap<String, String>, at: &str| {
            PolicyProgram::compile(modules, &data, &cfg.entrypoint, budget).map_err(|e| {
                let problem = match e {
                    CompileError::Rego(msg) => Problem::Rego(msg),
                    other => Problem::Rego(format!(" {other}")),
                };
                ConfigError::Invalid {
                    path: at.to_owned(),
                    problem,
                }
            })
        };
        let program = compile(modules, at)?;
        if let Some(why) = &program.fallback_reason {
            warnings.push(ConfigWarning::PolicyInterpreted { why: why.clone() });
        }
        let shadow = cfg
            .shadow_modules
            .as_ref()
            .map(|m| compile(m, "policy.shadow_modules"))
            .transpose()?;
        let reads = shadow
            .as_ref()
            .map_or(program.reads, |s| program.reads.union(s.reads));
        Ok(PolicyStage {
            reads,
            program,
            shadow,
            templates: cfg.resources.iter().map(|t| Template::parse(t)).collect(),
            expose_reasons: cfg.expose_reasons,
            mode: cfg.mode,
        })
    }

    pub fn worker(&self) -> PolicyWorker {
        PolicyWorker {
            vm: self.program.vm(),
            shadow: self.shadow.as_ref().map(PolicyProgram::vm),
        }
    }

    /// Evaluates the policy for a request.
    pub fn evaluate(
        &self,
        worker: &mut PolicyWorker,
        headers: &Headers<'_>,
        path: &NormalizedPath,
        source: Option<&str>,
        identity: Option<(&str, &Claims)>,
    ) -> PolicyOutcome {
        if path.path.len() > input::MAX_PATH {
            return PolicyOutcome {
                decision: Decision::failed(super::Failure::Error),
                shadow_allow: None,
                dry_run_deny: false,
            };
        }
        let doc = input::build(headers, path, source, identity, &self.templates, self.reads);
        let shadow_allow = worker
            .shadow
            .as_mut()
            .map(|s| s.evaluate_value(doc.clone()).allow);
        let decision = worker.vm.evaluate_value(doc);
        let dry_run_deny = !decision.allow && self.mode == PolicyMode::DryRun;
        PolicyOutcome {
            decision,
            shadow_allow,
            dry_run_deny,
        }
    }

    /// The 403 for a denied decision.
    pub fn reply(&self, d: &Decision) -> Reply {
        Reply::forbidden(self.expose_reasons.then_some(d.reasons.as_slice()))
    }
}
