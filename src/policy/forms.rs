//! The forms of the rules that define the filter's outputs, read from regorus's syntax tree when
//! the policy loads.
//!
//! Rego spells one document many ways: `allow := …` and `allow if …` (complete rules),
//! `reasons contains r if …` and, in Rego v0, `reasons[r] { … }` (partial sets),
//! `headers[k] := v if …` and `headers["x-tenant"] := t if …` (partial objects, the second a
//! rule with a reference head), `default …`, `else` chains. The filter reads each output as
//! one value of one type, so each form is either read as OPA evaluates it or refused here,
//! with the rule named — never left out of the decision without a word:
//!
//! | output | read | refused |
//! | --- | --- | --- |
//! | `allow` | complete rules, `default` | partial sets and objects, functions |
//! | `reasons` | complete rules, partial sets, `reasons[r] if` (an object `{r: true}`: its keys) | partial objects with other values, functions |
//! | `rate_limit_tier`, `rate_limit_cost` | complete rules, `default` | partial sets and objects, functions |
//! | `headers` | complete rules, partial objects with values | `headers[k] if` (values `true`), partial sets, functions |
//!
//! `p[x] if …` without a value is a partial object `p[x] = true` in OPA 1.x, in OPA's Rego v0
//! mode and in regorus alike (OPA 1.x's parser gives it that meaning in both versions), not a
//! partial set; a policy written for OPA 0.x with `future.keywords` (not `rego.v1`) may well
//! mean a set by it, as `p[x] { … }` is one. Such rules get a warning naming them
//! ([`analyse`]).

use regorus::unstable::{Expr, Module, NodeRef, Rule, RuleHead};
use regorus::Value as RegoValue;

/// How a rule defines an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `default out := value`.
    Default,
    /// `out := value if …`, `out if …`, `else` chains: one value.
    Complete,
    /// `out contains x if …`, Rego v0 `out[x] { … }`.
    PartialSet,
    /// `out[k] := v if …`, `out.k := v`, `out["k"] := v`: members of an object. `true_valued`
    /// when the rule gives no value (`out[k] if …`): the member is `true`.
    PartialObject { true_valued: bool },
    /// `out(x) := …`: a function, not a document.
    Function,
}

impl Form {
    fn describe(self) -> &'static str {
        match self {
            Form::Default => "a default",
            Form::Complete => "a complete rule",
            Form::PartialSet => "a partial set",
            Form::PartialObject { true_valued: true } => {
                "a partial object whose members are `true` (`p[x] if …` without a value)"
            }
            Form::PartialObject { true_valued: false } => "a partial object",
            Form::Function => "a function",
        }
    }
}

/// One rule that defines an output of the entrypoint package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRule {
    pub output: &'static str,
    pub form: Form,
    /// `file:line`.
    pub at: String,
    /// The rule's head as written.
    pub head: String,
}

/// What the rules of a policy say about its outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub rules: Vec<OutputRule>,
    /// Rules whose meaning a reader of older policies may mistake (see the module docs).
    pub warnings: Vec<String>,
    /// Rules of forms regorus 0.14's VM evaluates wrongly where its interpreter and OPA agree,
    /// as `file:line: head (what)`; a policy with any runs on the interpreter. Each is held by
    /// a test (forms_tests.rs, and the OPA differential in tests/e2e/rego_versions.rs):
    /// - a name below the rule's own in its head (`roles.admin := …`,
    ///   `headers["x-tenant"] := …`, `p.q[x] := …`): the object such rules build, read whole,
    ///   comes out undefined, empty, or one member's value;
    /// - an `else` chain: when a body before an `else` iterates (`some r in …`, `xs[_]`) and
    ///   fails, the `else` is not taken and the rule is undefined;
    /// - a default function (`default f(_) := false`): the function is undefined where no
    ///   other rule of it holds.
    pub vm_unsafe: Vec<String>,
    /// Rules of Rego v0 forms regorus 0.14 evaluates otherwise than OPA on either evaluator,
    /// as errors naming them: such a policy is refused (forms_tests.rs, and the differential):
    /// - `p = v { … } { … }`: regorus gives the bodies after the first the value `true`, not
    ///   `v`;
    /// - `p.q { … }` (OPA: `p contains "q"`): regorus builds no such set.
    pub unsupported: Vec<String>,
}

