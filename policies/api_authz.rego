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
# Everything in `defaults` can be overridden through the plugin configuration's `policy.data`
# under `api_authz`, e.g. {"api_authz": {"admin_prefixes": ["/admin"]}}.
package api.authz

import rego.v1

defaults := {
	# Lowest to highest; a caller's rank is that of its highest known role.
	"role_hierarchy": ["viewer", "editor", "admin", "super_admin"],
	# Methods each role may use (cumulative up the hierarchy).
	"role_methods": {
		"viewer": ["GET", "HEAD"],
		"editor": ["GET", "HEAD", "POST", "PUT", "PATCH"],
		"admin": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
		"super_admin": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
	},
	# Paths only these roles may use at all.
	"admin_prefixes": ["/api/v1/admin", "/api/v1/users", "/api/v1/audit-logs"],
	"admin_roles": ["admin", "super_admin"],
	# Paths whose resources belong to a tenant: the resource's tenant must be resolved from the
	# path (a `resources` template) and equal the token's.
	"tenant_prefixes": ["/api/v1/tenants"],
	# Paths open to requests without a token (the JWT stage decides which paths need one; this
	# keeps anonymous requests out of everything else even if a JWT rule is too broad).
	"public_prefixes": ["/healthz"],
	# The claim holding the caller's roles (a string or an array of strings).
	"roles_claim": "roles",
	"tenant_claim": "tenant_id",
	"tiers": {"super_admin": "unlimited", "admin": "high"},
	"default_tier": "standard",
	# Methods no role may use.
	"blocked_methods": ["TRACE", "CONNECT"],
}

default overrides := {}

overrides := data.api_authz

config := object.union(defaults, overrides)

# --- facts about the request ------------------------------------------------------------------

under(path, prefix) if path == prefix

under(path, prefix) if startswith(path, concat("", [trim_right(prefix, "/"), "/"]))

public_path if {
	some p in config.public_prefixes
	under(input.request.path, p)
}

admin_path if {
	some p in config.admin_prefixes
	under(input.request.path, p)
}

tenant_path if {
	some p in config.tenant_prefixes
	under(input.request.path, p)
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
