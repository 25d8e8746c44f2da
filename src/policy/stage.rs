//! The compiled `policy` section and its place in the request flow.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use regorus::Value as RegoValue;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::input::{self, InputBuilder, Template};
pub use super::input::{OperationFacts, PolicyRequest};
use super::pack::{PackRequest, Tenant, Token};
use super::{
    CompileError, Evaluator, PolicyDecision, PolicyProgram, PolicyVm, BUILTIN_NAME, BUILTIN_PACK,
};
use crate::config::{
    validate_policy, ConfigError, ConfigWarning, DecisionCacheConfig, PackEngine, PolicyConfig,
    PolicyMode, Problem,
};
use crate::identity::Claims;
use crate::reply::Reply;

#[derive(Debug, Clone)]
pub struct PolicyStage {
    pub program: PolicyProgram,
    pub shadow: Option<PolicyProgram>,
    input: InputBuilder,
    pub expose_reasons: bool,
    pub mode: PolicyMode,
    cache: Option<DecisionCacheConfig>,
    /// `policy.headers`: the only headers a decision may set.
    pub headers: Vec<String>,
}

/// The per-worker evaluators.
pub struct PolicyWorker {
    vm: PolicyVm,
    shadow: Option<PolicyVm>,
    cache: Option<DecisionCache>,
}

/// `policy.decision_cache`: decisions by the SHA-256 of the input document (as JSON, whose
/// object keys are sorted, so equal inputs give equal bytes). Only decided outcomes are kept
/// (never an error or a timeout), each until `ttl_s` or the token's `exp`, whichever is first.
/// The input holds only what the policy can read (see [`super::reads`]): a policy that reads
/// request headers sees Envoy's per-request `x-request-id`, so its inputs never repeat.
struct DecisionCache {
    lru: LruCache<[u8; 32], CachedDecision>,
    ttl_ms: i64,
}

struct CachedDecision {
    decision: PolicyDecision,
    shadow_allow: Option<bool>,
    until_ms: i64,
}

impl DecisionCache {
    fn key(doc: &RegoValue) -> Option<[u8; 32]> {
        let json = serde_json::to_vec(doc).ok()?;
        Some(Sha256::digest(json).into())
    }
}

/// What the stage concluded for one request.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    pub decision: PolicyDecision,
    /// The shadow policy's verdict, when one is configured.
    pub shadow_allow: Option<bool>,
    /// True when the request goes on although the policy denied it (dry run).
    pub dry_run_deny: bool,
    /// The decision came from `policy.decision_cache`.
    pub cached: bool,
}

