# apiguard's built-in API-security policy pack.
#
# Input: the document described in docs/policies.md (request, source, token, provider, resource).
# Outputs read by the filter: allow (only `true` allows), reasons (a set of reason codes),
# rate_limit_tier (a tier name from the rate_limit configuration).
#
# Every deny has a reason code; allow is true exactly when there is no reason to deny, so a rule
# that fails to evaluate (a missing claim, a wrong type) can only leave a reason out if it was
# written to add one: the checks below are phrased as "deny unless proven fine".
#
# Every setting in api_authz.data.json can be overridden through the plugin configuration's
# `policy.data` under `api_authz`, e.g. {"api_authz": {"admin_prefixes": ["/admin"]}}.
package api.authz

import rego.v1

# Settings come from `data.api_authz`. apiguard merges the operator's `policy.data.api_authz`
# over the defaults in `api_authz.data.json` once, when the configuration loads (evaluating an
# object merge on every request would cost more than the rest of the policy). To run this pack
# elsewhere, load that file as data.
config := data.api_authz

# --- facts about the request ------------------------------------------------------------------

# The path with a trailing slash: `p/` is a prefix of it exactly when the path is `p` or lies
# under `p` (segment-aware, so /api/v1/administrators is not under /api/v1/admin).
path_slash := concat("", [trim_right(input.request.path, "/"), "/"])

public_path if {
	some p in config.public_prefixes
	startswith(path_slash, concat("", [trim_right(p, "/"), "/"]))
}

admin_path if {
	some p in config.admin_prefixes
	startswith(path_slash, concat("", [trim_right(p, "/"), "/"]))
}

tenant_path if {
	some p in config.tenant_prefixes
	startswith(path_slash, concat("", [trim_right(p, "/"), "/"]))
}

claimed_roles contains r if {
	some r in input.token[config.roles_claim]
	is_string(r)
}

claimed_roles contains r if {
	r := input.token[config.roles_claim]
	is_string(r)
}

rank := max({i | some i, r in config.role_hierarchy; r in claimed_roles})

role := config.role_hierarchy[rank]

method_allowed if input.request.method in config.role_methods[role]

is_admin if role in config.admin_roles

tenant_matches if {
	t := input.resource.tenant_id
	is_string(t)
	t == input.token[config.tenant_claim]
}

# --- reasons to deny --------------------------------------------------------------------------

reasons contains "method_blocked" if input.request.method in config.blocked_methods

reasons contains "token_required" if {
	not input.token
	not public_path
}

reasons contains "no_role" if {
	input.token
	not role
}

reasons contains "method_not_allowed" if {
	input.token
	role
	not method_allowed
}

reasons contains "admin_only" if {
	admin_path
	not is_admin
}

reasons contains "tenant_unresolved" if {
	tenant_path
	not input.resource.tenant_id
}

reasons contains "tenant_mismatch" if {
	input.resource.tenant_id
	not tenant_matches
}

# --- outputs ----------------------------------------------------------------------------------

default allow := false

allow if count(reasons) == 0

rate_limit_tier := object.get(config.tiers, role, config.default_tier) if role

rate_limit_tier := config.default_tier if not role
