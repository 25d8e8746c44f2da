# A Rego v0 API-authorization policy, written as for OPA before 1.0: no `if`, no `contains`, no
# `future.keywords`. apiguard loads it with `policy.rego_version: v0`. authz_v1.rego is the
# same policy in Rego v1: both decide every case in cases_authz/ alike, and OPA's engine decides
# them as apiguard does (the differential in tests/e2e/rego_versions.rs).
#
# Tenant isolation, a method set per role, admin path prefixes, reasons as a partial set with
# sprintf, an `else` chain for the tier, a cost from a function of the input, and upstream
# headers from partial-object rules.
package api.authz

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

is_public {
	startswith(path_slash, public_prefixes[_])
}

is_admin_path {
	startswith(path_slash, admin_prefixes[_])
}

authenticated {
	is_string(input.token.sub)
}

# Roles: a list claim, or one role as a string.
roles[r] {
	r := input.token.roles[_]
	is_string(r)
}

roles[r] {
	r := input.token.roles
	is_string(r)
}

sorted_roles = sort([r | roles[r]])

method_allowed {
	some r
	roles[r]
	role_methods[r][input.request.method]
}

# Tenant isolation: a request on a tenant's resource needs a token of that tenant.
tenant_ok {
	not input.resource.tenant_id
}

tenant_ok {
	input.resource.tenant_id == input.token.tenant_id
}

allow {
	is_public
}

allow {
	authenticated
	tenant_ok
	not is_admin_path
	method_allowed
}

allow {
	authenticated
	tenant_ok
	is_admin_path
	roles.admin
}

reasons[msg] {
	not is_public
	not authenticated
	msg := "no_token"
}

reasons[msg] {
	not is_public
	authenticated
	not tenant_ok
	msg := sprintf("tenant_mismatch: token tenant %s, resource tenant %s", [to_text(input.token.tenant_id), input.resource.tenant_id])
}

reasons[msg] {
	not is_public
	authenticated
	not is_admin_path
	not method_allowed
	msg := sprintf("method_not_allowed: %s for roles [%s]", [input.request.method, concat(",", sorted_roles)])
}

reasons[msg] {
	not is_public
	authenticated
	is_admin_path
	not roles.admin
	msg := sprintf("admin_only: %s", [input.request.lower_path])
}

to_text(x) = x {
	is_string(x)
}

to_text(x) = "none" {
	not is_string(x)
}

rate_limit_tier = "internal" {
	roles.admin
	input.provider == "internal"
} else = "premium" {
	roles.admin
} else = "standard" {
	authenticated
} else = "anonymous" {
	true
}

rate_limit_cost = cost(input.request.method)

cost(m) = 5 {
	m == "POST"
}

cost(m) = 10 {
	m == "DELETE"
}

cost(m) = 1 {
	not m == "POST"
	not m == "DELETE"
}

headers["x-tenant"] = t {
	t := input.token.tenant_id
	is_string(t)
}

headers["x-roles"] = concat(",", sorted_roles) {
	count(sorted_roles) > 0
}
