"""OPA's engine deciding policies as apiguard's policy stage reads them, for the Rego-version
differential test (tests/e2e/rego_versions.rs).

Reads one JSON document on stdin:
  {"policies": [{"name": str, "modules": {file: rego}, "package": "api.authz"}, ...],
   "inputs": [input, ...]}
and writes one JSON document on stdout:
  {"decisions": {name: [decision, ...]}, "errors": {name: "why it did not load"}}
with one decision per input: {"allow", "reasons", "rate_limit_tier", "rate_limit_cost",
"headers", "failure"}.

The engine is OPA v1.20.2 in-process (the `opa-golib-python-bindings` wheel that
bench/peers/opa/setup.sh installs), which reads modules as Rego v1 only: a Rego v0 module is
given to it as its v1 rewrite. Each input is one evaluation of an entry rule like the one
apiguard generates (every output, `reasons` only when `allow` is not true), and the outputs are
read by the rules docs/policies.md states for apiguard:

- allow: only boolean `true` allows; undefined is a failure (`policy_undefined`).
- reasons: a set or array (its strings), or an object whose members are all `true` (its keys:
  the `reasons[r] if` form); any other value is a failure (`policy_error`). No reason on a
  denial gives `["denied"]`. Sorted.
- rate_limit_tier: a string; rate_limit_cost: an integer 1..=1_000_000; headers: an object of
  strings. Any other value is a failure.
A failure denies with its code as the only reason, and no tier, cost or headers.
"""

import json
import sys

from opa_bindings import OpaEngine

UNDEFINED = "apiguard:undefined"
OUTPUTS = ["allow", "reasons", "rate_limit_tier", "rate_limit_cost", "headers"]
MAX_COST = 1_000_000


def entry(package):
    lines = ["package apiguard_entry", "import rego.v1"]
    for out in OUTPUTS:
        only_on_deny = f" if not data.{package}.allow == true" if out == "reasons" else ""
        lines.append(f'default o_{out} := "{UNDEFINED}"')
        lines.append(f"o_{out} := data.{package}.{out}{only_on_deny}")
    members = ", ".join(f'"{o}": o_{o}' for o in OUTPUTS)
    lines.append(f"decision := {{{members}}}")
    return "\n".join(lines) + "\n"


def failed(code):
    return {"allow": False, "reasons": [code], "rate_limit_tier": None,
            "rate_limit_cost": None, "headers": {}, "failure": code}


def read(d):
    out = {k: (None if d.get(k) == UNDEFINED else d.get(k)) for k in OUTPUTS}
    if out["allow"] is None:
        return failed("policy_undefined")
    decision = {"allow": out["allow"] is True, "reasons": [], "rate_limit_tier": None,
                "rate_limit_cost": None, "headers": {}, "failure": None}
    reasons = out["reasons"]
    if isinstance(reasons, list):
        decision["reasons"] = [r for r in reasons if isinstance(r, str)]
    elif isinstance(reasons, dict):
        if not all(v is True for v in reasons.values()):
            return failed("policy_error")
        decision["reasons"] = list(reasons)
    elif reasons is not None:
        return failed("policy_error")
    tier = out["rate_limit_tier"]
    if tier is not None:
        if not isinstance(tier, str):
            return failed("policy_error")
        decision["rate_limit_tier"] = tier
    cost = out["rate_limit_cost"]
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost != int(cost) \
                or not 1 <= cost <= MAX_COST:
            return failed("policy_error")
        decision["rate_limit_cost"] = int(cost)
    headers = out["headers"]
    if headers is not None:
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return failed("policy_error")
        decision["headers"] = headers
    if not decision["allow"] and not decision["reasons"]:
        decision["reasons"] = ["denied"]
    decision["reasons"].sort()
    return decision


def main():
    job = json.load(sys.stdin)
    decisions, errors = {}, {}
    for policy in job["policies"]:
        engine = OpaEngine()
        try:
            for name, source in policy["modules"].items():
                engine.add_policy(name, source)
            engine.add_policy("apiguard_entry.rego", entry(policy["package"]))
            engine.add_data(policy.get("data", {}))
        except Exception as e:  # reported per policy; the test fails on it
            errors[policy["name"]] = str(e)
            engine.close()
            continue
        out = []
        for doc in job["inputs"]:
            try:
                out.append(read(engine.eval_document("apiguard_entry.decision", doc)))
            except Exception:  # an evaluation error: apiguard denies with `policy_error`
                out.append(failed("policy_error"))
        decisions[policy["name"]] = out
        engine.close()
    json.dump({"decisions": decisions, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