impl Analysis {
    /// Whether any rule defines `output`.
    pub fn defines(&self, output: &str) -> bool {
        self.rules.iter().any(|r| r.output == output)
    }

    /// The first rule of a form the filter cannot read, as an error naming it.
    pub fn unreadable(&self) -> Option<String> {
        self.rules.iter().find_map(|r| {
            let fix = match (r.output, r.form) {
                (_, Form::Default | Form::Complete) => return None,
                (_, Form::Function) => "it must be a document, not a function",
                ("reasons", Form::PartialSet | Form::PartialObject { true_valued: true }) => {
                    return None
                }
                ("reasons", _) => {
                    "reasons must be a set of strings: write `reasons contains msg if …`"
                }
                ("headers", Form::PartialObject { true_valued: false }) => return None,
                ("headers", _) => {
                    "headers must be an object of header name to value: write `headers[name] := value if …`"
                }
                ("allow", _) => "allow must be a boolean: write `allow if …`",
                ("rate_limit_tier", _) => {
                    "rate_limit_tier must be a string: write `rate_limit_tier := name if …`"
                }
                _ => "rate_limit_cost must be a number: write `rate_limit_cost := n if …`",
            };
            Some(format!(
                "{}: rule `{}` defines `{}` as {}, which apiguard cannot read: {fix}",
                r.at,
                r.head,
                r.output,
                r.form.describe()
            ))
        })
    }
}

/// One component of a rule's path: a name, or a key known only when the rule is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Name(String),
    Dynamic,
}

/// The path a reference names (`a.b["c"][x]` → `a`, `b`, `c`, dynamic), or `None` for an
/// expression that is not a reference.
fn path(e: &Expr) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut at = e;
    // Bounded by the reference's own depth (regorus bounds the parser's nesting).
    loop {
        match at {
            Expr::Var { value, .. } => {
                parts.push(Part::Name(text(value)?));
                break;
            }
            Expr::RefDot { refr, field, .. } => {
                parts.push(Part::Name(text(&field.1)?));
                at = refr.as_ref();
            }
            Expr::RefBrack { refr, index, .. } => {
                parts.push(match index.as_ref() {
                    Expr::String { value, .. } | Expr::RawString { value, .. } => {
                        Part::Name(text(value)?)
                    }
                    _ => Part::Dynamic,
                });
                at = refr.as_ref();
            }
            _ => return None,
        }
    }
    parts.reverse();
    Some(parts)
}

