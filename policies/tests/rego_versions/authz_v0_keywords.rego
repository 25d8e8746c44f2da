# A policy as many were written for OPA 0.x: Rego v0 with `future.keywords` imported one by
# one, `:=` defaults, and reasons written `reasons[reason] if { … }`. That form is a partial
# object (`reasons[reason] = true`) as OPA reads it, in Rego v1 and in its v0 mode, not a set:
# apiguard reads the object's keys as the reasons, and warns when the policy loads, naming
# each such rule. It loads alike with `policy.rego_version` v0 or v1, and OPA 1.x reads it
# unchanged (future.keywords imports are no-ops there).
package api.authz

import future.keywords.if
import future.keywords.in

default allow := false

role_methods := {
	"viewer": {"GET", "HEAD"},
	"editor": {"GET", "HEAD", "POST", "PUT", "PATCH"},
	"admin": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"},
}

admin_prefixes := ["/admin/", "/api/v1/admin/"]

path_slash := concat("", [input.request.lower_path, "/"])

# A helper written as an old-style partial set: `admin_path[p]` is true for each matching p.
admin_path[p] if {
	some p in admin_prefixes
	startswith(path_slash, p)
}

is_admin_path if {
	some p
	admin_path[p]
}

valid_tenant if not input.resource.tenant_id

valid_tenant if input.resource.tenant_id == input.token.tenant_id

method_allowed if {
	some r in input.token.roles
	input.request.method in role_methods[r]
}

is_admin if "admin" in input.token.roles

allow if {
	input.token.sub
	valid_tenant
	method_allowed
	not is_admin_path
}

allow if {
	input.token.sub
	valid_tenant
	is_admin_path
	is_admin
}

reasons[reason] if {
	not input.token.sub
	reason := "no_token"
}

reasons[reason] if {
	input.token.sub
	not valid_tenant
	reason := "tenant_id mismatch: cross-tenant access denied"
}

reasons[reason] if {
	input.token.sub
	not method_allowed
	not is_admin_path
	reason := sprintf("method %s not allowed", [input.request.method])
}

reasons[reason] if {
	input.token.sub
	is_admin_path
	not is_admin
	reason := "admin path needs the admin role"
}

rate_limit_tier := "premium" if {
	is_admin
} else := "standard" if {
	input.token.sub
} else := "anonymous"

headers[name] := value if {
	some name, value in {"x-tenant": input.token.tenant_id, "x-subject": input.token.sub}
	is_string(value)
}