impl PolicyStage {
    pub fn compile(
        cfg: &PolicyConfig,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<PolicyStage, ConfigError> {
        validate_policy(cfg)?;
        let builtin = BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())]);
        let (modules, at) = match &cfg.modules {
            Some(m) => (m, "policy.modules"),
            None => (&builtin, "policy (built-in pack)"),
        };
        let data = cfg.data.clone().unwrap_or_else(|| json!({}));
        let budget = Duration::from_millis(cfg.time_budget_ms);
        let compile = |modules: &BTreeMap<String, String>, at: &str, engine| {
            PolicyProgram::compile_pack_as(
                modules,
                &data,
                &cfg.entrypoint,
                budget,
                engine,
                cfg.rego_version,
            )
            .map_err(|e| {
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
        let (program, not_compiled) = compile(modules, at, cfg.pack_engine)?;
        warnings.extend(
            program
                .warnings
                .iter()
                .map(|why| ConfigWarning::PolicyRuleForm { why: why.clone() }),
        );
        if let Some(why) = not_compiled {
            warnings.push(ConfigWarning::PackNotCompiled {
                why: why.to_string(),
            });
        }
        if let Some(why) = &program.fallback_reason {
            if program.evaluator != Evaluator::Native {
                warnings.push(ConfigWarning::PolicyInterpreted { why: why.clone() });
            }
        }
        if program.evaluator == Evaluator::Native && cfg.decision_cache.is_some() {
            warnings.push(ConfigWarning::DecisionCacheUnused);
        }
        let shadow = cfg
            .shadow_modules
            .as_ref()
            .map(|m| compile(m, "policy.shadow_modules", PackEngine::Rego).map(|(p, _)| p))
            .transpose()?;
        if let Some(s) = &shadow {
            warnings.extend(s.warnings.iter().map(|why| ConfigWarning::PolicyRuleForm {
                why: format!("policy.shadow_modules: {why}"),
            }));
        }
        // What the enforced and the shadow policy read, together.
        let reads = shadow
            .as_ref()
            .map_or(program.reads, |s| program.reads.union(s.reads));
        Ok(PolicyStage {
            // The compiled pack decides faster than a lookup: no cache (warned above).
            cache: cfg
                .decision_cache
                .filter(|_| program.evaluator != Evaluator::Native),
            program,
            shadow,
            input: InputBuilder::new(
                cfg.resources.iter().map(|t| Template::parse(t)).collect(),
                reads,
            ),
            expose_reasons: cfg.expose_reasons,
            mode: cfg.mode,
            headers: cfg.headers.clone(),
        })
    }

    /// Whether the policy (or its shadow) can read `input.source`.
    pub fn reads_source(&self) -> bool {
        self.input.reads().source
    }

    pub fn worker(&self) -> PolicyWorker {
        PolicyWorker {
            vm: self.program.vm(),
            shadow: self.shadow.as_ref().map(PolicyProgram::vm),
            cache: self.cache.and_then(|c| {
                Some(DecisionCache {
                    lru: LruCache::new(NonZeroUsize::new(c.max_entries)?),
                    ttl_ms: i64::try_from(c.ttl_s).ok()?.saturating_mul(1000),
                })
            }),
        }
    }

    /// Evaluates the policy for a request at `now_ms` (Unix milliseconds). The outcome says
    /// whether the decision came from the decision cache.
    pub fn evaluate(
        &self,
        worker: &mut PolicyWorker,
        request: &PolicyRequest<'_>,
        identity: Option<(&str, &Claims)>,
        now_ms: i64,
    ) -> PolicyOutcome {
        let PolicyRequest { method, path, .. } = *request;
        if path.path.len() > input::MAX_PATH {
            return self.outcome(
                PolicyDecision::failed(super::PolicyFailure::Error),
                None,
                false,
            );
        }
        if let PolicyVm::Native(pack) = &worker.vm {
            let facts = PackRequest {
                method: Some(method),
                lower_path: Some(path.lower()),
                token: identity.map_or(Token::Absent, |(_, c)| Token::Present(Some(&c.map))),
                tenant: self
                    .input
                    .capture(&path.path, "tenant_id")
                    .map_or(Tenant::Absent, |t| Tenant::Present(Some(t))),
            };
            let decision = pack.decide(&facts);
            // A shadow policy is Rego: it reads the whole input document.
            let shadow_allow = worker.shadow.as_mut().map(|s| {
                let doc = self.input.build(request, identity);
                s.evaluate_value(doc).allow
            });
            return self.outcome(decision, shadow_allow, false);
        }
        let doc = self.input.build(request, identity);
        let key = worker.cache.as_ref().and_then(|_| DecisionCache::key(&doc));
        if let (Some(cache), Some(key)) = (worker.cache.as_mut(), key) {
            match cache.lru.get(&key) {
                Some(hit) if hit.until_ms > now_ms => {
                    return self.outcome(hit.decision.clone(), hit.shadow_allow, true);
                }
                Some(_) => {
                    cache.lru.pop(&key);
                }
                None => {}
            }
        }
        let shadow_allow = worker
            .shadow
            .as_mut()
            .map(|s| s.evaluate_value(doc.clone()).allow);
        let mut decision = worker.vm.evaluate_value(doc);
        // A header the configuration did not declare is not stripped from client requests, so
        // setting it would let a client forge it where the rule does not fire: fail closed.
        if decision
            .headers
            .iter()
            .any(|(name, _)| !self.headers.contains(name))
        {
            decision = PolicyDecision::failed(super::PolicyFailure::Error);
        }
        if let (Some(cache), Some(key), None) = (worker.cache.as_mut(), key, decision.failure) {
            // Never past the token's `exp` (seconds since the epoch, possibly fractional).
            let exp_ms = identity
                .and_then(|(_, c)| c.map.get("exp"))
                .and_then(serde_json::Value::as_f64)
                .map_or(i64::MAX, |e| (e * 1000.0) as i64);
            cache.lru.put(
                key,
                CachedDecision {
                    decision: decision.clone(),
                    shadow_allow,
                    until_ms: now_ms.saturating_add(cache.ttl_ms).min(exp_ms),
                },
            );
        }
        self.outcome(decision, shadow_allow, false)
    }

    fn outcome(
        &self,
        decision: PolicyDecision,
        shadow_allow: Option<bool>,
        cached: bool,
    ) -> PolicyOutcome {
        let dry_run_deny = !decision.allow && self.mode == PolicyMode::DryRun;
        PolicyOutcome {
            decision,
            shadow_allow,
            dry_run_deny,
            cached,
        }
    }

    /// The decision as published in filter state (`wasm.apiguard.decision`), for access logs:
    /// `{"decision":"allow"|"dry_run_deny"|"deny","policy":<first 16 hex of the digest>,
    /// "reasons":[…],"tier":…}`, serialised straight from borrowed fields.
    pub fn decision_record(&self, o: &PolicyOutcome) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Record<'a> {
            decision: &'a str,
            policy: &'a str,
            reasons: &'a [String],
            tier: Option<&'a str>,
        }
        let decision = if o.decision.allow {
            "allow"
        } else if o.dry_run_deny {
            "dry_run_deny"
        } else {
            "deny"
        };
        let record = Record {
            decision,
            policy: self.program.digest.get(..16).unwrap_or_default(),
            reasons: &o.decision.reasons,
            tier: o.decision.tier.as_deref(),
        };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// The 403 for a denied decision.
    pub fn reply(&self, d: &PolicyDecision) -> Reply {
        Reply::forbidden(self.expose_reasons.then_some(d.reasons.as_slice()))
    }
}