fn text(v: &RegoValue) -> Option<String> {
    match v {
        RegoValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Whether a module was written for OPA before 1.0 with keywords imported one by one: it
/// imports `future.keywords…` and not `rego.v1`.
fn imports_future_keywords_only(m: &Module) -> bool {
    let names: Vec<Vec<Part>> = m.imports.iter().filter_map(|i| path(&i.refr)).collect();
    let is = |p: &Vec<Part>, first: &str, second: &str| matches!((p.first(), p.get(1)), (Some(Part::Name(a)), Some(Part::Name(b))) if a == first && b == second);
    names.iter().any(|p| is(p, "future", "keywords")) && !names.iter().any(|p| is(p, "rego", "v1"))
}

/// Reads the rules of `modules` that define the outputs of `package` (`data.api.authz`).
pub fn analyse(modules: &[NodeRef<Module>], package: &str, outputs: &[&'static str]) -> Analysis {
    let package: Vec<Part> = package
        .split('.')
        .skip(1)
        .map(|s| Part::Name(s.to_owned()))
        .collect();
    let mut out = Analysis::default();
    for m in modules {
        let Some(pkg) = path(&m.package.refr) else {
            continue;
        };
        let v0_era = imports_future_keywords_only(m);
        for rule in &m.policy {
            // The rule's path and its form.
            let (span, head_path, form) = match rule.as_ref() {
                Rule::Default { span, refr, .. } => (span, path(refr), Form::Default),
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, assign, span } => {
                        let p = path(refr);
                        let form = match p.as_ref().and_then(|p| p.last()) {
                            Some(Part::Dynamic) => Form::PartialObject {
                                true_valued: assign.is_none(),
                            },
                            _ => Form::Complete,
                        };
                        (span, p, form)
                    }
                    RuleHead::Set { refr, key, span } => {
                        // Rego v0's `p.q { … }` is `p contains "q"`; regorus keeps the
                        // reference whole and no key.
                        let p = path(refr).map(|mut p| {
                            if key.is_none() {
                                p.pop();
                            }
                            p
                        });
                        (span, p, Form::PartialSet)
                    }
                    RuleHead::Func { refr, span, .. } => (span, path(refr), Form::Function),
                },
            };
            let Some(head_path) = head_path else {
                continue;
            };
            let valued = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { assign, .. },
                    ..
                } => assign.is_some(),
                _ => true,
            };
            let at = format!("{}:{}", span.source.get_path(), span.line);
            // The head as written: the rule's first line up to its body (regorus's head spans
            // end before a string's closing quote).
            let line = rule
                .as_ref()
                .span()
                .text()
                .lines()
                .next()
                .unwrap_or_default()
                .trim();
            let line = [" if ", " {"]
                .iter()
                .filter_map(|cut| line.find(cut))
                .min()
                .map_or(line, |at| &line[..at]);
            let line = line.strip_suffix(" if").unwrap_or(line);
            let head_text = line.to_owned();
            let unsupported = match rule.as_ref() {
                Rule::Spec {
                    head:
                        RuleHead::Compr {
                            assign: Some(_), ..
                        }
                        | RuleHead::Func {
                            assign: Some(_), ..
                        },
                    bodies,
                    ..
                } if bodies.iter().skip(1).any(|b| !b.is_else) => Some(
                    "Rego v0 bodies after the first (`p = v { … } { … }`) that regorus evaluates to `true`, not the rule's value: write one rule per body",
                ),
                Rule::Spec {
                    head: RuleHead::Set { key: None, .. },
                    ..
                } => Some(
                    "a Rego v0 set member by name (`p.q { … }`, OPA's `p contains \"q\"`) that regorus does not build: write `p contains \"q\" if …` or `p[\"q\"] { … }`",
                ),
                _ => None,
            };
            if let Some(what) = unsupported {
                out.unsupported
                    .push(format!("{at}: rule `{head_text}` is {what}"));
            }
            let unsafe_form = match rule.as_ref() {
                _ if head_path.iter().skip(1).any(|p| matches!(p, Part::Name(_))) => {
                    Some("a name in the head")
                }
                Rule::Spec { bodies, .. } if bodies.iter().any(|b| b.is_else) => {
                    Some("an `else` chain")
                }
                Rule::Default { args, .. } if !args.is_empty() => Some("a default function"),
                _ => None,
            };
            if let Some(what) = unsafe_form {
                out.vm_unsafe.push(format!("{at}: {head_text} ({what})"));
            }
            if v0_era
                && matches!(form, Form::PartialObject { true_valued: true })
                && head_path.len() == 2
            {
                let name = match head_path.first() {
                    Some(Part::Name(n)) => n.as_str(),
                    _ => "p",
                };
                out.warnings.push(format!(
                    "{at}: `{head_text}` defines `{name}` as an object whose members are `true` (as OPA reads `p[x] if`, in Rego v1 and in its v0 mode), not a partial set; write `{name} contains … if` for a set"
                ));
            }
            // The rule's full path below `data`; a partial object's is that of the object.
            let mut full = pkg.clone();
            full.extend(head_path);
            if matches!(form, Form::PartialObject { .. }) {
                full.pop();
            }
            for output in outputs {
                let mut target = package.clone();
                target.push(Part::Name((*output).to_owned()));
                let form = if full == target {
                    form
                } else if full.len() > target.len() && full[..target.len()] == target[..] {
                    // A rule below the output (`headers["x-tenant"] := t`, `headers.x := t`):
                    // the output is an object of such members.
                    match form {
                        Form::Complete | Form::Default => Form::PartialObject {
                            true_valued: !valued,
                        },
                        other => other,
                    }
                } else {
                    continue;
                };
                out.rules.push(OutputRule {
                    output,
                    form,
                    at: at.clone(),
                    head: head_text.clone(),
                });
            }
        }
    }
    out
}
