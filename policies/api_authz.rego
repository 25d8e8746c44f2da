# apiguard's built-in API-security policy pack.
#
# Input: the document described in docs/policies.md (request, source, token, provider, resource).
# Outputs read by the filter: allow (only `true` allows), reasons (a set of reason codes),
# rate_limit_tier (a tier name from the rate_limit configuration).
#
# Every deny has a reason code, and allow is true exactly when there is no reason to deny. The
# two are written separately for speed: `allow` is a short positive proof that every check
# passes (evaluated on every request), `reasons` spells out each failed check (apiguard reads it
# only for denied requests). A test evaluates both on every case in policies/tests/ and
# requires `allow == (count(reasons) == 0)`. Both are phrased as "deny unless proven fine": a
# rule that fails to evaluate (a missing claim, a wrong type) leaves `allow` false.
#
# Every setting in api_authz.data.json can be overridden through the plugin configuration's
# `policy.data` under `api_authz`, e.g. {"api_authz": {"admin_prefixes": ["/admin"]}}.
package api.authz

import rego.v1

# Settings come from `data.api_authz`. apiguard merges the operator's `policy.data.api_authz`
# over the defaults in `api_authz.data.json` once, when the configuration loads (evaluating an
# object merge on every request would cost more than the rest of the policy), and ends every
# prefix in `*_prefixes` with exactly one `/`. To run this pack elsewhere, load that file as
# data, with prefixes written that way.
config := data.api_authz

# --- facts about the request ------------------------------------------------------------------

# The lower-cased path with a trailing slash: a prefix `p/` matches it exactly when the path is
# `p` or lies under `p` (segment-aware, so /api/v1/administrators is not under /api/v1/admin/),
# in any letter case (many frameworks route /API/V1/ADMIN like /api/v1/admin). apiguard gives
# `input.request.lower_path` and lower-cases the configured prefixes.
path_slash := concat("", [trim_right(input.request.lower_path, "/"), "/"])

public_path if strings.any_prefix_match(path_slash, config.public_prefixes)

admin_path if strings.any_prefix_match(path_slash, config.admin_prefixes)

tenant_path if strings.any_prefix_match(path_slash, config.tenant_prefixes)

# The roles claim, as a list (a single role may come as a plain string).
claimed_roles := r if {
	r := input.token[config.roles_claim]
	is_array(r)
}

claimed_roles := [r] if {
	r := input.token[config.roles_claim]
	is_string(r)
}

# The highest claimed role in the hierarchy; undefined when no claimed role is in it.
role := config.role_hierarchy[max([i | some i, r in config.role_hierarchy; r in claimed_roles])]

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

# --- the decision ------------------------------------------------------------------------------

default allow := false

# A token whose highest role may use this method...
allow if {
	input.token
	method_allowed
	passes_common_checks
}

# ...or no token, on a public path.
allow if {
	not input.token
	public_path
	passes_common_checks
}

passes_common_checks if {
	not input.request.method in config.blocked_methods
	admin_ok
	tenant_ok
}

admin_ok if not admin_path

admin_ok if is_admin

# The resource's tenant is the caller's, or the path names no tenant at all.
tenant_ok if tenant_matches

tenant_ok if {
	not input.resource.tenant_id
	not tenant_path
}

# --- other outputs ------------------------------------------------------------------------------

rate_limit_tier := object.get(config.tiers, role, config.default_tier) if role

rate_limit_tier := config.default_tier if not role
