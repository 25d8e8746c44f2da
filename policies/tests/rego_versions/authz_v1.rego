# authz_v0.rego in Rego v1, rewritten as `opa fmt --v0-v1` rewrites a v0 module: `if` before
# every body, `contains` for a partial set, nothing else. Both decide every case in
# cases_authz/ alike, and OPA's engine decides this one as apiguard decides either (the
# differential in tests/e2e/rego_versions.rs).
#
# Tenant isolation, a method set per role, admin path prefixes, reasons as a partial set with
# sprintf, an `else` chain for the tier, a cost from a function of the input, and upstream
# headers from partial-object rules.
package api.authz

import rego.v1

default allow = false

role_methods = {
	"viewer": {"GET", "HEAD"},
	"editor": {"GET", "HEAD", "POST", "PUT", "PATCH"},
	"admin": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"},
}

admin_prefixes = ["/admin/", "/api/v1/admin/"]

public_prefixes = ["/healthz/", "/api/v1/public/"]

# The lower-cased path with a trailing slash: prefix matches are segment-aware.
path_slash = concat("", [input.request.lower_path, "/"])

is_public if {
	startswith(path_slash, public_prefixes[_])
}

is_admin_path if {
	startswith(path_slash, admin_prefixes[_])
}

authenticated if {
	is_string(input.token.sub)
}

# Roles: a list claim, or one role as a string.
roles contains r if {
	r := input.token.roles[_]
	is_string(r)
}

roles contains r if {
	r := input.token.roles
	is_string(r)
}

sorted_roles = sort([r | roles[r]])

method_allowed if {
	some r
	roles[r]
	role_methods[r][input.request.method]
}

# Tenant isolation: a request on a tenant's resource needs a token of that tenant.
tenant_ok if {
	not input.resource.tenant_id
}

tenant_ok if {
	input.resource.tenant_id == input.token.tenant_id
}

allow if {
	is_public
}

allow if {
	authenticated
	tenant_ok
	not is_admin_path
	method_allowed
}

allow if {
	authenticated
	tenant_ok
	is_admin_path
	roles.admin
}

reasons contains msg if {
	not is_public
	not authenticated
	msg := "no_token"
}

reasons contains msg if {
	not is_public
	authenticated
	not tenant_ok
	msg := sprintf("tenant_mismatch: token tenant %s, resource tenant %s", [to_text(input.token.tenant_id), input.resource.tenant_id])
}

reasons contains msg if {
	not is_public
	authenticated
	not is_admin_path
	not method_allowed
	msg := sprintf("method_not_allowed: %s for roles [%s]", [input.request.method, concat(",", sorted_roles)])
}

reasons contains msg if {
	not is_public
	authenticated
	is_admin_path
	not roles.admin
	msg := sprintf("admin_only: %s", [input.request.lower_path])
}

to_text(x) = x if {
	is_string(x)
}

to_text(x) = "none" if {
	not is_string(x)
}

rate_limit_tier = "internal" if {
	roles.admin
	input.provider == "internal"
} else = "premium" if {
	roles.admin
} else = "standard" if {
	authenticated
} else = "anonymous" if {
	true
}

rate_limit_cost = cost(input.request.method)

cost(m) = 5 if {
	m == "POST"
}

cost(m) = 10 if {
	m == "DELETE"
}

cost(m) = 1 if {
	not m == "POST"
	not m == "DELETE"
}

headers["x-tenant"] = t if {
	t := input.token.tenant_id
	is_string(t)
}

headers["x-roles"] = concat(",", sorted_roles) if {
	count(sorted_roles) > 0
}
