"""OPA's engine deciding apiguard's built-in pack, for the `peers` suite of `just bench` only.

Reads one JSON document on stdin:
  {"modules": {name: rego}, "data": {...}, "inputs": [input, ...], "decisions": N,
   "floor_module": rego}
and writes one JSON document on stdout:
  {"pack": {"cpu_us": x, "decisions": [...]}, "floor": {"cpu_us": y}}

The engine is OPA's Go `rego` package in-process, through the ctypes bindings of the
`opa-golib-python-bindings` wheel, 0.4.4, which embeds OPA v1.20.2 (bench/peers/opa/setup.sh
installs it). Each decision is one evaluation of a prepared query with the input as JSON, as
apiguard's stage evaluates the pack with its input document: the same entry rule apiguard generates (allow, reasons only on a
denial, rate_limit_tier) over the same modules and data. `cpu_us` is this process's CPU time
(every thread: Go's collector included) per decision over N decisions cycling through the
inputs. `floor` is the same for `allow := true`: what the engine and this binding cost around
any policy, so `pack - floor` is the pack's own evaluation. The pack's engine is closed before
the floor is timed, so Go's collector no longer walks it.
"""

import json
import sys
import time

from opa_bindings import OpaEngine

ENTRY = """package apiguard_entry
import rego.v1
default o_allow := "__undefined__"
o_allow := data.api.authz.allow
default o_reasons := "__undefined__"
o_reasons := data.api.authz.reasons if not data.api.authz.allow == true
default o_rate_limit_tier := "__undefined__"
o_rate_limit_tier := data.api.authz.rate_limit_tier
decision := {"allow": o_allow, "reasons": o_reasons, "rate_limit_tier": o_rate_limit_tier}
"""


def engine_with(modules, data):
    engine = OpaEngine()
    for name, source in modules.items():
        engine.add_policy(name, source)
    engine.add_data(data)
    return engine


def per_decision(engine, path, inputs, n):
    # One untimed pass prepares and caches the query.
    for doc in inputs:
        engine.eval_document(path, doc)
    start = time.process_time()
    for i in range(n):
        engine.eval_document(path, inputs[i % len(inputs)])
    return (time.process_time() - start) * 1e6 / n


def main():
    job = json.load(sys.stdin)
    inputs, n = job["inputs"], job["decisions"]
    pack = engine_with({**job["modules"], "apiguard_entry.rego": ENTRY}, job["data"])
    decisions = []
    for doc in inputs:
        d = pack.eval_document("apiguard_entry.decision", doc)
        reasons = d["reasons"]
        decisions.append({
            "allow": d["allow"] is True,
            "reasons": sorted(reasons) if isinstance(reasons, list) else [],
            "rate_limit_tier": d["rate_limit_tier"] if isinstance(d["rate_limit_tier"], str) else None,
        })
    pack_us = per_decision(pack, "apiguard_entry.decision", inputs, n)
    pack.close()
    floor = engine_with({"floor.rego": job["floor_module"]}, {})
    out = {
        "pack": {"cpu_us": pack_us, "decisions": decisions},
        "floor": {"cpu_us": per_decision(floor, "api.authz.allow", inputs, n)},
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
